"""Source discovery, safe decoding of odd images, duplicates and the paper's split."""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from risbench import dataset, files
from risbench.sources import demo_sources, find_folder

GOLDEN = Path(__file__).parent / "data" / "golden" / "images"


def test_demo_set_has_twenty_distinct_real_photos(tmp_path):
    sources = demo_sources()
    assert len(sources) >= 20
    ids = [s.image_id for s in sources]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    built = dataset.build(sources, tmp_path, progress=False)
    manifest = built.manifest
    assert len(manifest) == len(sources) and built.skipped.empty and built.duplicates.empty
    sizes = {(w, h) for w, h in zip(manifest.width, manifest.height, strict=True)}
    assert len(sizes) > 5  # real photos of assorted sizes, not one synthetic pattern
    assert set(manifest.source_mode) >= {"RGB", "L"}
    # no near-duplicates at the default distance: the closest two photos are far apart
    assert built.near_duplicates.empty
    first, second, distance = built.closest
    assert distance > 3 * dataset.DEFAULT_NEAR_DUPLICATE_DISTANCE, (first, second, distance)
    # the manifest records every source's checksum, size and mode
    row = manifest.set_index("image_id").loc["skimage_camera"]
    assert row.sha256 == files.sha256_file(row.source_path)
    assert row.file_size == Path(row.source_path).stat().st_size
    assert (row.width, row.height, row.source_mode) == (512, 512, "L")
    assert len(row.phash) == 16


def test_folder_sources_recursive_with_odd_names(tmp_path):
    (tmp_path / "sub dir").mkdir()
    for name in ("b.png", "sub dir/été 1.jpg", "a.png", "notes.txt", "a.jpg"):
        target = tmp_path / name
        Image.new("RGB", (4, 4), (10, 20, 30)).save(target) if name[
            -3:
        ] != "txt" else target.write_text("x")
    sources = find_folder(tmp_path).sources
    ids = [s.image_id for s in sources]
    assert ids == sorted(ids)
    assert len(ids) == 4 and "notes" not in ids
    assert "sub_dir__été_1" in ids  # letters of any script kept, spaces replaced
    assert len(set(ids)) == 4  # a.png and a.jpg get different ids
    flat = find_folder(tmp_path, recursive=False).sources
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
    sources = find_folder(source_dir).sources
    # A limit that only the smallest complete image meets: the others are "huge".
    sizes = [Image.open(s.path).size for s in sources if s.image_id != "cut"]
    limit = min(w * h for w, h in sizes)
    built = dataset.build(sources, tmp_path / "out", max_pixels=limit, progress=False)
    manifest, skipped = built.manifest, built.skipped
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
    built = dataset.build(find_folder(source_dir).sources, tmp_path / "out", progress=False)
    assert built.manifest.image_id.tolist() == ["a", "c"]
    duplicates = built.duplicates
    assert len(duplicates) == 1 and duplicates.path.iloc[0].endswith("b.bmp")
    assert built.near_duplicates.empty  # an exact duplicate is not reported twice


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


