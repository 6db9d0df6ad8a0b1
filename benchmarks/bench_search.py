"""Sublinear search against the exact sweep: the search table (``risbench.search.measure``).

    nice python benchmarks/bench_search.py [--n 10000] [--queries 1000] [--dim 512] [--bits 256]

Synthetic near-duplicate data: ``--n`` / 4 groups of 4 indexed vectors each (a
group's own centre plus Gaussian noise of a strength drawn per copy), the group
centres themselves drawn around ``--clusters`` coarse centres so that unrelated
groups are not all orthogonal (which would make every index look perfect). Each
query is one more noisy copy of a group.
The binary case hashes the same vectors to ``--bits``-bit codes by the signs of a
random projection (locality-sensitive hashing), so near-duplicates have near codes.

For each case the best radius comes from the exact sweep (``metrics.sweep``, best
mean F1); the sweep's own retrieved-pair count at that radius is printed next to the
exact pair count the recall is measured against (they must agree). Then one row per
index: recall of the exact in-radius pairs, range-search queries per second (the
fastest of 3 runs), build seconds and serialized size. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from risbench import metrics, protocols, search


def synthetic(n: int, queries: int, dim: int, clusters: int, noise: float, seed: int):
    """(index rows, their groups, query rows, their groups), float32."""
    rng = np.random.default_rng(seed)
    groups = n // 4
    coarse = rng.standard_normal((clusters, dim))
    centres = coarse[rng.integers(0, clusters, groups)] + 0.6 * rng.standard_normal((groups, dim))
    index_groups = np.repeat(np.arange(groups), 4)
    query_groups = rng.integers(0, groups, queries)

    def copies(of: np.ndarray) -> np.ndarray:
        # each copy its own strength (noise/3 to 2 x noise, log-uniform): some copies
        # stray far from their group, so no radius separates every group (F1 < 1)
        scale = noise * np.exp(rng.uniform(np.log(1 / 3), np.log(2), (len(of), 1)))
        return (centres[of] + scale * rng.standard_normal((len(of), dim))).astype(np.float32)

    return copies(index_groups), index_groups, copies(query_groups), query_groups


def lsh_codes(x: np.ndarray, centre: np.ndarray, bits: int, seed: int) -> np.ndarray:
    """Sign bits of ``bits`` random projections of the rows, centred on the index mean."""
    planes = np.random.default_rng(seed + 1).standard_normal((x.shape[1], bits))
    return np.packbits((x - centre) @ planes > 0, axis=1)


def best_radius(index, index_groups, queries, query_groups, distance, bits=None):
    top = protocols.euclidean_max_radius(index, queries) if distance == "euclidean" else None
    grid = metrics.radius_grid(distance, bits=bits, max_radius=top)
    result = metrics.sweep(
        index, index_groups, queries, query_groups, distance, grid, bits=bits, device="auto"
    )
    best = result.best()
    return best, int(best["tp"] + best["fp"])


def run_case(name, index, groups, queries, query_groups, distance, bits=None) -> list[dict]:
    started = time.perf_counter()
    best, swept = best_radius(index, groups, queries, query_groups, distance, bits)
    print(
        f"{name}: best radius {best['radius']:.6g} (F1 {best['f1']:.3f}), sweep retrieved "
        f"{swept} pairs, swept in {time.perf_counter() - started:.1f} s"
    )
    rows = search.measure(
        index, queries, distance, best["radius"], bits=bits, device="auto", repeats=3
    )
    if rows[0]["exact_pairs"] != swept:
        raise SystemExit(f"{name}: exact pairs {rows[0]['exact_pairs']} != sweep {swept}")
    return [{"data": name, **row} for row in rows]


def markdown(rows: list[dict]) -> str:
    head = "| data | index | distance | radius | recall vs exact | queries/s | build s | bytes |"
    lines = [head, "|" + " --- |" * 8]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['index']} | {r['distance']} | {r['radius']:.4g} | "
            f"{r['recall']:.4f} ({r['found_pairs']}/{r['exact_pairs']}) | "
            f"{r['queries_per_s']:,.0f} | {r['build_s']:.2f} | {r['bytes']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="indexed vectors (4 per group)")
    p.add_argument("--queries", type=int, default=1_000, help="near-duplicate queries")
    p.add_argument("--dim", type=int, default=512, help="float dimensions")
    p.add_argument("--bits", type=int, default=256, help="code bits (a multiple of 8)")
    p.add_argument("--clusters", type=int, default=50, help="coarse clusters of the groups")
    p.add_argument("--noise", type=float, default=0.5, help="near-duplicate noise (median)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.n < 4 or args.bits % 8:
        raise SystemExit("--n must be at least 4 and --bits a multiple of 8")
    x, groups, q, query_groups = synthetic(
        args.n, args.queries, args.dim, args.clusters, args.noise, args.seed
    )
    print(f"n = {len(x)}, queries = {len(q)}, d = {args.dim}, {os.cpu_count()} CPUs")
    rows = []
    for distance in ("cosine", "euclidean"):
        rows += run_case(f"float {args.dim}-d", x, groups, q, query_groups, distance)
    centre = x.mean(axis=0)
    xb, qb = (lsh_codes(v, centre, args.bits, args.seed) for v in (x, q))
    rows += run_case(f"{args.bits}-bit codes", xb, groups, qb, query_groups, "hamming", args.bits)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
