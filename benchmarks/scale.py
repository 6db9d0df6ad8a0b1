"""Runs at scale: the real ``risbench benchmark`` on n = 175,000 synthetic images.

The paper's full run is 25,000 base images × 7 variants (the original and 6
modifications) = 175,000 images, every one a query against all 175,000
(protocol ``all``): 3.06e10 pairs. This script

1. writes synthetic inputs in the workflow's own formats, streaming (memory
   O(block × d)): one variant list per variant (``images/{variant}.parquet``,
   made with :mod:`risbench.catalog`) and one descriptor store per variant
   (``descriptors/{descriptor}/{variant}.zarr``, :class:`risbench.store.StoreWriter`);
2. runs the command line the workflow's ``benchmark`` rule runs (``risbench
   benchmark --descriptor D --distance ... --list V=... --store V=... --spec
   JSON --table all=... --stats all=... --queries all=...``, protocol ``all``
   only: the sweep, then the per-query outcomes at the best radius) as a child
   process, and measures its wall
   time and peak memory (``ru_maxrss`` of that child, from ``os.wait4``);
3. for the float case, measures the bare float32 GEMM throughput of this
   machine (the engine's block shape: ``kernel_rows(n)`` × n) at the reduced
   dimension and at d = 2048, and projects the engine time at d = 2048.

Cases:

- ``float``: cosine on d-dimensional non-negative vectors (CNN features after
  ReLU): each group a random base |N(0, 1)|^d, the original = the base, the
  6 variants = ReLU(base + s_k N(0, 1)) with s_k from 0.5 to 1.5 × ``--noise``
  (mild to strong modifications);
- ``binary``: hamming on 64-bit codes, bit-packed 8 bytes: a random base code
  per group, each variant the base with ``--flips`` random bits flipped.

Peak memory must be O(n·d + tile·n) (a few copies of the descriptor matrix
plus the ``tile_mb`` tile), never O(n²): 175,000² float32 would be 122 GB.

    python benchmarks/scale.py --quick                  # smoke run: n = 14,000
    python benchmarks/scale.py --json scale.json        # n = 175,000, both cases
    python benchmarks/scale.py --only float --dim 128 --tile-mb 512 --workdir /tmp/scale

A given ``--workdir`` is kept, and stores already there with the same
parameters are reused; without one a temporary folder is used and removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from risbench import catalog
from risbench import distance as dist
from risbench.store import StoreWriter, read_attrs, read_store

VARIANTS = ["original", "blur", "gray", "resize", "jpeg", "rotate", "crop"]
BLOCK = 8192  # groups per generated block (a multiple of the store's row chunk)
PROJECT_DIM = 2048
QUICK_N = 14_000


# --------------------------------------------------------------------------- inputs


def variant_names(count: int) -> list[str]:
    if count < 2:
        raise SystemExit("--variants: at least 2 (the original and one modification)")
    return VARIANTS[:count] + [f"mod{k}" for k in range(len(VARIANTS), count)]


def float_block(seed: int, g0: int, g1: int, d: int, k: int, variants: int, noise: float):
    """Rows of groups g0:g1 for variant k (0 = original). The base depends only on
    the block, so every variant sees the same bases."""
    base = np.abs(np.random.default_rng([seed, g0]).standard_normal((g1 - g0, d), np.float32))
    if k == 0:
        return base
    scale = noise * (0.5 + (k - 1) / max(1, variants - 2))  # 0.5 .. 1.5 × noise
    rng = np.random.default_rng([seed, g0, k])
    rows = base + np.float32(scale) * rng.standard_normal(base.shape, np.float32)
    return np.maximum(rows, 0, out=rows)


def binary_block(seed: int, g0: int, g1: int, bits: int, k: int, flips: int):
    """Bit-packed codes of groups g0:g1 for variant k: the base with ``flips``
    distinct random bits flipped (none for the original)."""
    rows = g1 - g0
    base = np.random.default_rng([seed, g0]).integers(0, 256, (rows, bits // 8), dtype=np.uint8)
    if k == 0 or flips == 0:
        return base
    rng = np.random.default_rng([seed, g0, k])
    where = np.argsort(rng.random((rows, bits)), axis=1)[:, :flips]
    mask = np.zeros((rows, bits), dtype=np.uint8)
    np.put_along_axis(mask, where, 1, axis=1)
    return base ^ np.packbits(mask, axis=1)


def write_lists(workdir: Path, bases: int, names: list[str]) -> dict[str, Path]:
    """One variant list per variant, as the dataset and modify rules write them."""
    folder = workdir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"s{g:07d}" for g in range(bases)]
    manifest = pd.DataFrame(
        {"image_id": ids, "role": "base", "path": [f"synthetic/original/{i}.jpg" for i in ids]}
    )
    original = catalog.original_list(manifest)
    paths = {}
    for v in names:
        if v == "original":
            table = original
        else:
            table = catalog.modified_list(original, v, [f"synthetic/{v}/{i}.jpg" for i in ids])
        paths[v] = folder / f"{v}.parquet"
        table.to_parquet(paths[v], index=False)
    return paths


def write_stores(workdir: Path, case: dict, bases: int, names: list[str]) -> dict[str, Path]:
    """One store per variant, streamed block by block; reused when a store with the
    same parameters is already there."""
    folder = workdir / "descriptors" / case["descriptor"]
    folder.mkdir(parents=True, exist_ok=True)
    params = dict(case["params"], bases=bases, variants=len(names))
    paths = {}
    for k, v in enumerate(names):
        path = paths[v] = folder / f"{v}.zarr"
        if path.exists():
            try:
                if read_attrs(path).get("synthetic") == params:
                    continue
            except Exception:  # an unreadable store: write it again
                pass
        attrs = {
            "descriptor": case["descriptor"],
            "kind": case["kind"],
            "dim": case["dim"],
            "variant": v,
            "synthetic": params,
            "method": "benchmarks/scale.py",
        }
        writer = StoreWriter(path, bases, case["width"], case["dtype"], attrs)
        for g0 in range(0, bases, BLOCK):
            writer.write(case["block"](g0, min(bases, g0 + BLOCK), k))
        writer.close()
    return paths


def make_case(kind: str, args, variants: int) -> dict:
    seed = args.seed
    if kind == "float":
        d, noise = args.dim, args.noise
        return {
            "case": f"float d={d} cosine",
            "descriptor": f"synthetic_float_d{d}",
            "distance": "cosine",
            "kind": "float",
            "dim": d,
            "width": d,
            "dtype": np.float32,
            "bytes_per_row": 4 * d,
            "params": {"kind": "float", "dim": d, "noise": noise, "seed": seed},
            "block": lambda g0, g1, k: float_block(seed, g0, g1, d, k, variants, noise),
        }
    bits, flips = args.bits, args.flips
    return {
        "case": f"binary {bits}b hamming",
        "descriptor": f"synthetic_hash_{bits}",
        "distance": "hamming",
        "kind": "binary",
        "dim": bits,
        "width": bits // 8,
        "dtype": np.uint8,
        "bytes_per_row": bits // 8,
        "params": {"kind": "binary", "bits": bits, "flips": flips, "seed": seed},
        "block": lambda g0, g1, k: binary_block(seed, g0, g1, bits, k, flips),
    }


# --------------------------------------------------------------------------- the run


def risbench_command() -> list[str]:
    """The ``risbench`` console script of this Python (not a version-manager shim,
    whose helper processes would sit between us and the benchmark), else the
    module."""
    script = Path(sys.executable).with_name("risbench")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "risbench.cli"]


def run_benchmark(workdir: Path, case: dict, lists: dict, stores: dict, args) -> dict:
    """``risbench benchmark`` as the workflow rule runs it; wall time and the child's
    peak RSS (``ru_maxrss`` of exactly that process, from ``os.wait4``)."""
    out = workdir / "benchmark" / "all"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{case['descriptor']}__{case['distance']}"
    table, stats, log = out / f"{stem}.parquet", out / f"{stem}.json", out / f"{stem}.log"
    queries = out / f"{stem}.queries.parquet"
    spec = {  # the rule's spec: the benchmark section with the schema's defaults
        "beta": 1.0,
        "device": args.device,
        "exclude_self": False,
        "radius": {case["distance"]: None},
        "tile_mb": args.tile_mb,
        "top_k": 10,
    }
    cmd = [*risbench_command(), "benchmark", "--descriptor", case["descriptor"]]
    cmd += ["--distance", case["distance"]]
    for v in lists:
        cmd += ["--list", f"{v}={lists[v]}", "--store", f"{v}={stores[v]}"]
    cmd += ["--spec", json.dumps(spec, sort_keys=True), "--table", f"all={table}"]
    cmd += ["--stats", f"all={stats}", "--queries", f"all={queries}"]
    print(
        f"  $ risbench benchmark --distance {case['distance']} ... --table all=... "
        f"(tile_mb {args.tile_mb}; log {log})",
        flush=True,
    )
    with open(log, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"risbench benchmark failed ({proc.returncode}):\n{tail}")
    result = json.loads(stats.read_text())
    n = sum(len(pd.read_parquet(p, columns=["image_id"])) for p in lists.values())
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    return {
        "case": case["case"],
        "n": n,
        "pairs": result["queries"] * n,
        "wall_s": wall,
        "engine_s": result["seconds"],
        "peak_rss_mb": peak_mb,
        "pairs_per_s": result["queries"] * n / wall,
        "best_f1": result["best"]["f1"],
        "best_radius": result["best"]["radius"],
        "best_precision": result["best"]["precision"],
        "best_recall": result["best"]["recall"],
        "recall_at_1": result["ranked"].get("recall_at_1"),
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "tile_mb": args.tile_mb,
        "descriptor_mb": n * case["bytes_per_row"] / 2**20,
        "n2_float32_gb": n * n * 4 / 1e9,
        "stats": str(stats),
    }


# --------------------------------------------------------------------------- GEMM


def gemm_ns_per_pair(n: int, dims: list[int], seconds: float, repeat: int) -> dict[int, float]:
    """Bare float32 matrix products in the engine's block shape (kernel_rows(n)
    query rows × the n index rows), per pair, for each d: repeated, interleaved
    (a shared machine's load hits every d alike), the fastest run counts."""
    block = dist.kernel_rows(n, np)
    top = max(dims)
    full = np.random.default_rng(1).standard_normal((n, top), dtype=np.float32)
    index = {d: full if d == top else np.ascontiguousarray(full[:, :d]) for d in dims}
    out = np.empty((block, n), dtype=np.float32)
    best = {d: math.inf for d in dims}
    for _ in range(repeat):
        for d in dims:
            x = index[d]
            q = np.ascontiguousarray(x[:block])
            np.matmul(q, x.T, out=out)  # warm
            done, t0 = 0, time.perf_counter()
            while True:
                start = (done * block) % max(1, n - block)
                q = x[start : start + block]
                np.matmul(q, x.T, out=out)
                done += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds and done >= 2:
                    break
            best[d] = min(best[d], elapsed / (done * block * n) * 1e9)
    return best


def projection(row: dict, dim: int, gemm: dict[int, float]) -> dict:
    """Engine time at d = 2048 from the engine time at the reduced d.

    engine(d) = GEMM(d) + rest, where GEMM(d) = ns/pair(d) × pairs is the bare
    product time of this machine and rest (binning, counting, P/R/F, top k,
    normalisation) does not depend on d (it is per pair of bin indices):
        projected = (engine(d) − GEMM(d)) + GEMM(d) × ns/pair(2048) / ns/pair(d)
    """
    pairs = row["pairs"]
    g_low = gemm[dim] * pairs / 1e9
    g_high = gemm[PROJECT_DIM] * pairs / 1e9
    rest = row["engine_s"] - g_low
    engine = rest + g_high
    # outside the engine: start, imports, catalog, writing (fixed) and reading the
    # stores (O(n·d), timed separately: scaled with d)
    fixed = row["wall_s"] - row["engine_s"] - row["read_s"]
    # the stores as read, the gathered index, the normalised copy, plus transients
    # (reading zarr, gathering per variant): 3.5 copies measured (d = 64 vs 2048, n = 14,000)
    copies = 3.5
    extra_mb = copies * row["n"] * (PROJECT_DIM - dim) * 4 / 2**20
    return {
        "dim": PROJECT_DIM,
        "from_dim": dim,
        "gemm_ns_per_pair": {str(k): v for k, v in gemm.items()},
        "gemm_ratio": gemm[PROJECT_DIM] / gemm[dim],
        "gemm_s_at_dim": g_low,
        "non_gemm_s": rest,
        "gemm_s_at_2048": g_high,
        "engine_s": engine,
        "read_s_at_2048": row["read_s"] * PROJECT_DIM / dim,
        "wall_s": engine + fixed + row["read_s"] * PROJECT_DIM / dim,
        "peak_rss_mb": row["peak_rss_mb"] + extra_mb,
    }


# --------------------------------------------------------------------------- output


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'case':>22} {'n':>8} {'pairs':>10} {'wall s':>8} {'engine s':>8} "
        f"{'peak RSS MB':>11} {'pairs/s':>9} {'best F1':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['case']:>22} {r['n']:8d} {r['pairs']:10.3g} {r['wall_s']:8.1f} "
            f"{r['engine_s']:8.1f} {r['peak_rss_mb']:11.0f} {r['pairs_per_s']:9.3g} "
            f"{r['best_f1']:7.4f}"
        )


