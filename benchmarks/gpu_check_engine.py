"""Prepared GPU check of the radius-sweep engine (CuPy path), under 5 minutes.

1. Timing: protocol ``all`` on n = 175,000 clustered float32 descriptors of
   d = 2048 (bases plus 6 noisy variants), cosine, the default 1025-radius grid,
   on the GPU: wall time, pairs per second, best F1.
2. Agreement with the NumPy path on a subset (n = 5,000 by default):
   - exactly equal counts (tp, fp, fn, histograms) where both backends compute
     bit-identical distances: 576-bit hamming codes (XOR + popcount) and small
     integer vectors under euclidean (every product and sum exact in float32);
   - cosine on the float subset: cuBLAS and OpenBLAS round differently, so a
     pair within an ulp of a grid radius can change side; the counts must agree
     to within a few such pairs and the mean F1 to 1e-4;
   - the per-query outcomes at the best radius on the exact data, recorded by
     the GPU's sweep and from its own pass, against the CPU kernel's pass:
     every array equal.
   Exit status 1 when an agreement check fails.

    python benchmarks/gpu_check_engine.py                      # on a CUDA machine
    python benchmarks/gpu_check_engine.py --cpu-only --n 2000  # the NumPy side only
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("CUPY_TF32", "0")  # exact float32 products, not TF32

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from risbench import distance as dist  # noqa: E402
from risbench import metrics, outcomes  # noqa: E402


def clustered(n: int, d: int, seed: int = 0, noise: float = 2.5, block: int = 8192):
    """Bases plus 6 noisy variants each (non-negative), float32, made in blocks."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // 7
    base = np.abs(rng.standard_normal((groups[-1] + 1, d), dtype=np.float32))
    x = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, block):
        b = min(n, a + block)
        x[a:b] = base[groups[a:b]]
        x[a:b] += noise * np.abs(rng.standard_normal((b - a, d), dtype=np.float32))
    return x, groups


def integer_vectors(n: int, d: int = 64, seed: int = 1):
    """Small integers in pairs (x, -x): the index mean is exactly 0, so the
    centred euclidean formula stays exact in float32."""
    rng = np.random.default_rng(seed)
    half = n // 2  # n is made even: an odd row would break the zero mean
    groups = np.arange(half) // 7
    base = rng.integers(-1, 2, (groups[-1] + 1, d))
    x = base[groups] + rng.integers(-2, 3, (half, d))
    x = np.concatenate([x, -x]).astype(np.float32)
    g = np.concatenate([groups, groups + groups[-1] + 1])
    return x, g


def codes(n: int, bits: int = 576, seed: int = 2):
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // 7
    base = rng.integers(0, 2, (groups[-1] + 1, bits), dtype=np.uint8)
    flips = (rng.random((n, bits)) < 0.3).astype(np.uint8)
    return np.packbits(base[groups] ^ flips, axis=1), groups


def run(x, g, distance, radii, device, bits=None, tile_mb=4096):
    t0 = time.perf_counter()
    r = metrics.sweep(
        x,
        g,
        x,
        g,
        distance,
        radii,
        bits=bits,
        query_self=np.arange(len(x)),
        tile_mb=tile_mb,
        device=device,
    )
    return r, time.perf_counter() - t0


