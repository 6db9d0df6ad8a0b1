"""Benchmark of the radius-sweep engine against its floor and a naive sweep.

For synthetic descriptors (clusters of a base vector plus 6 noisy variants,
protocol ``all``: every row is a query and in the index) it times, in one run
and on the same data:

- ``engine``: :func:`risbench.metrics.sweep` (every metric, one pass);
- ``gemm``: the bare float32 matrix products of the same blocks (the floor of
  any exact cosine sweep; float descriptors only);
- ``naive``: per tile, for each radius, the retrieval mask recomputed from the
  full distance tile (distances computed once per tile, then one pass per
  radius) — what "one pass for all radii" avoids.

and prints engine/gemm and naive/engine. Absolute times depend on the machine
(and on what else runs on it); the ratios within one run are what matters.

    python benchmarks/bench_engine.py                       # quick: n=3500, d=2048, 64 bits
    python benchmarks/bench_engine.py --n 3500 7000 14000 --dims 512 1280 2048 --bits 64 576
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from risbench import distance as dist  # noqa: E402
from risbench import metrics  # noqa: E402


def clustered_floats(n: int, d: int, variants: int = 6, noise: float = 2.5, seed: int = 0):
    """``n`` rows: bases plus ``variants`` noisy copies each (non-negative, as
    CNN features after ReLU); returns (rows, groups)."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // (variants + 1)
    base = np.abs(rng.standard_normal((groups[-1] + 1, d), dtype=np.float32))
    x = base[groups] + noise * np.abs(rng.standard_normal((n, d), dtype=np.float32))
    return x.astype(np.float32), groups


def clustered_codes(n: int, bits: int, variants: int = 6, flip: float = 0.12, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // (variants + 1)
    base = rng.integers(0, 2, size=(groups[-1] + 1, bits), dtype=np.uint8)
    flips = (rng.random((n, bits)) < flip).astype(np.uint8)
    return np.packbits(base[groups] ^ flips, axis=1), groups


def time_engine(x, groups, distance, radii, bits, tile_mb):
    t0 = time.perf_counter()
    result = metrics.sweep(
        x,
        groups,
        x,
        groups,
        distance,
        radii,
        bits=bits,
        query_self=np.arange(len(x)),
        tile_mb=tile_mb,
        device="cpu",
    )
    return time.perf_counter() - t0, result


def time_gemm(x):
    """The bare float32 products of the engine's blocks (normalisation excluded)."""
    qp, ip = dist.prepare_pair(x, x, "cosine", xp=np)
    n = ip.n
    block = dist.kernel_rows(n, np)
    out = np.empty((block, n), dtype=np.float32)
    pad = np.zeros((block, qp.data.shape[1]), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, n, block):
        stop = min(n, start + block)
        if stop - start == block:
            np.matmul(qp.data[start:stop], ip.data.T, out=out)
        else:
            pad[: stop - start] = qp.data[start:stop]
            np.matmul(pad, ip.data.T, out=out)
    return time.perf_counter() - t0


def time_naive(x, groups, distance, radii, bits, tile_mb):
    """Distances once per tile, then one full pass over the tile per radius."""
    t0 = time.perf_counter()
    R = len(radii)
    tp = np.zeros(R, dtype=np.int64)
    ret = np.zeros(R, dtype=np.int64)
    f1 = np.zeros(R)
    nrel = np.bincount(groups)[groups]
    for start, stop, tile in dist.iter_distance_tiles(
        x, x, distance, bits=bits, tile_mb=tile_mb, device="cpu"
    ):
        rel = groups[start:stop, None] == groups[None, :]
        nr = nrel[start:stop]
        for j, r in enumerate(radii):
            mask = tile <= r
            rj = mask.sum(axis=1)
            tj = (mask & rel).sum(axis=1)
            p = np.where(rj > 0, tj / np.maximum(rj, 1), 1.0)
            rc = tj / nr
            f1[j] += np.where(p + rc > 0, 2 * p * rc / np.maximum(p + rc, 1e-300), 0).sum()
            tp[j] += tj.sum()
            ret[j] += rj.sum()
    return time.perf_counter() - t0, tp, ret


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[3500], help="rows (3500 7000 14000)")
    ap.add_argument("--dims", type=int, nargs="+", default=[2048], help="float dims")
    ap.add_argument("--bits", type=int, nargs="*", default=[64], help="binary code bits")
    ap.add_argument(
        "--radius-step",
        type=float,
        default=2.0**-7,
        help="grid step of the engine/naive comparison (default 2^-7: 129 radii on [0, 1]; "
        "half of it on hamming's [0, 0.5])",
    )
    ap.add_argument("--tile-mb", type=float, default=256)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive per-radius loop")
    ap.add_argument("--naive-max-n", type=int, default=7000, help="skip naive above this n")
    ap.add_argument(
        "--repeat", type=int, default=3, help="interleaved gemm/engine runs; the minimum counts"
    )
    args = ap.parse_args(argv)

    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs; times: minimum of {args.repeat} runs")
    print(
        f"{'data':>15} {'n':>6} {'radii':>5} {'engine s':>8} {'gemm s':>7} {'naive s':>8} "
        f"{'eng/gemm':>8} {'naive/eng':>9} | {'default grid':>12} {'eng/gemm':>8} {'best F1':>7}"
    )
    configs = [("cosine", d) for d in args.dims] + [("hamming", b) for b in args.bits]
    for n in args.n:
        for distance, width in configs:
            if distance == "cosine":
                x, groups = clustered_floats(n, width)
                bits = None
                radii = metrics.radius_grid("cosine", step=args.radius_step)
                default = metrics.radius_grid("cosine")
                label = f"float d={width}"
            else:
                x, groups = clustered_codes(n, width)
                bits = width
                radii = metrics.radius_grid("hamming", bits=bits, step=args.radius_step / 2)
                default = metrics.radius_grid("hamming", bits=bits)
                label = f"binary {width}b"
            engine, engine_default, gemm = [], [], []
            for _ in range(args.repeat):  # interleaved: load changes hit all alike
                if distance == "cosine":
                    gemm.append(time_gemm(x))
                seconds, result = time_engine(x, groups, distance, radii, bits, args.tile_mb)
                engine.append(seconds)
                seconds, best = time_engine(x, groups, distance, default, bits, args.tile_mb)
                engine_default.append(seconds)
            engine, engine_default = min(engine), min(engine_default)
            gemm = min(gemm) if gemm else None
            naive = None
            if not args.no_naive and n <= args.naive_max_n:
                naive, tp, ret = time_naive(x, groups, distance, radii, bits, args.tile_mb)
                same = np.array_equal(tp, result.tp) and np.array_equal(ret, result.tp + result.fp)
                if not same:
                    print("  !! naive and engine counts differ", file=sys.stderr)

            def fmt(value, width, spec):
                return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"

            print(
                f"{label:>15} {n:6d} {len(radii):5d} {engine:8.2f} {fmt(gemm, 7, '.2f')} "
                f"{fmt(naive, 8, '.2f')} {fmt(gemm and engine / gemm, 8, '.3f')} "
                f"{fmt(naive and naive / engine, 9, '.1f')} | "
                f"{len(default):4d}: {engine_default:6.2f} "
                f"{fmt(gemm and engine_default / gemm, 8, '.3f')} {best.best()['f1']:7.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
