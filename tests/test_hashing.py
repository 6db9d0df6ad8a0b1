"""imagehash's family as descriptors: packing, hex output, Hamming distances."""

import subprocess
import sys
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from risbench import hashing

IMAGES = Path(__file__).parent / "data" / "golden" / "images"
PHOTOS = sorted(IMAGES.glob("*.png"))[:6]

IMAGEHASH = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
    "colorhash": lambda image: imagehash.colorhash(image, binbits=3),
}


@pytest.mark.parametrize("name", list(IMAGEHASH))
def test_packed_codes_print_like_imagehash(name):
    for path in PHOTOS:
        image = Image.open(path)
        code = hashing.get(name).function(image)
        assert len(code) == (hashing.get(name).bits + 7) // 8
        assert hashing.code_hex(name, code) == str(IMAGEHASH[name](image))


@pytest.mark.parametrize("name", list(IMAGEHASH))
def test_xor_popcount_of_packed_codes_is_imagehash_distance(name):
    codes = hashing.hash_files([name], [str(p) for p in PHOTOS], progress=False)[name]
    hashes = [IMAGEHASH[name](Image.open(p)) for p in PHOTOS]
    for i in range(len(PHOTOS)):
        for j in range(len(PHOTOS)):
            bits = int(np.unpackbits(codes[i] ^ codes[j]).sum())
            assert bits == hashes[i] - hashes[j]


def test_unknown_hash_lists_valid_ones():
    with pytest.raises(ValueError, match="valid hashes: dct, mh, rv, phash"):
        hashing.get("md5")


def test_hash_command_prints_code_and_file(tmp_path):
    odd = tmp_path / "a photo é.png"
    Image.open(PHOTOS[0]).save(odd)
    out = subprocess.run(
        [sys.executable, "-m", "risbench.cli", "hash", "dhash", str(odd), str(PHOTOS[1])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        f"{imagehash.dhash(Image.open(odd))}\t{odd}",
        f"{imagehash.dhash(Image.open(PHOTOS[1]))}\t{PHOTOS[1]}",
    ]


def test_hash_command_names_a_bad_file_and_goes_on(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    done = subprocess.run(
        [sys.executable, "-m", "risbench.cli", "hash", "ahash", str(bad), str(PHOTOS[0])],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert str(bad) in done.stderr
    assert done.stdout.endswith(f"\t{PHOTOS[0]}\n")


def test_the_hash_job_writes_every_hash_of_a_variant(tmp_path, caplog):
    """One job, every hash: each store holds exactly what hash_file gives for each
    file, records its variant, and the job counts the degenerate RV digests (a
    panorama far wider than 3x its height gets pHash's constant digest)."""
    import logging

    import pandas as pd

    from risbench import store

    thin = tmp_path / "panorama.png"
    Image.fromarray(np.arange(10 * 400, dtype=np.uint8).reshape(10, 400)).save(thin)
    paths = [str(p) for p in PHOTOS[:3]] + [str(thin)]
    listing = tmp_path / "blur.parquet"
    pd.DataFrame({"image_id": list("abcd"), "variant": "blur", "path": paths}).to_parquet(listing)
    outputs = {name: str(tmp_path / f"{name}.zarr") for name in ("dct", "rv", "colorhash")}
    with caplog.at_level(logging.INFO, logger="risbench"):
        hashing.hash_variant(listing, outputs)
    for name, path in outputs.items():
        matrix, attrs = store.read_store(path, descriptor=name, variant="blur", rows=4)
        expected = [np.frombuffer(hashing.hash_file(name, p), dtype=np.uint8) for p in paths]
        np.testing.assert_array_equal(matrix, np.stack(expected))
        assert attrs["kind"] == hashing.get(name).kind and attrs["dim"] == hashing.get(name).bits
    assert "rv: 1 of 4 digests degenerate" in caplog.text
    assert f"degenerate digest (matches no image): {thin}" in caplog.text


def test_pdq_is_the_pdqhash_packages_256_bits_packed():
    import pdqhash

    method = hashing.get("pdq")
    assert (method.kind, method.bits, method.width) == ("binary", 256, 32)
    codes = hashing.hash_files(["pdq"], [str(p) for p in PHOTOS[:3]], progress=False)["pdq"]
    expected = []
    for path in PHOTOS[:3]:
        bits, quality = pdqhash.compute(np.asarray(Image.open(path).convert("RGB")))
        assert 0 <= quality <= 100
        expected.append(np.asarray(bits))
    for row, bits in zip(codes, expected, strict=True):
        assert np.array_equal(np.unpackbits(row), bits)
    # Hamming distance of the packed codes = differing bits of pdqhash's vectors
    assert int(np.unpackbits(codes[0] ^ codes[1]).sum()) == int((expected[0] != expected[1]).sum())
    assert (expected[0] != expected[1]).sum() > 32  # different photos are far apart


def test_pdq_is_the_same_for_a_png_and_its_lossless_copies(tmp_path):
    image = Image.open(PHOTOS[1])
    copies = [tmp_path / "copy.png", tmp_path / "copy.bmp", tmp_path / "copy.tiff"]
    for copy in copies:
        image.save(copy)
    codes = hashing.hash_files(["pdq"], [str(PHOTOS[1]), *map(str, copies)], progress=False)
    assert all(np.array_equal(codes["pdq"][0], row) for row in codes["pdq"][1:])
