"""Bad and odd input files, through the command line: each works or is skipped, the run goes on.

The tests build their own zoo of files in a temporary folder, run
``python -m risbench.cli dataset`` on it (a folder spec, as the workflow's
dataset rule does), check every decoded image's pixels or its line in
``skipped.csv``, and then run ``python -m risbench.cli modify`` for every
default modification on the result (a 1x1 image included).
"""

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from risbench import dataset, files

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
DEFAULT_MODIFICATIONS = SCHEMA["properties"]["modifications"]["default"]
DATASET_DEFAULTS = {
    key: value["default"] for key, value in SCHEMA["properties"]["dataset"]["properties"].items()
}
# Low enough that a 600x500 image is over it, so both pixel limits can be seen in one run:
# dataset.max_pixels (between the limit and twice it) and Pillow's DecompressionBombError
# (beyond twice the limit).
MAX_PIXELS = 250_000


def png_bytes(width, height, bit_depth, color_type, rows, palette=None) -> bytes:
    """A PNG written chunk by chunk, streaming its rows through zlib (for huge images)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(b"\x00" + row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    if palette is not None:
        out += chunk(b"PLTE", palette)
    return out + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bomb_png(side: int) -> bytes:
    """side x side paletted 1-bit image of one colour: a few tens of KB for 400 Mpixels."""
    row = bytes((side + 7) // 8)
    return png_bytes(side, side, 1, 3, (row for _ in range(side)), palette=b"\x10\x20\x30" * 2)


def rgb48_png() -> bytes:
    """2x1 16-bit-per-channel RGB (Pillow reads 8 bits: the high byte of each sample)."""
    row = struct.pack(">6H", 0x1234, 0x80FF, 0xFFFF, 0x0000, 0x7F00, 0x0101)
    return png_bytes(2, 1, 16, 2, [row])


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def make_zoo(folder: Path) -> dict[str, str]:
    """Writes the zoo; returns file name (relative) -> image id for the ones that must work."""
    folder.mkdir()
    (folder / "sub dir").mkdir()
    rng = np.random.default_rng(0)

    def photo(w, h):  # distinct random pixels: no two zoo images are duplicates
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    # files that must be skipped
    (folder / "empty.jpg").write_bytes(b"")
    whole = jpeg_bytes(photo(64, 64), quality=90)
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    png = io.BytesIO()
    photo(32, 32).save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[:-40])
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "bomb.png").write_bytes(bomb_png(20000))
    Image.new("L", (600, 500), 77).save(folder / "large.png")  # 300,000 > MAX_PIXELS
    (folder / "folder.jpg").mkdir()  # a folder with an image's name: not a file, not listed

    # files that must work
    Image.new("RGB", (1, 1), (12, 34, 56)).save(folder / "one_pixel.png")
    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)
    gray16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    (folder / "rgb48.png").write_bytes(rgb48_png())
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 10, 200, 30, 250, 5, 5] + [0] * 759)
    palette.putdata([1, 2, 1, 0])
    palette.save(folder / "palette.gif")
    frames = [Image.new("RGB", (4, 4), c) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (200, 100, 50, 255))
    rgba.save(folder / "rgba.png")
    transparent = Image.new("P", (2, 1))
    transparent.putpalette([9, 9, 9, 40, 60, 80] + [0] * 762)
    transparent.putdata([0, 1])
    transparent.save(folder / "palette_transparent.png", transparency=0)
    Image.new("LA", (1, 2), (0, 128)).save(folder / "gray_alpha.png")
    Image.new("1", (3, 1), 1).save(folder / "bilevel.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = Image.new("RGB", (8, 4), (0, 0, 0))
    rotated.paste((255, 255, 255), (0, 0, 2, 2))
    rotated.save(folder / "exif_rotated.jpg", exif=exif, quality=100)
    photo(20, 10).save(folder / "été photo.jpg", quality=95)
    photo(10, 20).save(folder / "sub dir" / "日本 語.png")
    photo(12, 12).save(folder / "png_inside.jpg", format="PNG")
    photo(9, 7).save(folder / "UPPER.JPG", quality=95)
    photo(7, 9).save(folder / "lossless.webp", lossless=True)
    return {
        "one_pixel.png": "one_pixel",
        "cmyk.jpg": "cmyk",
        "gray16.png": "gray16",
        "rgb48.png": "rgb48",
        "palette.gif": "palette",
        "animated.gif": "animated",
        "rgba.png": "rgba",
        "palette_transparent.png": "palette_transparent",
        "gray_alpha.png": "gray_alpha",
        "bilevel.png": "bilevel",
        "exif_rotated.jpg": "exif_rotated",
        "été photo.jpg": "été_photo",
        "sub dir/日本 語.png": "sub_dir__日本_語",
        "png_inside.jpg": "png_inside",
        "UPPER.JPG": "UPPER",
        "lossless.webp": "lossless",
    }


SKIPPED = {
    "empty.jpg": "empty file",
    "truncated.jpg": "cannot decode",
    "truncated.png": "cannot decode",
    "text.jpg": "not an image Pillow can identify",
    "bomb.png": "decompression bomb (Pillow)",
    "large.png": "exceeds the limit of 250000 (dataset.max_pixels)",
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # the timeout turns a run blocked on a file (a FIFO opened for reading) into a failure
    return subprocess.run(
        [sys.executable, "-m", "risbench.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    """The zoo, and one `risbench dataset` run over it."""
    tmp = tmp_path_factory.mktemp("zoo")
    works = make_zoo(tmp / "zoo")
    out = tmp / "results"
    out.mkdir()
    done = run_dataset(tmp / "zoo", out, max_pixels=MAX_PIXELS)
    assert done.returncode == 0, done.stderr
    return tmp, works, out, done.stderr


def test_every_bad_file_is_skipped_with_its_reason(zoo_run):
    tmp, works, out, log = zoo_run
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = {
        Path(p).relative_to(tmp / "zoo").as_posix(): r
        for p, r in zip(skipped.path, skipped.reason, strict=True)
    }
    assert set(reasons) == set(SKIPPED)
    for name, reason in SKIPPED.items():
        assert reason in reasons[name], (name, reasons[name])
    assert "truncated" in reasons["truncated.jpg"]
    for name in SKIPPED:
        assert f"skipped {tmp / 'zoo' / name}" in log  # and the log says it too


def test_every_odd_file_works(zoo_run):
    tmp, works, out, _ = zoo_run
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("image_id")
    assert sorted(manifest.index) == sorted(works.values())
    assert (manifest.role == "base").all()
    for name, image_id in works.items():
        row = manifest.loc[image_id]
        assert Path(row.source_path) == tmp / "zoo" / name
        assert row.sha256 == files.sha256_file(tmp / "zoo" / name)
        written = Image.open(row.path)
        assert written.mode == "RGB" and written.size == (row.width, row.height)
    assert manifest.loc["cmyk", "source_mode"] == "CMYK"
    assert manifest.loc["gray16", "source_mode"].startswith("I;16")
    assert pd.read_csv(out / "duplicates.csv").empty
    listed = pd.read_parquet(out / "original.parquet")
    assert sorted(listed.image_id) == sorted(works.values())


def pixels(out: Path, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(out / "images" / "original" / f"{image_id}.png"))


def test_odd_modes_are_converted_correctly(zoo_run):
    _, _, out, _ = zoo_run
    assert pixels(out, "one_pixel").tolist() == [[[12, 34, 56]]]
    cmyk = pixels(out, "cmyk").reshape(-1, 3)  # CMYK (0, 255, 255, 0) is pure red
    assert (cmyk[:, 0] > 240).all() and (cmyk[:, 1:] < 15).all()
    assert pixels(out, "gray16")[0, :, 0].tolist() == [0, 100, 255]  # 16 bits scaled, not clipped
    assert (pixels(out, "gray16")[..., 0] == pixels(out, "gray16")[..., 2]).all()
    assert pixels(out, "rgb48").tolist() == [[[0x12, 0x80, 0xFF], [0x00, 0x7F, 0x01]]]
    assert pixels(out, "palette").tolist() == [
        [[10, 200, 30], [250, 5, 5]],
        [[10, 200, 30], [0, 0, 0]],
    ]
    animated = pixels(out, "animated")  # the first frame
    assert animated.shape == (4, 4, 3) and (animated[..., 0] > 240).all()
    assert (animated[..., 1:] < 15).all()
    assert pixels(out, "rgba").tolist() == [[[255, 255, 255], [200, 100, 50]]]  # onto white
    assert pixels(out, "palette_transparent").tolist() == [[[255, 255, 255], [40, 60, 80]]]
    gray_alpha = pixels(out, "gray_alpha")  # black at 50 % over white
    assert gray_alpha.shape == (2, 1, 3) and (abs(gray_alpha.astype(int) - 127) <= 1).all()
    assert pixels(out, "bilevel").tolist() == [[[255, 255, 255]] * 3]
    rotated = pixels(out, "exif_rotated")  # 8x4 shown as 4x8: top-left white corner -> top-right
    assert rotated.shape == (8, 4, 3)
    assert rotated[0, 3].mean() > 200 and rotated[0, 0].mean() < 50
    assert rotated[7, 3].mean() < 50
    assert pixels(out, "été_photo").shape == (10, 20, 3)
    assert pixels(out, "sub_dir__日本_語").shape == (20, 10, 3)
    assert pixels(out, "png_inside").shape == (12, 12, 3)
    assert pixels(out, "UPPER").shape == (7, 9, 3)
    assert pixels(out, "lossless").shape == (9, 7, 3)


def test_one_pixel_image_survives_every_default_modification(zoo_run):
    tmp, _, out, _ = zoo_run
    assert DEFAULT_MODIFICATIONS == ["blur", "gray", "resize", "jpeg", "rotate", "crop"]
    failures = {}
    for variant in DEFAULT_MODIFICATIONS:
        done = run_cli(
            "modify",
            "--variant",
            variant,
            "--originals",
            str(out / "original.parquet"),
            "--images-dir",
            str(out / "images" / variant),
            "--list",
            str(out / f"{variant}.parquet"),
        )
        if done.returncode != 0:
            failures[variant] = done.stderr[-2000:]
            continue
        listed = pd.read_parquet(out / f"{variant}.parquet").set_index("image_id")
        with Image.open(listed.loc["one_pixel", "path"]) as image:
            image.load()
            assert image.width >= 1 and image.height >= 1
    assert not failures, failures


def test_pixel_limits_default_to_pillows_and_both_refuse(tmp_path):
    assert DATASET_DEFAULTS["max_pixels"] == Image.MAX_IMAGE_PIXELS == dataset.DEFAULT_MAX_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(20000))
    assert bomb.stat().st_size < 100_000  # 400 Mpixels in a small file
    # Pillow's own DecompressionBombError (over twice its limit), at the default limit
    with pytest.raises(dataset.BadImage, match=r"decompression bomb \(Pillow\)"):
        dataset.decode(bomb)
    # over the configured limit but under twice it: risbench's own check, before decoding
    big = tmp_path / "big.png"
    big.write_bytes(bomb_png(10000))  # 100 Mpixels > 89,478,485
    with pytest.raises(dataset.BadImage, match="exceeds the limit of 89478485"):
        dataset.decode(big)
    # a raised limit lets the check pass the header (then refuses at the new limit)
    with pytest.raises(dataset.BadImage, match="exceeds the limit of 300000000"):
        dataset.decode(bomb, max_pixels=300_000_000)
    assert Image.MAX_IMAGE_PIXELS == dataset.DEFAULT_MAX_PIXELS  # Pillow's global restored


def test_a_run_with_only_bad_files_fails_clearly_but_writes_its_reports(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_text("not a png")
    spec = {**DATASET_DEFAULTS, "source": "folder", "folder": str(folder)}
    done = run_cli(
        "dataset",
        "--spec",
        json.dumps(spec),
        "--images-dir",
        str(tmp_path / "original"),
        "--manifest",
        str(tmp_path / "manifest.parquet"),
        "--list",
        str(tmp_path / "original.parquet"),
        "--skipped",
        str(tmp_path / "skipped.csv"),
        "--duplicates",
        str(tmp_path / "duplicates.csv"),
    )
    assert done.returncode != 0
    assert "0 usable images of 2 files (2 skipped, 0 exact duplicates" in done.stderr
    assert "a benchmark needs 2 or more base images" in done.stderr
    assert len(pd.read_csv(tmp_path / "skipped.csv")) == 2


def run_dataset(folder: Path, out: Path, *extra: str, **spec) -> subprocess.CompletedProcess:
    """`risbench dataset` on ``folder`` (a folder spec), its outputs and reports under ``out``."""
    spec = {**DATASET_DEFAULTS, "source": "folder", "folder": str(folder), **spec}
    return run_cli(
        "dataset",
        "--spec",
        json.dumps(spec),
        "--images-dir",
        str(out / "images" / "original"),
        "--manifest",
        str(out / "manifest.parquet"),
        "--list",
        str(out / "original.parquet"),
        "--skipped",
        str(out / "skipped.csv"),
        "--duplicates",
        str(out / "duplicates.csv"),
        "--near-duplicates",
        str(out / "near_duplicates.csv"),
        *extra,
    )


def distinct_photos(folder: Path, names: list[str]) -> None:
    """Random 16x12 PNGs (whatever the suffix says), no two alike."""
    rng = np.random.default_rng(len(names))
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, "PNG")


def test_a_name_that_is_not_utf8_is_kept_with_an_escaped_id(tmp_path):
    folder = tmp_path / "src"
    distinct_photos(folder, ["a.png", "b.png"])
    photo = folder / os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    Image.fromarray(np.full((5, 7, 3), 9, np.uint8)).save(photo, "PNG")
    broken = folder / os.fsdecode(b"bad\xff.jpg")
    broken.write_bytes(b"not an image")
    done = run_dataset(folder, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("image_id")
    # the undecodable byte is written as \xe9 in the paths, and \ as _ in the id
    assert sorted(manifest.index) == ["a", "b", "caf_xe9"]
    assert manifest.loc["caf_xe9", "source_path"] == str(folder) + "/caf\\xe9.png"
    written = np.asarray(Image.open(manifest.loc["caf_xe9", "path"]))
    assert written.shape == (5, 7, 3) and (written == 9).all()
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped.path.tolist() == [str(folder) + "/bad\\xff.jpg"]
    assert "not an image" in skipped.reason[0]


def test_ids_stay_inside_their_folder_and_are_unique_ignoring_case(tmp_path):
    folder = tmp_path / "src"
    distinct_photos(folder, ["..jpg", "A.jpg", "a.jpg", "-x.png", "b.PNG"])
    out = tmp_path / "out"
    done = run_dataset(folder, out)
    assert done.returncode == 0, done.stderr
    manifest = pd.read_parquet(out / "manifest.parquet")
    by_name = dict(
        zip(manifest.source_path.map(lambda p: Path(p).name), manifest.image_id, strict=True)
    )
    # leading dots and dashes become _, and the later of two ids equal but for case
    # (name order: "A" < "a") gets its suffix
    assert by_name == {"..jpg": "_", "A.jpg": "A", "a.jpg": "a_jpg", "-x.png": "_x", "b.PNG": "b"}
    assert sorted(p.name for p in (out / "images" / "original").iterdir()) == sorted(
        f"{i}.png" for i in by_name.values()
    )
    done = run_cli(
        "modify",
        "--variant",
        "blur",
        "--originals",
        str(out / "original.parquet"),
        "--images-dir",
        str(out / "images" / "blur"),
        "--list",
        str(out / "blur.parquet"),
    )
    assert done.returncode == 0, done.stderr
    blurred = pd.read_parquet(out / "blur.parquet")
    assert all(Path(p).parent == out / "images" / "blur" for p in blurred.path)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["blur", "original"]


def test_every_file_is_used_or_listed_with_its_reason(tmp_path):
    folder = tmp_path / "src"
    distinct_photos(folder, ["a.png", "b.png", "sub/c.png"])
    (folder / "linked.png").symlink_to(folder / "a.png")  # a link to an image: used
    (folder / "broken.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "fifo.jpg")  # opening it for reading would block the run
    (folder / "folder_link").symlink_to(folder / "sub")
    Image.new("RGB", (4, 4), (1, 2, 3)).save(folder / "photo.avif")
    (folder / "notes.txt").write_text("x")
    (folder / "README").write_text("x")
    out = tmp_path / "out"
    done = run_dataset(folder, out)
    assert done.returncode == 0, done.stderr
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert sorted(manifest.image_id) == ["a", "b", "sub__c"]
    duplicates = pd.read_csv(out / "duplicates.csv")  # the link's pixels are a.png's
    assert duplicates.values.tolist() == [[str(folder / "linked.png"), str(folder / "a.png")]]
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped.path.map(lambda p: Path(p).name), skipped.reason, strict=True))
    assert set(reasons) == {
        "broken.jpg",
        "loop.jpg",
        "fifo.jpg",
        "folder_link",
        "photo.avif",
        "notes.txt",
        "README",
    }
    assert "broken symbolic link" in reasons["broken.jpg"]
    assert "symbolic link loop" in reasons["loop.jpg"]
    assert "not a regular file (FIFO)" in reasons["fifo.jpg"]
    assert "link to a folder" in reasons["folder_link"]
    assert "'.avif' is not in dataset.extensions" in reasons["photo.avif"]
    assert "Pillow reads .avif" in reasons["photo.avif"]
    assert "'.txt' is not in dataset.extensions" in reasons["notes.txt"]
    assert "no suffix" in reasons["README"]
    for name in reasons:
        assert f"skipped {folder / name}" in done.stderr  # the log lists them too
    flat = run_dataset(folder, tmp_path / "flat", recursive=False)
    assert flat.returncode == 0, flat.stderr
    flat_reasons = pd.read_csv(tmp_path / "flat" / "skipped.csv").set_index("path").reason
    assert "a folder, not searched" in flat_reasons[str(folder / "sub")]


def test_the_reports_of_a_failed_run_are_kept_in_the_log_folder(tmp_path):
    folder = tmp_path / "src"
    distinct_photos(folder, ["only.png"])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("x")
    reports = tmp_path / "logs" / "dataset"
    done = run_dataset(folder, tmp_path / "out", "--reports-dir", str(reports))
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert "1 usable image of 3 files" in message and "2 or more" in message
    assert str(reports) in message  # it says where to look
    # Snakemake deletes the outputs of a failed job, never its logs: the copies there stay
    skipped = pd.read_csv(reports / "skipped.csv")
    assert sorted(Path(p).name for p in skipped.path) == ["empty.jpg", "notes.txt"]
    assert pd.read_csv(reports / "duplicates.csv").empty
    assert pd.read_csv(reports / "near_duplicates.csv").empty
    assert not (tmp_path / "out" / "manifest.parquet").exists()
