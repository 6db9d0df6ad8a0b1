"""Failures: the queries that miss what they should find, read from the benchmarks'
per-query outcomes (:mod:`risbench.outcomes`, issue 12), for the failures table
and the failure gallery.

Which benchmarks: the ``single-{variant}`` protocols (a modified image queried
against the base images, its one relevant image its original), ``original``
left out (a base image queried against itself); when none of them ran, the
main protocol (``all``, or ``queries`` on a pairs data set:
:func:`risbench.report.main_protocol`), where a query misses when some image of its group is
out of reach (fn > 0). A query *misses* when fn > 0 at its benchmark's best
radius. Per descriptor one distance, its best: Table 3's (the highest best F1
under the main protocol), else the highest mean best F1 over those benchmarks; ties by
name.
"""

from __future__ import annotations

import pandas as pd

from risbench.results import SINGLE_PREFIX

TOP = 5  # queries listed per descriptor and modification (the hardest)
GALLERY = 4  # queries shown per descriptor in the gallery
FAILURE_COLUMNS = [
    "descriptor",
    "distance",
    "protocol",
    "radius",
    "variant",
    "missed",
    "queries",
    "image_id",
    "nearest_relevant_distance",
    "first_relevant_rank",
    "fp",
    "false_match_image_id",
    "false_match_variant",
    "false_match_distance",
]
FALSE_MATCH = {
    "nearest_nonrelevant_image_id": "false_match_image_id",
    "nearest_nonrelevant_variant": "false_match_variant",
    "nearest_nonrelevant_distance": "false_match_distance",
}


def source_benchmarks(results: pd.DataFrame) -> pd.DataFrame:
    """The benchmarks whose outcomes the failures come from (see the module notes),
    each descriptor at its best distance, best descriptor first."""
    rows = results[results["queries_table"].notna()]
    single = rows[rows["protocol"].str.startswith(SINGLE_PREFIX) & (rows["variant"] != "original")]
    from risbench.report import main_protocol

    main = main_protocol(results)
    chosen = single if not single.empty else rows[rows["protocol"] == main]
    if chosen.empty:
        return chosen
    ranking = results[results["protocol"] == main]
    if ranking.empty:
        ranking = chosen
    score = ranking.groupby(["descriptor", "distance"], as_index=False)["f1"].mean()
    score = score.sort_values(["f1", "descriptor", "distance"], ascending=[False, True, True])
    best = score.drop_duplicates("descriptor")
    order = {pair: i for i, pair in enumerate(zip(best.descriptor, best.distance, strict=True))}
    keys = pd.Series(list(zip(chosen.descriptor, chosen.distance, strict=True)), index=chosen.index)
    chosen = chosen[keys.isin(order)].copy()
    chosen["_order"] = keys.map(order)
    return chosen.sort_values("_order", kind="stable").drop(columns="_order")


def outcomes_of(benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Every query's outcome of those benchmarks, with its descriptor, distance,
    protocol and best radius, and whether it missed."""
    frames = []
    for row in benchmarks.itertuples():
        frame = pd.read_parquet(row.queries_table)
        frames.append(
            frame.assign(
                descriptor=row.descriptor,
                distance=row.distance,
                protocol=row.protocol,
                radius=row.radius,
            )
        )
    if not frames:
        return pd.DataFrame(columns=["descriptor", "distance", "protocol", "radius", "fn"])
    outcomes = pd.concat(frames, ignore_index=True)
    outcomes["missed"] = outcomes["fn"] > 0
    return outcomes


def hardest_first(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Missed queries first, then the farthest from their nearest relevant image
    (none: first), then by name (stable)."""
    far = outcomes["nearest_relevant_distance"].fillna(float("inf"))
    ordered = outcomes.assign(_far=far).sort_values(
        ["missed", "_far", "image_id", "variant"],
        ascending=[False, False, True, True],
        kind="stable",
    )
    return ordered.drop(columns="_far")


def failures_table(results: pd.DataFrame, top: int = TOP) -> pd.DataFrame:
    """Per descriptor (best distance) and modification, the ``top`` hardest missed
    queries (see :func:`hardest_first`) with how many of the group's queries
    missed, the rank of their first relevant image, the false matches retrieved
    (``fp``) and the closest false match (nearest non-relevant image).
    Descriptors best first, modifications in the paper's order."""
    from risbench.report import variant_order

    outcomes = outcomes_of(source_benchmarks(results))
    if outcomes.empty:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    keys = ["descriptor", "distance", "variant"]
    counts = outcomes.groupby(keys, sort=False).agg(
        missed=("missed", "sum"), queries=("missed", "size")
    )
    missed = hardest_first(outcomes[outcomes["missed"]]).drop(columns="missed")
    missed = missed.join(counts, on=keys).rename(columns=FALSE_MATCH)
    descriptors = {name: i for i, name in enumerate(dict.fromkeys(outcomes["descriptor"]))}
    variants = {name: i for i, name in enumerate(variant_order(outcomes["variant"]))}
    missed["_d"] = missed["descriptor"].map(descriptors)
    missed["_v"] = missed["variant"].map(variants)
    missed = missed.sort_values(["_d", "_v"], kind="stable")
    table = missed.groupby(keys, sort=False).head(top)
    table = table[FAILURE_COLUMNS].reset_index(drop=True)
    table["first_relevant_rank"] = table["first_relevant_rank"].astype("Int64")
    return table


def gallery_rows(results: pd.DataFrame, catalog: pd.DataFrame, per: int = GALLERY):
    """The failure gallery's rows: for the best float descriptor and the best hash
    (binary or rv codes; best first as in :func:`source_benchmarks`), its
    ``per`` hardest queries (:func:`hardest_first`) with the paths of the query,
    its original (the base image of its group, from ``catalog``) and its
    closest false match (``query_path``, ``original_path``, ``false_match_path``)."""
    benchmarks = source_benchmarks(results)
    kinds = benchmarks["kind"].map(lambda kind: "float" if kind == "float" else "hash")
    picked = [kinds[kinds == kind].index[0] for kind in ("float", "hash") if (kinds == kind).any()]
    best = benchmarks[benchmarks["descriptor"].isin(benchmarks.loc[picked, "descriptor"])]
    outcomes = outcomes_of(best)
    if outcomes.empty:
        return outcomes
    shown = hardest_first(outcomes).groupby("descriptor", sort=False).head(per)
    order = {name: i for i, name in enumerate(benchmarks.loc[picked, "descriptor"])}
    shown = shown.sort_values("descriptor", key=lambda d: d.map(order), kind="stable")
    return _with_paths(shown, catalog).reset_index(drop=True)


def _with_paths(shown: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """``shown`` with the catalog paths of each query, its original (the base image
    of its group) and its closest false match (None: no non-relevant image, or an
    image the catalog does not list: the gallery says "no image")."""
    by_image = catalog.set_index(["image_id", "variant"])
    paths, groups = by_image["path"], by_image["group"]
    bases = catalog[catalog["role"] == "base"].set_index("group")["path"]
    queries = list(zip(shown.image_id, shown.variant, strict=True))
    false = zip(shown.nearest_nonrelevant_image_id, shown.nearest_nonrelevant_variant, strict=True)
    return shown.assign(
        query_path=[paths.get(key) for key in queries],
        original_path=[bases.get(groups.get(key)) for key in queries],
        false_match_path=[paths.get(key) if isinstance(key[0], str) else None for key in false],
    )
