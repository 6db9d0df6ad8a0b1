"""Throughput of the pHash re-implementations against imagehash.phash, on one core.

    python benchmarks/bench_hashes.py [--images DIR] [--repeats N]

Images are decoded once up front; only hashing is timed. Each hash runs over the whole
image set ``--repeats`` times and the best pass counts. Pinned to one CPU core with one
BLAS/OpenMP thread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from risbench import phash  # noqa: E402

DEFAULT_IMAGES = ROOT / "tests" / "data" / "golden" / "images"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def pin_one_core() -> str:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    return "not pinned (no sched_setaffinity)"


def load_images(folder: Path) -> list[Image.Image]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    if not paths:
        raise SystemExit(f"no images under {folder}")
    images = []
    for path in paths:
        image = Image.open(path)
        image.load()  # decode now, not inside the timed loop
        images.append(image)
    return images


def best_rate(function: Callable[[Image.Image], object], images, repeats: int) -> float:
    """Images per second, best of ``repeats`` passes over all images."""
    function(images[0])  # warm caches / lazily built tables
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            function(image)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def rv_peak_rate(repeats: int) -> float:
    """Digest pairs per second for one 256 x 4096 tile of rv_peak."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (256, 40), dtype=np.uint8)
    b = rng.integers(0, 256, (4096, 40), dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        phash.rv_peak(a, b)
        best = min(best, time.perf_counter() - start)
    return a.shape[0] * b.shape[0] / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="image folder")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best counts")
    args = parser.parse_args(argv)

    pinned = pin_one_core()
    images = load_images(args.images)
    sizes = {image.size for image in images}
    print(f"{len(images)} images from {args.images} ({len(sizes)} sizes), {pinned}")

    methods = {
        "imagehash.phash": imagehash.phash,
        "dct_hash": phash.dct_hash,
        "mh_hash": phash.mh_hash,
        "rv_digest": phash.rv_digest,
    }
    rates = {name: best_rate(fn, images, args.repeats) for name, fn in methods.items()}

    dct = rates["dct_hash"]
    print()
    print(f"{'hash':<16} {'images/s':>10} {'ms/image':>9}  relative")
    for name, rate in rates.items():
        if name == "imagehash.phash":
            note = ""
        elif name == "dct_hash":
            note = f"{rate / rates['imagehash.phash']:.2f}x the speed of imagehash.phash"
        else:
            note = f"{dct / rate:.1f}x slower than dct_hash"
        print(f"{name:<16} {rate:10.1f} {1e3 / rate:9.3f}  {note}")
    print(f"{'rv_peak':<16} {rv_peak_rate(args.repeats) / 1e6:10.2f} Mpairs/s (256 x 4096 tile)")

    print()
    checks = [
        ("dct_hash at least as fast as imagehash.phash", dct >= rates["imagehash.phash"]),
        ("mh_hash within 5x of dct_hash", dct / rates["mh_hash"] <= 5),
        ("rv_digest within 5x of dct_hash", dct / rates["rv_digest"] <= 5),
    ]
    for label, ok in checks:
        print(f"[{'met' if ok else 'MISSED'}] {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