def check_memory(row: dict, args) -> str | None:
    """A warning when the peak is closer to the n² matrix than to O(n·d + tile·n)."""
    expected = 4 * row["descriptor_mb"] + 4 * args.tile_mb + 1024  # + runtime, generous
    if row["peak_rss_mb"] > expected:
        return (
            f"  !! {row['case']}: peak RSS {row['peak_rss_mb']:.0f} MB exceeds the "
            f"O(n·d + tile·n) bound of ~{expected:.0f} MB (n² float32 = "
            f"{row['n2_float32_gb']:.0f} GB): see the log next to {row['stats']}"
        )
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=175_000, help="images (bases × variants)")
    ap.add_argument("--variants", type=int, default=7, help="per group, original included")
    ap.add_argument("--dim", type=int, default=64, help="float descriptor dimension")
    ap.add_argument("--bits", type=int, default=64, help="hash bits (a multiple of 8)")
    ap.add_argument("--noise", type=float, default=0.2, help="float variant noise (× 0.5..1.5)")
    ap.add_argument("--flips", type=int, default=3, help="bits flipped per hash variant")
    ap.add_argument("--tile-mb", type=float, default=256, help="the benchmark's tile_mb")
    ap.add_argument("--device", default="auto", help="the benchmark's device (auto|cpu|cuda)")
    ap.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp folder")
    ap.add_argument("--only", choices=["float", "binary"], default=None)
    ap.add_argument("--quick", action="store_true", help=f"smoke run: n = {QUICK_N:,}")
    ap.add_argument("--no-projection", action="store_true", help="skip the GEMM measurement")
    ap.add_argument("--gemm-seconds", type=float, default=3.0, help="per GEMM measurement")
    ap.add_argument("--gemm-repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = QUICK_N
    if args.bits % 8 or args.bits <= 0 or not 0 <= args.flips <= args.bits:
        raise SystemExit("--bits: a positive multiple of 8; --flips: 0 to bits")
    names = variant_names(args.variants)
    bases = args.n // len(names)
    if bases < 2:
        raise SystemExit("--n: at least 2 groups")
    n = bases * len(names)
    kinds = [args.only] if args.only else ["float", "binary"]

    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="risbench-scale-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"n = {n:,} images ({bases:,} groups × {len(names)} variants), {n * n:.3g} pairs; "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; workdir {workdir}",
        flush=True,
    )
    rows, warnings, proj = [], [], None
    try:
        lists = write_lists(workdir, bases, names)
        for kind in kinds:
            case = make_case(kind, args, len(names))
            t0 = time.perf_counter()
            stores = write_stores(workdir, case, bases, names)
            print(f"{case['case']}: stores ready in {time.perf_counter() - t0:.1f} s", flush=True)
            row = run_benchmark(workdir, case, lists, stores, args)
            t0 = time.perf_counter()
            for path in stores.values():  # what the command spends reading them
                read_store(path)
            row["read_s"] = time.perf_counter() - t0
            print(
                f"  wall {row['wall_s']:.1f} s (engine {row['engine_s']:.1f} s), peak RSS "
                f"{row['peak_rss_mb']:.0f} MB, best F1 {row['best_f1']:.4f} at radius "
                f"{row['best_radius']:.4g}",
                flush=True,
            )
            rows.append(row)
            warning = check_memory(row, args)
            if warning:
                warnings.append(warning)
            if kind == "float" and row["best_f1"] < 0.9:
                warnings.append(f"  !! {row['case']}: best F1 {row['best_f1']:.4f} < 0.9")
        float_row = next((r for r in rows if r["case"].startswith("float")), None)
        if float_row and not args.no_projection:
            dims = sorted({args.dim, PROJECT_DIM})
            print(
                f"GEMM throughput at d = {dims} (block {dist.kernel_rows(n, np)} × {n}) ...",
                flush=True,
            )
            gemm = gemm_ns_per_pair(n, dims, args.gemm_seconds, args.gemm_repeat)
            proj = projection(float_row, args.dim, gemm)
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(rows)
    for r in rows:
        print(
            f"  {r['case']}: descriptors {r['descriptor_mb']:.0f} MB, tile {r['tile_mb']:.0f} MB, "
            f"n² float32 would be {r['n2_float32_gb']:.0f} GB; P {r['best_precision']:.4f} "
            f"R {r['best_recall']:.4f} at radius {r['best_radius']:.4g}; "
            f"CPU user {r['user_s']:.0f} s"
        )
    if proj:
        g = proj["gemm_ns_per_pair"]
        lo = str(args.dim)
        print(
            f"\nProjection to d = {PROJECT_DIM} (float, cosine, n = {n:,}):\n"
            f"  bare float32 GEMM, engine block shape: {g[lo]:.2f} ns/pair at d = {args.dim}, "
            f"{g[str(PROJECT_DIM)]:.2f} ns/pair at d = {PROJECT_DIM} "
            f"(ratio {proj['gemm_ratio']:.1f})\n"
            f"  engine(d) = GEMM(d) + rest; GEMM(d) = ns/pair(d) × pairs; the rest (binning,\n"
            f"  counting, P/R/F, top k) works on bin indices and does not depend on d:\n"
            f"    GEMM({args.dim}) = {proj['gemm_s_at_dim']:.1f} s, rest = engine − GEMM = "
            f"{float_row['engine_s']:.1f} − {proj['gemm_s_at_dim']:.1f} = "
            f"{proj['non_gemm_s']:.1f} s\n"
            f"    projected engine({PROJECT_DIM}) = rest + GEMM({args.dim}) × ratio = "
            f"{proj['non_gemm_s']:.1f} + {proj['gemm_s_at_dim']:.1f} × "
            f"{proj['gemm_ratio']:.1f} = {proj['engine_s']:.0f} s "
            f"({proj['engine_s'] / 3600:.2f} h)\n"
            f"  wall ≈ {proj['wall_s']:.0f} s: + the rest of the command as measured, with "
            f"reading the stores\n  ({float_row['read_s']:.1f} s, timed here) scaled by "
            f"{PROJECT_DIM}/{args.dim} to {proj['read_s_at_2048']:.0f} s;\n"
            f"  peak RSS ≈ {proj['peak_rss_mb']:.0f} MB (+ 3.5 copies of the n × d float32 "
            f"matrix: as read, gathered, normalised, transients)"
        )
    for w in warnings:
        print(w)
    if args.json:
        payload = {
            "n": n,
            "groups": bases,
            "variants": names,
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": rows,
            "projection": proj,
            "warnings": warnings,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main())
