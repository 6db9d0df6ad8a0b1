"""Source discovery, safe decoding of odd images, duplicates and the paper's split."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from risbench import dataset

GOLDEN = Path(__file__).parent / "data" / "golden" / "images"


def test_demo_set_has_twenty_distinct_real_photos(tmp_path):
    sources = dataset.demo_sources()
    assert len(sources) >= 20
    ids = [s.image_id for s in sources]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    manifest, skipped, duplicates = dataset.build(sources, tmp_path, progress=False)
    assert len(manifest) == len(sources) and skipped.empty and duplicates.empty
    sizes = {(w, h) for w, h in zip(manifest.width, manifest.height, strict=True)}
    assert len(sizes) > 5  # real photos of assorted sizes, not one synthetic pattern
    assert set(manifest.source_mode) >= {"RGB", "L"}


def test_folder_sources_recursive_with_odd_names(tmp_path):
    (tmp_path / "sub dir").mkdir()
    for name in ("b.png", "sub dir/été 1.jpg", "a.png", "notes.txt", "a.jpg"):
        target = tmp_path / name
        Image.new("RGB", (4, 4), (10, 20, 30)).save(target) if name[-3:] != "txt" else target.write_text("x")
    sources = dataset.folder_sources(tmp_path)
    ids = [s.image_id for s in sources]
    assert ids == sorted(ids)
    assert len(ids) == 4 and "notes" not in ids
    assert "sub_dir__été_1" in ids  # letters of any script kept, spaces replaced
    assert len(set(ids)) == 4  # a.png and a.jpg get different ids
    flat = dataset.folder_sources(tmp_path, recursive=False)
    assert len(flat) == 3


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_odd_modes_convert_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (200, 100, 50, 255))
    got = np.asarray(dataset.load_rgb(_save(rgba, tmp_path / "a.png"), 10**6))
    assert got[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    assert got[0, 1].tolist() == [200, 100, 50]

    half = Image.new("LA", (1, 1), (0, 128))
    got = np.asarray(dataset.load_rgb(_save(half, tmp_path / "la.png"), 10**6))
    assert abs(int(got[0, 0, 0]) - 127) <= 1  # black at 50 % over white

    sixteen = Image.fromarray(np.array([[0, 65535, 32768]], dtype=np.uint16))
    got = np.asarray(dataset.load_rgb(_save(sixteen, tmp_path / "g16.png"), 10**6))
    assert got[0, :, 0].tolist() == [0, 255, 128]

    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in CMYK
    got = np.asarray(dataset.load_rgb(_save(cmyk, tmp_path / "c.jpg", quality=100), 10**6))
    assert got[0, 0, 0] > 240 and got[0, 0, 1] < 15 and got[0, 0, 2] < 15

    palette = Image.new("P", (1, 1))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((0, 0), 1)
    got = np.asarray(dataset.load_rgb(_save(palette, tmp_path / "p.gif"), 10**6))
    assert got[0, 0].tolist() == [10, 200, 30]


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = _save(image, tmp_path / "r.jpg", exif=exif, quality=100)
    got = dataset.load_rgb(path, 10**6)
    assert got.size == (2, 4)
    assert np.asarray(got)[0, 1].mean() > 200  # top-left moved to top-right


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (2, 2), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(dataset.load_rgb(path, 10**6))[0, 0, 0] > 200


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image\n", "not an image"),
    ],
)
def test_unusable_files_raise_bad_image(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(dataset.BadImage, match=reason):
        dataset.load_rgb(path, 10**6)


def test_truncated_and_huge_images_are_skipped_by_build(tmp_path):
    photo = GOLDEN / "skimage_chelsea.png"
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").save(buffer, format="JPEG")
    (source_dir / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    shutil.copy(photo, source_dir / "big.png")
    shutil.copy(GOLDEN / "skimage_coffee.png", source_dir / "coffee.png")
    shutil.copy(GOLDEN / "sklearn_china.png", source_dir / "china.png")
    sources = dataset.folder_sources(source_dir)
    # A limit that only the smallest complete image meets: the others are "huge".
    sizes = [Image.open(s.path).size for s in sources if s.image_id != "cut"]
    limit = min(w * h for w, h in sizes)
    manifest, skipped, _ = dataset.build(sources, tmp_path / "out", max_pixels=limit, progress=False)
    reasons = dict(zip(skipped.path.map(lambda p: Path(p).name), skipped.reason, strict=True))
    assert "cut.jpg" in reasons and "decode" in reasons["cut.jpg"]
    assert len(manifest) == 1
    assert all("exceeds the limit" in r for n, r in reasons.items() if n != "cut.jpg")


def test_exact_duplicates_dropped_even_across_formats(tmp_path):
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    photo = Image.open(GOLDEN / "skimage_coffee.png").convert("RGB")
    photo.save(source_dir / "a.png")
    photo.save(source_dir / "b.bmp")  # same pixels, other file
    Image.open(GOLDEN / "skimage_chelsea.png").save(source_dir / "c.png")
    manifest, _, duplicates = dataset.build(
        dataset.folder_sources(source_dir), tmp_path / "out", progress=False
    )
    assert manifest.image_id.tolist() == ["a", "c"]
    assert len(duplicates) == 1 and duplicates.path.iloc[0].endswith("b.bmp")


def test_split_roles_first_m_in_name_order_are_distractors():
    ids = ["d", "a", "c", "b", "e"]
    assert dataset.split_roles(ids, bases=None, distractors=2) == [
        "base",
        "distractor",
        "base",
        "distractor",
        "base",
    ]
    assert dataset.split_roles(ids, bases=2, distractors=1) == [
        None,
        "distractor",
        "base",
        "base",
        None,
    ]
    with pytest.raises(ValueError):
        dataset.split_roles(ids, bases=None, distractors=5)
