"""Perceptual hashes as descriptors: a registry of named hash functions.

Every hash maps a PIL image to bytes: bit-packed codes (8 bits a byte, first
bit in the most significant position, as imagehash prints them) compared by
Hamming distance, or, for ``rv``, pHash's 40-byte Radial Variance digest
compared by peak cross-correlation. The pHash-compatible ``dct``, ``mh`` and
``rv`` live in :mod:`risbench.phash`; imagehash's family goes through the
imagehash library itself, and Meta's PDQ (``pdq``, 256 bits) through the
``pdqhash`` package (its quality score, 0-100, is not kept: the benchmark
scores every image the same way).

The registry itself imports nothing heavy (the workflow reads it while it
parses); a hash's libraries are imported the first time it is computed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from risbench.jobtime import compute

log = logging.getLogger("risbench")


@dataclass(frozen=True)
class HashMethod:
    name: str
    kind: str  # "binary" (Hamming on packed bits) or "rv" (peak cross-correlation)
    bits: int  # meaningful bits (binary) or digest bytes x 8 (rv)
    library: str  # "phash" (risbench.phash), "imagehash" or "pdqhash"
    function_name: str  # the function of that library
    description: str
    options: tuple = ()  # keyword arguments of the imagehash function

    @property
    def width(self) -> int:
        """Bytes per code."""
        return (self.bits + 7) // 8

    @cached_property
    def function(self) -> Callable:
        """PIL image -> code bytes."""
        if self.library == "phash":
            from risbench import phash  # builds lookup tables on import

            return getattr(phash, self.function_name)
        if self.library == "pdqhash":
            return _pdq_code
        return _imagehash_code(self.function_name, dict(self.options))


def _imagehash_code(function_name: str, options: dict) -> Callable:
    import imagehash
    import numpy as np

    function = getattr(imagehash, function_name)

    def code(image) -> bytes:
        bits = np.asarray(function(image, **options).hash, dtype=bool).ravel()
        return np.packbits(bits).tobytes()

    return code


def _pdq_code(image) -> bytes:
    """PDQ's 256 bits in pdqhash's order, packed as the other codes (first bit
    in the most significant position); pdqhash wants an RGB uint8 array."""
    import numpy as np
    import pdqhash

    bits, _quality = pdqhash.compute(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes()


HASHES: dict[str, HashMethod] = {
    method.name: method
    for method in (
        HashMethod("dct", "binary", 64, "phash", "dct_hash", "pHash 0.9.6 DCT hash"),
        HashMethod("mh", "binary", 576, "phash", "mh_hash", "pHash 0.9.6 Marr-Hildreth hash"),
        HashMethod("rv", "rv", 320, "phash", "rv_digest", "pHash 0.9.6 Radial Variance digest"),
        HashMethod("phash", "binary", 64, "imagehash", "phash", "imagehash phash, 8x8"),
        HashMethod("dhash", "binary", 64, "imagehash", "dhash", "imagehash dhash, 8x8"),
        HashMethod("ahash", "binary", 64, "imagehash", "average_hash", "imagehash ahash"),
        HashMethod("whash", "binary", 64, "imagehash", "whash", "imagehash whash (haar)"),
        HashMethod(
            "colorhash",
            "binary",
            42,
            "imagehash",
            "colorhash",
            "imagehash colorhash, 3 bits per bin (14 bins)",
            (("binbits", 3),),
        ),
        HashMethod("pdq", "binary", 256, "pdqhash", "compute", "Meta PDQ (pdqhash package)"),
    )
}


def get(name: str) -> HashMethod:
    if name not in HASHES:
        raise ValueError(f"unknown hash '{name}'; valid hashes: {', '.join(HASHES)}")
    return HASHES[name]


def _open(path: str | Path):
    from PIL import Image

    image = Image.open(path)
    image.load()
    return image


def hash_file(name: str, path: str | Path) -> bytes:
    with _open(path) as image:
        return get(name).function(image)


def code_hex(name: str, code: bytes) -> str:
    """The code as hex, the way imagehash prints it (left-padded when bits % 4 != 0)."""
    import numpy as np

    method = get(name)
    if method.kind == "rv":
        return code.hex()
    bits = np.unpackbits(np.frombuffer(code, dtype=np.uint8))[: method.bits]
    value = int("".join(map(str, bits)) or "0", 2)
    return f"{value:0{(method.bits + 3) // 4}x}"


def hash_files(names: list[str], paths: list[str], progress: bool = True) -> dict:
    """Every hash of ``names`` for every file, each image decoded once:
    {name: (len(paths), bytes) uint8 matrix}, rows in the order of ``paths``."""
    import numpy as np
    from tqdm import tqdm

    methods = [get(n) for n in names]
    codes = {m.name: np.zeros((len(paths), m.width), dtype=np.uint8) for m in methods}
    for row, path in enumerate(
        tqdm(paths, desc=f"{len(methods)} hashes", unit="img", disable=not progress)
    ):
        with _open(path) as image:
            for m in methods:
                codes[m.name][row] = np.frombuffer(m.function(image), dtype=np.uint8)
    return codes


def hash_variant(list_path: str | Path, outputs: dict[str, str]) -> None:
    """The hash job: every hash in ``outputs`` (name -> store path) of one
    variant's images (its image list), one decode per image, one store each."""
    import pandas as pd

    from risbench import store

    for name in outputs:
        get(name).function  # noqa: B018 - imports its library before the timed work
    with compute("read, hash, write"):
        images = pd.read_parquet(list_path)
        variant = images["variant"].iloc[0] if len(images) else None
        codes = hash_files(list(outputs), images["path"].tolist())
        for name, path in outputs.items():
            method = get(name)
            if method.kind == "rv":
                _log_degenerate_rv(codes[name], images["path"].tolist())
            store.write_store(path, codes[name], store_attrs(method, variant))
            log.info("%s %s: %d codes of %d bytes -> %s", name, variant, *codes[name].shape, path)


def store_attrs(method: HashMethod, variant: str | None) -> dict:
    from risbench import store

    return {
        "descriptor": method.name,
        "kind": method.kind,
        "dim": method.bits,
        "method": method.description,
        "variant": variant,
        "versions": store.package_versions("imagehash", "numpy", "pillow", "pdqhash"),
    }


def _log_degenerate_rv(codes, paths: list[str]) -> None:
    """Counts (and names) the images whose RV digest is degenerate: pHash gives
    them a constant digest that matches nothing (design.md, Radial Variance)."""
    from risbench.rvcompare import rv_degenerate

    flags = rv_degenerate(codes)
    for path in (p for p, bad in zip(paths, flags, strict=True) if bad):
        log.warning("rv: degenerate digest (matches no image): %s", path)
    log.info("rv: %d of %d digests degenerate", int(flags.sum()), len(paths))
