"""Benchmark of the radius-sweep engine against its floor and a naive sweep.

For synthetic descriptors (clusters of a base vector plus 6 noisy variants,
protocol ``all``: every row is a query and in the index) it times, in one run
and on the same data:

- ``engine``: :func:`risbench.metrics.sweep` (every metric, one pass);
- ``recording``: the same sweep on the default grid recording every query's
  outcomes too (``per_query=True``), as a benchmark job that writes them runs it;
- ``floor``: for float descriptors the bare float32 matrix products of the
  same blocks (the floor of any exact cosine sweep); for binary codes a bare
  NumPy XOR + ``np.bitwise_count`` over the same pairs (one thread, in
  cache-sized chunks, the counts summed over words);
- ``naive``: per tile, for each radius, the retrieval mask recomputed from the
  full distance tile (distances computed once per tile, then one pass per
  radius) — what "one pass for all radii" avoids.

and prints engine/floor, naive/engine and, for the default grid, the engine's
cost beyond the floor in ns per pair (engine − floor) / n² and its CPU time
(every thread) over the floor's: where the floor keeps every core busy (the
GEMM), the least engine/floor any scheduling of the same work could reach.
With ``--distractors M`` it also times protocols ``all`` and ``distractors``
(M extra queries, never indexed) as one shared sweep
(``metrics.sweep(..., query_sets=...)``) against two separate sweeps.
Absolute times depend on the machine (and on what else runs on it); the
ratios within one run are what matters.

    python benchmarks/bench_engine.py                       # quick: n=3500, d=2048, 64 bits
    python benchmarks/bench_engine.py --n 3500 7000 14000 --dims 512 1280 2048 --bits 64 576
    python benchmarks/bench_engine.py --n 3500 --dims 1024 --distractors 500 --no-naive
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
# risbench before NumPy, as in a job: it sets how long OpenBLAS's idle threads spin
import risbench  # noqa: E402, F401, I001

import numpy as np  # noqa: E402
from risbench import cpukernels, metrics  # noqa: E402
from risbench import distance as dist  # noqa: E402


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


def time_engine(x, groups, distance, radii, bits, tile_mb, per_query=False):
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
        per_query=per_query,
    )
    return time.perf_counter() - t0, result


def time_gemm(x):
    """The bare float32 products of the engine's blocks (normalisation excluded):
    (wall, CPU) seconds."""
    qp, ip = dist.prepare_pair(x, x, "cosine", xp=np)
    n = ip.n
    block = dist.kernel_rows(n, np)
    out = np.empty((block, n), dtype=np.float32)
    pad = np.zeros((block, qp.data.shape[1]), dtype=np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, block):
        stop = min(n, start + block)
        if stop - start == block:
            np.matmul(qp.data[start:stop], ip.data.T, out=out)
        else:
            pad[: stop - start] = qp.data[start:stop]
            np.matmul(pad, ip.data.T, out=out)
    return time.perf_counter() - t0, time.process_time() - c0


def time_popcount(x, bits):
    """A bare NumPy XOR + bitwise_count over every pair (the engine's words):
    (wall, CPU) seconds."""
    qp, ip = dist.prepare_pair(x, x, "hamming", bits=bits, xp=np)
    n, words = qp.data.shape
    rows = max(1, 2**17 // n)
    tmp = np.empty((rows, n), dtype=np.uint64)
    cnt = np.empty((rows, n), dtype=np.uint8)
    acc = np.empty((rows, n), dtype=np.uint16)
    t0, c0 = time.perf_counter(), time.process_time()
    for a in range(0, n, rows):
        b = min(n, a + rows)
        for w in range(words):
            np.bitwise_xor(qp.data[a:b, w, None], ip.words_t[w][None, :], out=tmp[: b - a])
            np.bitwise_count(tmp[: b - a], out=cnt[: b - a])
            if w == 0:
                acc[: b - a] = cnt[: b - a]
            else:
                acc[: b - a] += cnt[: b - a]
    return time.perf_counter() - t0, time.process_time() - c0


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


def time_shared(x, groups, distance, radii, bits, tile_mb, distractors: int):
    """Protocols ``all`` and ``distractors`` (``distractors`` extra queries, never
    indexed, each its own group): seconds of one shared sweep and of two separate
    sweeps, and whether they agree."""
    rng = np.random.default_rng(1)
    extra = x[rng.integers(0, len(x), distractors)]
    if distance == "hamming":
        extra = extra ^ rng.integers(0, 256, extra.shape, dtype=np.uint8)
    else:
        extra = np.abs(extra + rng.standard_normal(extra.shape, dtype=np.float32))
    queries = np.concatenate([x, extra])
    qgroups = np.concatenate([groups, -1 - np.arange(distractors)])
    qself = np.concatenate([np.arange(len(x)), np.full(distractors, -1)])
    kw = dict(bits=bits, tile_mb=tile_mb, device="cpu")
    t0 = time.perf_counter()
    alone = metrics.sweep(x, groups, x, groups, distance, radii, query_self=qself[: len(x)], **kw)
    alone_d = metrics.sweep(x, groups, queries, qgroups, distance, radii, query_self=qself, **kw)
    t1 = time.perf_counter()
    sets = {"all": np.arange(len(x)), "distractors": np.arange(len(queries))}
    shared = metrics.sweep(
        x, groups, queries, qgroups, distance, radii, query_self=qself, query_sets=sets, **kw
    )
    t2 = time.perf_counter()
    same = all(
        np.array_equal(shared[k].f1, r.f1) and np.array_equal(shared[k].fp, r.fp)
        for k, r in (("all", alone), ("distractors", alone_d))
    )
    return t2 - t1, t1 - t0, same


def parse_args(argv):
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
    ap.add_argument(
        "--distractors",
        type=int,
        default=0,
        help="also time protocols all + distractors (this many distractor queries, default "
        "grid): one shared sweep against two separate sweeps",
    )
    return ap.parse_args(argv)


def make_data(distance: str, n: int, width: int, step: float):
    """(rows, groups, bits, comparison grid, default grid, label) of one configuration."""
    if distance == "cosine":
        x, groups = clustered_floats(n, width)
        radii = metrics.radius_grid("cosine", step=step)
        return x, groups, None, radii, metrics.radius_grid("cosine"), f"float d={width}"
    x, groups = clustered_codes(n, width)
    radii = metrics.radius_grid("hamming", bits=width, step=step / 2)
    default = metrics.radius_grid("hamming", bits=width)
    return x, groups, width, radii, default, f"binary {width}b"


def fmt(value, width, spec):
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def bench(args, distance: str, n: int, width: int) -> str:
    """One configuration: interleaved repeats of gemm and engine (both grids,
    and recording), then the naive sweep and the shared sweep once; the printed row."""
    x, groups, bits, radii, default, label = make_data(distance, n, width, args.radius_step)
    engine, engine_default, floor, recording = [], [], [], []
    engine_cpu, floor_cpu = [], []
    for _ in range(args.repeat):  # interleaved: load changes hit all alike
        seconds, cpu = time_gemm(x) if distance == "cosine" else time_popcount(x, bits)
        floor.append(seconds)
        floor_cpu.append(cpu)
        seconds, result = time_engine(x, groups, distance, radii, bits, args.tile_mb)
        engine.append(seconds)
        cpu = time.process_time()
        seconds, best = time_engine(x, groups, distance, default, bits, args.tile_mb)
        engine_cpu.append(time.process_time() - cpu)
        engine_default.append(seconds)
        seconds, _ = time_engine(x, groups, distance, default, bits, args.tile_mb, True)
        recording.append(seconds)
    engine, engine_default, floor = min(engine), min(engine_default), min(floor)
    over_ns = (engine_default - floor) / n**2 * 1e9
    naive = None
    if not args.no_naive and n <= args.naive_max_n:
        naive, tp, ret = time_naive(x, groups, distance, radii, bits, args.tile_mb)
        if not (np.array_equal(tp, result.tp) and np.array_equal(ret, result.tp + result.fp)):
            print("  !! naive and engine counts differ", file=sys.stderr)
    row = (
        f"{label:>15} {n:6d} {len(radii):5d} {engine:8.2f} {floor:7.3f} "
        f"{fmt(naive, 8, '.2f')} {engine / floor:9.3f} "
        f"{fmt(naive and naive / engine, 9, '.1f')} | "
        f"{len(default):4d}: {engine_default:6.2f} {engine_default / floor:9.3f} "
        f"{over_ns:7.2f} {min(engine_cpu) / min(floor_cpu):9.3f} {best.best()['f1']:7.4f} | "
        f"{min(recording):6.3f} {min(recording) / floor:8.3f}"
    )
    if args.distractors:
        shared, separate, same = time_shared(
            x, groups, distance, default, bits, args.tile_mb, args.distractors
        )
        row += f" | {shared:8.2f} {separate:8.2f} {shared / separate:6.3f}"
        if not same:
            print("  !! shared and separate sweeps differ", file=sys.stderr)
    return row


def blas_kernels() -> str:
    """The BLAS libraries loaded and the kernels they run: the float floor
    depends on them (OpenBLAS picks its kernels by CPU, or as
    OPENBLAS_CORETYPE says: on a Zen 5 CPU its AVX-512 kernels do the d = 512
    products in 0.116 s, its AVX2 ones in 0.208)."""
    from threadpoolctl import threadpool_info

    found = [
        f"{lib['internal_api']} {lib.get('version')} ({lib.get('architecture', '?')} kernels)"
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return ", ".join(found or ["none found"]) + (f"; OPENBLAS_CORETYPE={forced}" if forced else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    print(
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, {cpukernels.job_threads()} kernel "
        f"threads (OMP_NUM_THREADS); times: minimum of {args.repeat} runs"
    )
    print(f"BLAS: {blas_kernels()}")
    print("floor: the bare float32 GEMM (float) or NumPy XOR + bitwise_count (binary);")
    print("ns/pair: the engine's cost beyond the floor on the default grid, (engine - floor) / n^2")
    print("cpu/floor: the default grid's CPU time (all threads) over the floor's, the least")
    print("  eng/floor any scheduling could reach where the floor keeps every core busy (GEMM)")
    print("rec: the default grid's sweep recording per-query outcomes (as a benchmark job)")
    header = (
        f"{'data':>15} {'n':>6} {'radii':>5} {'engine s':>8} {'floor s':>7} {'naive s':>8} "
        f"{'eng/floor':>9} {'naive/eng':>9} | {'default grid':>12} {'eng/floor':>9} "
        f"{'ns/pair':>7} {'cpu/floor':>9} {'best F1':>7} | {'rec s':>6} {'rec/floor':>8}"
    )
    if args.distractors:
        header += f" | {'shared s':>8} {'2 sweeps':>8} {'ratio':>6}"
    print(header)
    configs = [("cosine", d) for d in args.dims] + [("hamming", b) for b in args.bits]
    for n in args.n:
        for distance, width in configs:
            print(bench(args, distance, n, width), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