def _near_duplicate_folder(folder: Path) -> Path:
    """coffee, a slightly brighter JPEG re-save of it, a half-size copy, and chelsea."""
    folder.mkdir()
    coffee = Image.open(GOLDEN / "skimage_coffee.png").convert("RGB")
    coffee.save(folder / "a_coffee.png")
    coffee.point(lambda v: min(255, v + 3)).save(folder / "b_coffee.jpg", quality=80)
    coffee.resize((coffee.width // 2, coffee.height // 2)).save(folder / "c_coffee_small.png")
    Image.open(GOLDEN / "skimage_chelsea.png").save(folder / "d_chelsea.png")
    return folder


def test_near_duplicates_reported_and_dropped_on_request(tmp_path):
    sources = find_folder(_near_duplicate_folder(tmp_path / "src")).sources
    built = dataset.build(sources, tmp_path / "kept", progress=False)
    near = built.near_duplicates
    named = {
        (Path(a).stem, Path(b).stem): d
        for a, b, d in zip(near.path, near.near_duplicate_of, near.distance, strict=True)
    }
    assert set(named) == {
        ("b_coffee", "a_coffee"),
        ("c_coffee_small", "a_coffee"),
        ("c_coffee_small", "b_coffee"),
    }
    assert all(0 <= d <= dataset.DEFAULT_NEAR_DUPLICATE_DISTANCE for d in named.values())
    assert not near.dropped.any() and len(built.manifest) == 4  # reported only, by default

    dropped = dataset.build(
        sources, tmp_path / "dropped", drop_near_duplicates=True, progress=False
    )
    assert dropped.manifest.image_id.tolist() == ["a_coffee", "d_chelsea"]  # later ones dropped
    assert dropped.near_duplicates.dropped.tolist() == [True, True, True]
    assert not (tmp_path / "dropped" / "b_coffee.png").exists()

    off = dataset.build(sources, tmp_path / "off", near_duplicate_distance=None, progress=False)
    assert off.near_duplicates.empty and len(off.manifest) == 4
    strict = dataset.build(sources, tmp_path / "zero", near_duplicate_distance=0, progress=False)
    assert len(strict.near_duplicates) <= len(near)


def test_near_duplicate_pairs_keep_the_first_of_a_chain():
    # 0 and 1 are 1 bit apart, 1 and 2 are 1 bit apart, 0 and 2 are 2 bits apart
    pairs, dropped = dataset.near_duplicate_pairs([0b000, 0b001, 0b011], 1, drop=True)
    assert pairs == [(1, 0, 1), (2, 1, 1)]
    assert dropped == {1}  # 2 is only near 1, which is dropped: 2 stays
    assert dataset.closest_pair([0b1111, 0b0000, 0b0111]) == (0, 2, 1)
    assert dataset.closest_pair([5]) is None


def test_sampled_bases_are_seeded_and_distractors_stay_first():
    ids = [f"im{i:03d}" for i in range(100)]
    first = dataset.split_roles(ids, bases=10, distractors=5)
    assert [ids[i] for i, r in enumerate(first) if r == "base"] == ids[5:15]

    sampled = dataset.split_roles(ids, bases=10, distractors=5, sample=True, seed=3)
    bases = [ids[i] for i, r in enumerate(sampled) if r == "base"]
    assert len(bases) == 10 and bases != ids[5:15]
    assert [ids[i] for i, r in enumerate(sampled) if r == "distractor"] == ids[:5]
    assert sampled == dataset.split_roles(ids, bases=10, distractors=5, sample=True, seed=3)
    assert sampled != dataset.split_roles(ids, bases=10, distractors=5, sample=True, seed=4)
    larger = dataset.split_roles(ids, bases=20, distractors=5, sample=True, seed=3)
    assert set(bases) <= {ids[i] for i, r in enumerate(larger) if r == "base"}
    # nothing to choose from: every image is a base, as without sampling
    assert dataset.split_roles(ids, None, 5, sample=True) == dataset.split_roles(ids, None, 5)
    assert dataset.split_roles(ids, 95, 5, sample=True) == dataset.split_roles(ids, 95, 5)


def test_build_samples_bases_and_writes_only_the_chosen(tmp_path):
    sources = find_folder(GOLDEN).sources
    built = dataset.build(
        sources, tmp_path, bases=4, distractors=2, sample=True, seed=1, progress=False
    )
    roles = built.manifest.set_index("image_id").role
    assert roles[roles == "distractor"].index.tolist() == [s.image_id for s in sources[:2]]
    assert (roles == "base").sum() == 4
    # every golden photo is usable; the 14 not chosen are counted (the log reports them)
    assert (built.files, built.usable, len(built.manifest)) == (len(sources), len(sources), 6)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(roles.index)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"source": "folder"}, "dataset.folder: required"),
        ({"source": "folder", "folder": "/no/such/folder"}, "/no/such/folder does not exist"),
        ({"source": "flickr"}, "dataset.source: 'flickr' is not one of"),
    ],
)
def test_find_sources_names_the_bad_key(spec, message):
    with pytest.raises(dataset.DatasetError, match=message):
        dataset.find_sources(spec)


def test_run_stage_writes_the_manifest_list_and_reports(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for name in ("skimage_coffee.png", "skimage_chelsea.png", "sklearn_china.png"):
        shutil.copy(GOLDEN / name, folder / name)
    (folder / "notes.txt").write_text("x")
    out = tmp_path / "out"
    reports = {name: out / f"{name}.csv" for name in dataset.REPORTS}
    built = dataset.run_stage(
        {"source": "folder", "folder": str(folder), "distractors": 1},
        images_dir=out / "original",
        manifest=out / "manifest.parquet",
        image_list=out / "original.parquet",
        reports=reports,
        reports_dir=tmp_path / "logs",
    )
    assert (built.files, built.usable) == (4, 3)
    listed = pd.read_parquet(out / "original.parquet")
    assert listed.image_id.tolist() == ["skimage_chelsea", "skimage_coffee", "sklearn_china"]
    assert listed.role.tolist() == ["distractor", "base", "base"]
    for name in dataset.REPORTS:  # the same table in both places
        assert (out / f"{name}.csv").read_text() == (tmp_path / "logs" / f"{name}.csv").read_text()
    assert pd.read_csv(out / "skipped.csv").path.tolist() == [str(folder / "notes.txt")]