def compare(name, a, b, exact: bool) -> bool:
    count_diff = max(int(np.abs(getattr(a, k) - getattr(b, k)).max()) for k in ("tp", "fp", "fn"))
    hist_diff = int(
        np.abs(
            a.histogram()[["similar", "dissimilar"]].to_numpy()
            - b.histogram()[["similar", "dissimilar"]].to_numpy()
        ).max()
    )
    f1_diff = float(np.abs(a.f1 - b.f1).max())
    pairs = int(a.tp[-1] + a.fp[-1] + a.fn[-1])
    if exact:
        ok = count_diff == 0 and hist_diff == 0 and f1_diff < 1e-12
    else:
        ok = count_diff <= max(10, pairs // 10**6) and f1_diff < 1e-4
    print(
        f"  {name:28s} max |Δcount| {count_diff:6d}  max |Δhist| {hist_diff:6d}  "
        f"max |ΔF1| {f1_diff:.2e}  best F1 {a.best()['f1']:.4f} / {b.best()['f1']:.4f}  "
        f"{'OK' if ok else 'FAIL'}"
    )
    ra, rb = a.ranked(), b.ranked()
    if exact and any(
        abs((ra[k] or 0) - (rb[k] or 0)) > 1e-12 for k in ra if isinstance(ra[k], float)
    ):
        print(f"  {name}: ranked metrics differ: {ra} vs {rb}")
        ok = False
    return ok


def compare_outcomes(name, x, g, distance, radii, device, bits=None) -> bool:
    """Per-query outcomes at the grid's best radius, as a benchmark job records
    them in its sweep and from a pass of their own, on ``device`` (the GPU's
    array code) against the CPU kernel's own pass: every array equal (exact
    data: integers or bit counts)."""
    kw = dict(bits=bits, query_self=np.arange(len(x)))
    swept = metrics.sweep(x, g, x, g, distance, radii, device=device, per_query=True, **kw)
    at = [swept.best()["radius"]]
    cpu = outcomes.query_outcomes(x, g, x, g, distance, at, device="cpu", **kw)
    ok = True
    for how, got in (
        ("recorded", swept.per_query.at(at)),
        ("own pass", outcomes.query_outcomes(x, g, x, g, distance, at, device=device, **kw)),
    ):
        differ = [k for k in cpu if not np.array_equal(got[k], cpu[k], equal_nan=True)]
        verdict = "differ in " + ", ".join(differ) if differ else "OK"
        print(f"  {name + ' outcomes, ' + how:28s} {verdict}")
        ok &= not differ
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=175_000, help="rows of the timing run")
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--subset", type=int, default=5000, help="rows of the agreement checks")
    ap.add_argument("--cpu-only", action="store_true", help="NumPy only (both sides on CPU)")
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args(argv)

    device = "cpu" if args.cpu_only else "cuda"
    if device == "cuda":
        xp = dist.array_module("cuda")  # RuntimeError without CuPy and a GPU
        props = xp.cuda.runtime.getDeviceProperties(0)
        print(f"GPU: {props['name'].decode()}, CuPy {xp.__version__}")
    subset = min(args.subset, args.n) if args.cpu_only else args.subset
    radii = metrics.radius_grid("cosine")
    ok = True
    t_start = time.perf_counter()

    # 1. agreement on subsets (first: it also warms the GPU up)
    print(f"agreement, n = {subset} ({device} against numpy)")
    x, g = codes(subset)
    hr = metrics.radius_grid("hamming", bits=576)
    ok &= compare(
        "hamming 576 bits",
        run(x, g, "hamming", hr, device, 576)[0],
        run(x, g, "hamming", hr, "cpu", 576)[0],
        exact=True,
    )
    ok &= compare_outcomes("hamming 576 bits", x, g, "hamming", hr, device, 576)
    x, g = integer_vectors(subset)
    er = metrics.radius_grid("euclidean", step=0.25, max_radius=64.0)
    ok &= compare(
        "euclidean, integers",
        run(x, g, "euclidean", er, device)[0],
        run(x, g, "euclidean", er, "cpu")[0],
        exact=True,
    )
    ok &= compare_outcomes("euclidean, integers", x, g, "euclidean", er, device)
    x, g = clustered(subset, args.d)
    (a, ta), (b, tb) = run(x, g, "cosine", radii, device), run(x, g, "cosine", radii, "cpu")
    ok &= compare(f"cosine, d={args.d}", a, b, exact=args.cpu_only)
    print(f"  cosine subset: {device} {ta:.2f} s, numpy {tb:.2f} s")

    # 2. timing at full size
    if not args.skip_timing and not args.cpu_only:
        print(f"timing, n = {args.n}, d = {args.d}, {len(radii)} radii, cosine, {device}")
        t0 = time.perf_counter()
        x, g = clustered(args.n, args.d)
        print(f"  data: {time.perf_counter() - t0:.1f} s")
        r, seconds = run(x, g, "cosine", radii, device)
        pairs = float(args.n) ** 2
        print(
            f"  sweep: {seconds:.1f} s, {pairs / seconds / 1e9:.2f} G pairs/s, "
            f"best F1 {r.best()['f1']:.4f} at radius {r.best()['radius']:.4f}, "
            f"recall@1 {r.ranked()['recall_at_1']:.4f}"
        )
    elif args.cpu_only:
        n = args.n
        x, g = clustered(n, args.d)
        r, seconds = run(x, g, "cosine", radii, "cpu", tile_mb=256)
        print(f"numpy timing, n = {n}: {seconds:.2f} s, best F1 {r.best()['f1']:.4f}")
    print(f"total {time.perf_counter() - t_start:.1f} s: {'all checks OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
