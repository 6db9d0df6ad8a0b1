"""Perceptual hashes as descriptors: a registry of named hash functions.

Every hash maps a PIL image to bytes: bit-packed codes (8 bits a byte, first
bit in the most significant position, as imagehash prints them) compared by
Hamming distance, or, for ``rv``, pHash's 40-byte Radial Variance digest
compared by peak cross-correlation. The pHash-compatible ``dct``, ``mh`` and
``rv`` live in :mod:`risbench.phash`; imagehash's family goes through the
imagehash library itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class HashMethod:
    name: str
    kind: str  # "binary" (Hamming on packed bits) or "rv" (peak cross-correlation)
    bits: int  # meaningful bits (binary) or digest bytes x 8 (rv)
    function: Callable[[Image.Image], bytes]
    description: str


def _imagehash(function, **kwargs) -> Callable[[Image.Image], bytes]:
    def code(image: Image.Image) -> bytes:
        bits = np.asarray(function(image, **kwargs).hash, dtype=bool).ravel()
        return np.packbits(bits).tobytes()

    return code


def _phash(name: str) -> Callable[[Image.Image], bytes]:
    def code(image: Image.Image) -> bytes:
        from risbench import phash  # imported late: it builds lookup tables on import

        return getattr(phash, name)(image)

    return code


HASHES: dict[str, HashMethod] = {
    method.name: method
    for method in (
        HashMethod("dct", "binary", 64, _phash("dct_hash"), "pHash 0.9.6 DCT hash"),
        HashMethod("mh", "binary", 576, _phash("mh_hash"), "pHash 0.9.6 Marr-Hildreth hash"),
        HashMethod("rv", "rv", 320, _phash("rv_digest"), "pHash 0.9.6 Radial Variance digest"),
        HashMethod("phash", "binary", 64, _imagehash(imagehash.phash), "imagehash phash, 8x8"),
        HashMethod("dhash", "binary", 64, _imagehash(imagehash.dhash), "imagehash dhash, 8x8"),
        HashMethod("ahash", "binary", 64, _imagehash(imagehash.average_hash), "imagehash ahash"),
        HashMethod("whash", "binary", 64, _imagehash(imagehash.whash), "imagehash whash (haar)"),
        HashMethod(
            "colorhash",
            "binary",
            42,
            _imagehash(imagehash.colorhash, binbits=3),
            "imagehash colorhash, 3 bits per bin (14 bins)",
        ),
    )
}


def get(name: str) -> HashMethod:
    if name not in HASHES:
        raise ValueError(f"unknown hash '{name}'; valid hashes: {', '.join(HASHES)}")
    return HASHES[name]


def hash_file(name: str, path: str | Path) -> bytes:
    with Image.open(path) as image:
        image.load()
        return get(name).function(image)


def code_hex(name: str, code: bytes) -> str:
    """The code as hex, the way imagehash prints it (left-padded when bits % 4 != 0)."""
    method = get(name)
    if method.kind == "rv":
        return code.hex()
    bits = np.unpackbits(np.frombuffer(code, dtype=np.uint8))[: method.bits]
    value = int("".join(map(str, bits)) or "0", 2)
    return f"{value:0{(method.bits + 3) // 4}x}"


def hash_files(name: str, paths: list[str], progress: bool = True) -> np.ndarray:
    """(len(paths), bytes) uint8 matrix of the codes of the files, in order."""
    from tqdm import tqdm

    codes = [hash_file(name, p) for p in tqdm(paths, desc=name, unit="img", disable=not progress)]
    if not codes:
        return np.zeros((0, (get(name).bits + 7) // 8), dtype=np.uint8)
    return np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(codes), -1)
