"""Peak memory of every modification and every hash against image size.

Each stage runs in a fresh child process that imports what any stage imports
(NumPy, Pillow, imagehash, risbench.modify, risbench.hashing, risbench.phash),
runs the stage once on a synthetic photo-like PNG and reports its own peak RSS
(``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` where there is no /proc).
A child that only imports gives the baseline; the table shows the peak above
it, in MiB and in bytes per input pixel, and the stage's wall time.

Stages: ``modify:VARIANT`` is ``modify.modify_file`` (decode the PNG original,
apply the variant, write PNG or JPEG) for every registered modification and a
few compositions, ``modify:VARIANT@Q`` the same with ``reencode_quality=Q``;
``hash:NAME`` is ``hashing.hash_file`` for every hash in ``hashing.HASHES``.

The images are a golden photo (``tests/data/golden/images``) cropped to 4:3,
upscaled to the requested megapixels with bicubic interpolation and given
seeded Gaussian noise (sigma 3 levels), so that PNG files compress about as
much as photographs do.

    python benchmarks/bench_memory.py                          # 1, 12 and 24 MP, all stages
    python benchmarks/bench_memory.py --mp 12 --stages modify:rotate hash:mh
    python benchmarks/bench_memory.py --mp 1 --json memory.json

The target (docs/design.md) is at most 40 bytes per input pixel above the
baseline for every stage; a row above it is marked ``OVER`` and the script
exits with status 1. ``rotate`` grows the canvas, so its bound is per output
pixel; the table shows input pixels for every stage.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "golden" / "images" / "sklearn_china.png"
TARGET_BYTES_PER_PIXEL = 40.0
EXTRA_VARIANTS = ("crop+jpeg-30", "rotate+resize", "blur@85", "rotate@85")

# The child: imports everything first (that is the baseline), then runs one stage.
CHILD = r"""
import json, sys, time
import numpy, PIL.Image, imagehash
from risbench import hashing, modify, phash
try:  # imagehash imports these inside its phash and whash functions
    import pywt, scipy.fftpack
except ImportError:
    pass

def peak_bytes():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

kind, name, src, dst = sys.argv[1:5]
start = time.perf_counter()
if kind == "modify":
    variant, _, quality = name.partition("@")
    modify.modify_file(variant, src, dst, reencode_quality=int(quality) if quality else None)
elif kind == "hash":
    hashing.hash_file(name, src)
print(json.dumps({"peak": peak_bytes(), "seconds": time.perf_counter() - start}))
"""


def all_stages() -> list[str]:
    sys.path.insert(0, str(ROOT / "src"))
    from risbench import hashing, modify

    variants = [*modify.MODIFICATIONS, *EXTRA_VARIANTS]
    return [f"modify:{v}" for v in variants] + [f"hash:{h}" for h in hashing.HASHES]


def photo_like(megapixels: float, path: Path, seed: int = 0) -> tuple[int, int]:
    """Writes a 4:3 photo-like RGB PNG of about ``megapixels`` MP; returns (width, height)."""
    width = round(math.sqrt(megapixels * 1e6 * 4.0 / 3.0))
    height = round(width * 3 / 4)
    with Image.open(PHOTO) as im:
        source = im.convert("RGB")
    sw, sh = source.size
    crop_h = min(sh, round(sw * 3 / 4))
    crop_w = round(crop_h * 4 / 3)
    source = source.crop((0, 0, crop_w, crop_h)).resize((width, height), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(source, dtype=np.int16)
    del source
    for row in range(0, height, 512):  # noise strip by strip: the parent's memory stays small
        block = pixels[row : row + 512]
        block += np.rint(rng.normal(0.0, 3.0, block.shape)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path, compress_level=1)
    return width, height


def run_child(stage: str, src: Path, workdir: Path, timeout: float) -> dict:
    kind, _, name = stage.partition(":")
    dst = workdir / "out"
    command = [sys.executable, "-c", CHILD, kind, name, str(src), str(dst)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        for path in workdir.glob("out.*"):
            path.unlink()
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return {"error": tail[0][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(megapixels: list[float], stages: list[str], workdir: Path, timeout: float):
    """Yields one result row per (size, stage), the baseline first for each size."""
    for mp in megapixels:
        src = workdir / f"photo_{mp:g}mp.png"
        width, height = photo_like(mp, src)
        pixels = width * height
        base = run_child("none:-", src, workdir, timeout)
        yield {"mp": mp, "size": f"{width}x{height}", "stage": "baseline", **base}
        for stage in stages:
            row = {"mp": mp, "size": f"{width}x{height}", "stage": stage}
            row.update(run_child(stage, src, workdir, timeout))
            if "peak" in row:
                above = row["peak"] - base["peak"]
                row["above_baseline"] = above
                row["bytes_per_pixel"] = above / pixels
            yield row
        src.unlink()


def format_row(row: dict) -> str:
    head = f"{row['mp']:>5g} MP  {row['size']:>11}  {row['stage']:<22}"
    if "error" in row:
        return f"{head}  FAILED: {row['error']}"
    if row["stage"] == "baseline":
        return f"{head}  peak {row['peak'] / 2**20:8.1f} MiB (interpreter and imports)"
    flag = "  OVER" if row["bytes_per_pixel"] > TARGET_BYTES_PER_PIXEL else ""
    return (
        f"{head}  {row['above_baseline'] / 2**20:8.1f} MiB  {row['bytes_per_pixel']:7.1f} B/px"
        f"  peak {row['peak'] / 2**20:8.1f} MiB  {row['seconds']:7.1f} s{flag}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mp", type=float, nargs="+", default=[1, 12, 24], help="megapixels")
    parser.add_argument("--stages", nargs="+", help="e.g. modify:rotate modify:blur@85 hash:mh")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per stage")
    parser.add_argument("--workdir", type=Path, help="where the images go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    stages = args.stages or all_stages()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print(f"{'image':>8}  {'size':>11}  {'stage':<22}  {'above baseline':>25}  peak, time")
        for row in measure(args.mp, stages, Path(tmp), args.timeout):
            print(format_row(row), flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    over = [r for r in rows if r.get("bytes_per_pixel", 0.0) > TARGET_BYTES_PER_PIXEL]
    failed = [r for r in rows if "error" in r]
    return 1 if over or failed else 0


if __name__ == "__main__":
    sys.exit(main())
