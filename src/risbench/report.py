"""The paper's tables from benchmark outputs, and :func:`summarize`, which writes
every table and figure of a run.

Inputs, each named by the caller (the workflow rule passes its inputs): the
run indexes of the benchmark jobs (:class:`risbench.results.RunIndex`), which
name every protocol's stats JSON (:class:`risbench.results.BenchmarkStats`)
and per-radius table; the Snakemake ``benchmark:`` files of the jobs
(timings); the image catalog (example sheet). Nothing here knows the
workflow's folders, and nothing is found by globbing.

Each table builder takes DataFrames and returns a DataFrame; the figures are
in :mod:`risbench.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from risbench import failures, figures, htmltable, ranking
from risbench.results import (
    FIGURES,
    PAPER_COLUMNS,
    ROBUSTNESS,
    TABLES,
    BenchmarkStats,
    ResultsError,
    RunIndex,
    strength_sweeps,
)

# The strength at which a modification leaves the image as it is: the base
# images (protocol single-original) sit there on a robustness curve.
IDENTITY_STRENGTH = {"rotate": 0.0, "crop": 0.0, "blur": 0.0, "resize": 100.0, "pad": 0.0}

STATS = ("count", "mean", "min", "q1", "median", "q3", "max")
TABLE3_COLUMNS = [
    "descriptor",
    "dimensions",
    "distance",
    "radius",
    "precision",
    "recall",
    "f1",
    "bytes_per_image",
]
STAGES = ("dataset", "modify", "hash", "extract", "compress", "benchmark")
TIMING_COLUMNS = {"s": "seconds", "max_rss": "max_rss_mb", "cpu_time": "cpu_seconds"}

RESULT_COLUMNS = [
    "protocol",
    "variant",
    "descriptor",
    "distance",
    "kind",
    "dimensions",
    "bytes_per_image",
    "queries",
    "seconds",
    "radius",
    "precision",
    "recall",
    "f1",
    "distances",
    "ranked",
    "histogram",
    "table",
    "operating_points",
    "queries_table",
]

# --------------------------------------------------------------------------------------
# loading


def results_frame(records) -> pd.DataFrame:
    """One row per benchmark from ``(BenchmarkStats, table path)`` pairs, grouped by
    protocol in first-seen order (the order of the config's protocols).

    ``variant`` is the modification of a ``single-{variant}`` protocol (else
    None); ``distances``, ``ranked`` and ``histogram`` hold the stats' blocks
    (None when the engine left them empty); ``table`` is the per-radius table;
    ``operating_points`` the stats' list; ``queries_table`` the per-query
    outcomes, when a record has a third element naming them (else None).
    """
    rows = [
        {
            "protocol": stats.protocol,
            "variant": stats.variant,
            "descriptor": stats.descriptor,
            "distance": stats.distance,
            "kind": stats.kind,
            "dimensions": stats.dim,
            "bytes_per_image": stats.bytes_per_image,
            "queries": stats.queries,
            "seconds": stats.seconds,
            **{key: stats.best[key] for key in ("radius", "precision", "recall", "f1")},
            "distances": stats.distances or None,
            "ranked": stats.ranked or None,
            "histogram": stats.histogram or None,
            "table": str(table),
            "operating_points": stats.operating_points,
            "queries_table": str(rest[0]) if rest and rest[0] else None,
        }
        for stats, table, *rest in records
    ]
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    order = {name: i for i, name in enumerate(dict.fromkeys(frame["protocol"]))}
    position = frame["protocol"].map(order)
    return frame.iloc[position.argsort(kind="stable")].reset_index(drop=True)


def load_results(run_indexes) -> pd.DataFrame:
    """:func:`results_frame` of every protocol's stats named by the run indexes
    (paths); a stats file that is not the index's protocol, descriptor and
    distance, or a benchmark in two indexes, is an error naming the files."""
    records, seen = [], {}
    for index_path in run_indexes:
        index = RunIndex.read(index_path)
        for protocol, entry in index.protocols.items():
            stats = BenchmarkStats.read(entry["stats"])
            job = (protocol, index.descriptor, index.distance)
            if (stats.protocol, stats.descriptor, stats.distance) != job:
                raise ResultsError(
                    f"{entry['stats']}: holds {stats.protocol} {stats.descriptor} "
                    f"{stats.distance}, but {index_path} lists it as {' '.join(job)}"
                )
            if job in seen:
                raise ResultsError(f"{index_path}: {' '.join(job)} is also in {seen[job]}")
            seen[job] = index_path
            records.append((stats, entry["table"], entry.get("queries")))
    return results_frame(records)


def main_protocol(results: pd.DataFrame) -> str | None:
    """The protocol of the headline tables and figures (Table 3, thresholds, F1
    against bytes, failures, the overview figures): ``queries`` when run (a
    ``pairs`` data set: the user's own ground truth), else ``all``, else the first."""
    protocols = list(dict.fromkeys(results["protocol"]))
    for headline in ("queries", "all"):
        if headline in protocols:
            return headline
    return protocols[0] if protocols else None


def load_curves(results: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    """The per-radius tables of one protocol, stacked: descriptor, distance, radius, P, R, F1."""
    columns = ["descriptor", "distance", "radius", "precision", "recall", "f1"]
    frames = []
    for row in results[results["protocol"] == protocol].itertuples():
        sweep = pd.read_parquet(row.table, columns=["radius", "precision", "recall", "f1"])
        frames.append(sweep.assign(descriptor=row.descriptor, distance=row.distance)[columns])
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def load_pair_counts(results: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    """The per-radius tables of one protocol, stacked: descriptor, distance, radius
    and the summed tp, fp, fn (the pooled precision-recall curve's counts)."""
    columns = ["descriptor", "distance", "radius", "tp", "fp", "fn"]
    frames = []
    for row in results[results["protocol"] == protocol].itertuples():
        sweep = pd.read_parquet(row.table, columns=columns[2:])
        frames.append(sweep.assign(descriptor=row.descriptor, distance=row.distance)[columns])
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


# The path below ``timings/`` of each stage's Snakemake benchmark files.
TIMING_LAYOUTS = {
    "dataset": "dataset.tsv",
    "modify": "modify/{variant}.tsv",
    "hash": "hash/{variant}.tsv (every hash) or hash/{hash}/{variant}.tsv",
    "extract": "extract/{model}/{variant}.tsv",
    "compress": "compress/{descriptor}.tsv",
    "benchmark": "benchmark/{descriptor}__{distance}.tsv or "
    "benchmark/{protocol}/{descriptor}__{distance}.tsv",
}


def parse_timing_path(path: str | Path) -> dict:
    """Stage and job of a Snakemake benchmark file, from its path below the last
    ``timings`` folder (:data:`TIMING_LAYOUTS`); a stage this version does not
    know is timed as a whole. A path that fits no layout is a ResultsError."""
    parts = Path(path).with_suffix("").parts
    if "timings" not in parts[:-1]:
        raise ResultsError(f"{path}: a timing file must lie in a 'timings' folder")
    parts = parts[len(parts) - parts[::-1].index("timings") :]
    stage, rest = parts[0], parts[1:]
    job = {"stage": stage, "descriptor": "", "variant": "", "protocol": "", "distance": ""}
    if stage == "dataset" and not rest:
        pass
    elif stage == "modify" and len(rest) == 1:
        job["variant"] = rest[0]
    elif stage in ("hash", "extract") and len(rest) == 2:
        job["descriptor"], job["variant"] = rest
    elif stage == "compress" and len(rest) == 1:  # one job per source descriptor
        job["descriptor"] = rest[0]
    elif stage == "hash" and len(rest) == 1:  # one job hashes a variant with every hash
        job["variant"] = rest[0]
    elif stage == "benchmark" and len(rest) in (1, 2) and "__" in rest[-1]:
        descriptor, _, distance = rest[-1].rpartition("__")
        job.update(protocol=rest[0] if len(rest) == 2 else "")
        job.update(descriptor=descriptor, distance=distance)
    elif stage in TIMING_LAYOUTS:
        raise ResultsError(f"{path}: a {stage} timing file is timings/{TIMING_LAYOUTS[stage]}")
    return job


def load_timings(paths) -> pd.DataFrame:
    """One row per job: stage, descriptor (the model for ``extract``), variant,
    protocol, distance, wall seconds, peak resident memory (MB) and CPU seconds.

    A file with several rows (``repeat``) gives the mean time and the largest
    memory; values Snakemake could not measure (``-``, ``NA``) are missing.
    """
    rows = []
    for path in paths:
        job = parse_timing_path(path)
        measured = pd.read_csv(path, sep="\t")
        values = {
            name: pd.to_numeric(measured[column], errors="coerce")
            if column in measured
            else pd.Series(dtype=float)
            for column, name in TIMING_COLUMNS.items()
        }
        rows.append(
            {
                **job,
                "seconds": values["seconds"].mean(),
                "max_rss_mb": values["max_rss_mb"].max(),
                "cpu_seconds": values["cpu_seconds"].mean(),
            }
        )
    columns = ["stage", "descriptor", "variant", "protocol", "distance", *TIMING_COLUMNS.values()]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------
# tables


def table3(results: pd.DataFrame, l2_normalized=()) -> pd.DataFrame:
    """Best F1 per descriptor and ranking over all modifications (the main
    protocol: ``all``, or ``queries`` on a pairs data set), best first.

    Distances that provably rank a descriptor's images alike
    (:func:`risbench.ranking.same_ranking`: cosine and angular, and Euclidean
    too for the descriptors named in ``l2_normalized``) are one row, that of the
    first (cosine first), with ``same_ranking_as`` naming the others; their own
    numbers stay in the benchmark files and the other tables."""
    rows = results[results["protocol"] == main_protocol(results)]
    normalized = set(l2_normalized)
    kept, same = [], []
    for descriptor, own in rows.groupby("descriptor", sort=False):
        for group in ranking.same_ranking(own["distance"], descriptor in normalized):
            kept.append(own.index[own["distance"] == group[0]][0])
            same.append(", ".join(group[1:]))
    table = rows.loc[kept, TABLE3_COLUMNS].assign(same_ranking_as=same)
    # Ties in F1 are broken by name so that two runs print the same table.
    return table.sort_values(
        ["f1", "descriptor", "distance"], ascending=[False, True, True], ignore_index=True
    )


def variant_order(variants) -> list[str]:
    """The paper's six modifications (and the base) in its order, then the others as given."""
    present = list(dict.fromkeys(v for v in variants if isinstance(v, str)))
    return [v for v in PAPER_COLUMNS if v in present] + [
        v for v in present if v not in PAPER_COLUMNS
    ]


def table4(results: pd.DataFrame, own_variants=()) -> pd.DataFrame:
    """Best F1 per single modification: one row per descriptor and distance, one
    column per variant (the paper's names, then strengths and compositions in
    config order) and their mean; best mean first, ties by name.
    ``own_variants``: a data set's own modified copies (source ``variants``),
    named after their folders even where a folder is called like one of
    risbench's modifications (its ``blur`` is not the paper's Blur)."""
    rows = results[results["protocol"].str.startswith("single-")]
    if rows.empty:
        return pd.DataFrame(columns=["descriptor", "distance", "mean"])
    order = variant_order(rows["variant"])
    wide = rows.pivot_table(
        index=["descriptor", "distance"], columns="variant", values="f1", aggfunc="first"
    )
    own = set(own_variants)
    wide = wide[order].rename(columns=lambda v: v if v in own else PAPER_COLUMNS.get(v, v))
    wide.columns.name = None
    wide["mean"] = wide.mean(axis=1)
    wide = wide.reset_index()
    return wide.sort_values(
        ["mean", "descriptor", "distance"], ascending=[False, True, True], ignore_index=True
    )


def distance_table(results: pd.DataFrame, protocol: str | None = "all") -> pd.DataFrame:
    """Distances of similar pairs (same base image) against dissimilar pairs, per
    descriptor and distance, and the margins between them:
    ``margin_min_max`` = dissimilar min − similar max (> 0: some radius separates
    them perfectly) and ``margin_quartiles`` = dissimilar q1 − similar q3.
    Sorted by name; margins are in each distance's own units."""
    columns = ["descriptor", "distance"]
    columns += [f"{pairs}_{stat}" for pairs in ("similar", "dissimilar") for stat in STATS]
    columns += ["margin_min_max", "margin_quartiles"]
    rows = []
    for row in results[results["protocol"] == protocol].itertuples():
        blocks = row.distances or {}
        if not blocks.get("similar") or not blocks.get("dissimilar"):
            continue
        record = {"descriptor": row.descriptor, "distance": row.distance}
        for pairs in ("similar", "dissimilar"):
            for stat in STATS:
                record[f"{pairs}_{stat}"] = blocks[pairs].get(stat)
        rows.append(record)
    table = pd.DataFrame(rows, columns=columns)
    for column in columns[2:-2]:
        table[column] = pd.to_numeric(table[column])
    for column in ("similar_count", "dissimilar_count"):
        table[column] = table[column].astype("Int64")
    table["margin_min_max"] = table["dissimilar_min"] - table["similar_max"]
    table["margin_quartiles"] = table["dissimilar_q1"] - table["similar_q3"]
    return table.sort_values(["descriptor", "distance"], ignore_index=True)


# Why a cell of the distance table is empty: the one text of each footnote.
DISTANCE_NOTES = {
    "similar": "no similar pairs under this protocol (no query shares its base photo "
    "with another image of the index)",
    "dissimilar": "no dissimilar pairs under this protocol",
    "beyond_grid": "beyond the radius grid: this quartile is read from the grid histogram "
    "and lies past the grid's largest radius (min, mean and max are exact; the config's "
    "benchmark.radius sets the grid)",
}


def distance_notes(table: pd.DataFrame) -> pd.DataFrame:
    """Why each missing value of :func:`distance_table` is missing
    (:data:`DISTANCE_NOTES`; None where a value is there): no pairs of that kind,
    or a quartile beyond the radius grid; a margin inherits the reason of the
    value it lacks."""
    notes = pd.DataFrame(None, index=table.index, columns=table.columns, dtype=object)
    for pairs in ("similar", "dissimilar"):
        none = table[f"{pairs}_count"].fillna(0).eq(0)
        for stat in STATS[1:]:
            column = f"{pairs}_{stat}"
            missing = table[column].isna()
            notes.loc[missing & none, column] = DISTANCE_NOTES[pairs]
            notes.loc[missing & ~none, column] = DISTANCE_NOTES["beyond_grid"]
    margins = {"margin_min_max": ("dissimilar_min", "similar_max")}
    margins["margin_quartiles"] = ("dissimilar_q1", "similar_q3")
    for margin, operands in margins.items():
        for operand in operands:
            lacking = table[margin].isna() & notes[margin].isna() & table[operand].isna()
            notes.loc[lacking, margin] = notes.loc[lacking, operand]
    return notes


def ranked_table(results: pd.DataFrame) -> pd.DataFrame:
    """Ranked retrieval (recall@1, recall@10, mAP, micro-AP) per protocol, descriptor
    and distance where the engine computed them; protocols in run order, best
    mAP first within one, ties by name. Benchmarks where no query has a relevant
    image other than itself (``single-original``: the ranked lists leave the
    query out) have nothing to rank and are left out."""
    ranked = results["ranked"]
    rows = results[ranked.map(lambda r: bool(r) and r.get("queries_with_relevant", 1) > 0)]
    metrics = list(dict.fromkeys(key for ranked in rows["ranked"] for key in ranked))
    table = pd.DataFrame(
        [
            {
                "protocol": row.protocol,
                "descriptor": row.descriptor,
                "distance": row.distance,
                **row.ranked,
            }
            for row in rows.itertuples()
        ],
        columns=["protocol", "descriptor", "distance", *metrics],
    )
    order = {name: i for i, name in enumerate(dict.fromkeys(results["protocol"]))}
    table["_order"] = table["protocol"].map(order)
    key = "map_at_k" if "map_at_k" in metrics else (metrics[0] if metrics else "_order")
    table = table.sort_values(
        ["_order", key, "descriptor", "distance"],
        ascending=[True, False, True, True],
        ignore_index=True,
    )
    return table.drop(columns="_order")


OPERATING_COLUMNS = ["target_precision", "reached", "radius", "precision", "recall"]


def operating_table(results: pd.DataFrame) -> pd.DataFrame:
    """Recall at each target precision (pooled over pairs) and the radius that gives
    it, per protocol, descriptor and distance (:mod:`risbench.operating`):
    protocols in run order, then target, highest recall first, ties by name. A
    target no radius reaches has ``reached`` false, recall 0 and no radius."""
    columns = ["protocol", "descriptor", "distance", *OPERATING_COLUMNS]
    rows = [
        {
            "protocol": row.protocol,
            "descriptor": row.descriptor,
            "distance": row.distance,
            **{key: point[key] for key in OPERATING_COLUMNS},
        }
        for row in results.itertuples()
        for point in row.operating_points or ()
    ]
    table = pd.DataFrame(rows, columns=columns)
    order = {name: i for i, name in enumerate(dict.fromkeys(results["protocol"]))}
    table["_order"] = table["protocol"].map(order)
    table = table.sort_values(
        ["_order", "target_precision", "recall", "descriptor", "distance"],
        ascending=[True, True, False, True, True],
        ignore_index=True,
    )
    return table.drop(columns="_order")


def thresholds_table(results: pd.DataFrame) -> pd.DataFrame:
    """The radius to deploy, per descriptor and target precision, under the main
    protocol (``all``): of the descriptor's distances, the one with the highest
    recall at that target (ties: the higher best F1, then the name), with its
    radius, pooled precision and recall; a target none of them reaches has
    ``reached`` false, recall 0 and no distance. Descriptors by name, targets
    ascending."""
    columns = ["descriptor", "target_precision", "reached", "distance", "radius"]
    columns += ["precision", "recall"]
    points = operating_table(results[results["protocol"] == main_protocol(results)])
    if points.empty:
        return pd.DataFrame(columns=columns)
    keys = ["protocol", "descriptor", "distance"]
    points = points.merge(results[[*keys, "f1"]], on=keys, how="left")
    points = points.sort_values(
        ["descriptor", "target_precision", "reached", "recall", "f1", "distance"],
        ascending=[True, True, False, False, False, True],
    )
    table = points.groupby(["descriptor", "target_precision"], sort=False).head(1).copy()
    table.loc[~table["reached"].astype(bool), "distance"] = None
    return table[columns].reset_index(drop=True)


def timing_table(timings: pd.DataFrame) -> pd.DataFrame:
    """Wall time and peak memory per stage and per descriptor (per model for
    ``extract``): jobs, total and longest wall seconds, CPU seconds, largest
    resident set (MB). Stages in pipeline order, then descriptor name."""
    columns = [
        "stage",
        "descriptor",
        "jobs",
        "wall_seconds",
        "longest_job_seconds",
        "cpu_seconds",
        "peak_rss_mb",
    ]
    if timings.empty:
        return pd.DataFrame(columns=columns)
    table = (
        timings.groupby(["stage", "descriptor"], sort=False)
        .agg(
            jobs=("seconds", "size"),
            wall_seconds=("seconds", "sum"),
            longest_job_seconds=("seconds", "max"),
            cpu_seconds=("cpu_seconds", "sum"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )
    stage_order = {stage: i for i, stage in enumerate(STAGES)}
    table["_order"] = table["stage"].map(stage_order).fillna(len(STAGES))
    table = table.sort_values(["_order", "stage", "descriptor"], ignore_index=True)
    return table.drop(columns="_order")[columns]


def strength_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Best F1 against modification strength, for every modification run at two or
    more strengths (single-step variants of the single-variant protocols, the
    default strength included); the base images join a curve at the identity
    strength (rotate 0°, crop 0 %, blur 0, resize 100 %) where there is one."""
    columns = ["modification", "strength", "variant", "descriptor", "distance", "f1"]
    single = results[results["variant"].notna()]
    strengths = strength_sweeps(single["variant"])
    rows = []
    for mod, points in strengths.items():
        if mod in IDENTITY_STRENGTH and "original" in set(single["variant"]):
            points = {"original": IDENTITY_STRENGTH[mod], **points}
        for row in single[single["variant"].isin(points)].itertuples():
            rows.append(
                (mod, points[row.variant], row.variant, row.descriptor, row.distance, row.f1)
            )
    table = pd.DataFrame(rows, columns=columns)
    table["strength"] = table["strength"].astype(float)
    return table.sort_values(
        ["modification", "descriptor", "distance", "strength"], kind="stable", ignore_index=True
    )


# The kind of value (htmltable.KINDS) of a table's columns that no column rule names.
TABLE_KINDS = {"table4_single": "score"}
# Why a table's missing values are missing, where a table says.
TABLE_NOTES = {"distances": distance_notes}


def grid_steps(results: pd.DataFrame) -> dict[tuple[str, str], float]:
    """The radius grid step of each descriptor × distance (the smallest gap
    between two radii of its per-radius table; one table each: every protocol
    of a distance has the same grid)."""
    steps = {}
    for row in results.drop_duplicates(["descriptor", "distance"]).itertuples():
        radius = pd.read_parquet(row.table, columns=["radius"])["radius"].to_numpy()
        gaps = np.diff(np.unique(radius))
        steps[(row.descriptor, row.distance)] = float(gaps.min()) if gaps.size else None
    return steps


def reader_cells(name: str, table: pd.DataFrame, steps: dict) -> htmltable.Cells:
    """The rounded cells of summary table ``name`` (:mod:`risbench.htmltable`):
    distances rounded by their row's grid step (``steps``, :func:`grid_steps`),
    missing values explained where :data:`TABLE_NOTES` says why."""
    row_steps = None
    if {"descriptor", "distance"} <= set(table.columns):
        keys = zip(table["descriptor"], table["distance"], strict=True)
        row_steps = pd.Series([steps.get(key) for key in keys], index=table.index, dtype=object)
    notes = TABLE_NOTES[name](table) if name in TABLE_NOTES else None
    kind = TABLE_KINDS.get(name, "number")
    return htmltable.format_cells(table, default=kind, steps=row_steps, notes=notes)


def write_table(folder: Path, name: str, table: pd.DataFrame, steps: dict) -> None:
    """``{name}.csv`` (every value as computed), ``{name}.md`` and ``{name}.html``
    (rounded; the HTML page sortable, the copy the report shows)."""
    table.to_csv(folder / f"{name}.csv", index=False)
    cells = reader_cells(name, table, steps)
    (folder / f"{name}.md").write_text(htmltable.markdown(cells))
    (folder / f"{name}.html").write_text(htmltable.page(cells, title=name))


# --------------------------------------------------------------------------------------
# entry point


def summary_tables(
    results: pd.DataFrame, timings: pd.DataFrame, l2_normalized=(), own_variants=()
) -> dict[str, pd.DataFrame]:
    """Every table of :data:`risbench.results.TABLES`, by name (``l2_normalized``:
    the descriptors the config L2-normalises, :func:`table3`; ``own_variants``:
    the data set's own modified copies, :func:`table4`)."""
    tables = {
        "table3_all": table3(results, l2_normalized),
        "table4_single": table4(results, own_variants),
        "distances": distance_table(results, main_protocol(results)),
        "ranked": ranked_table(results),
        "timing": timing_table(timings),
        "operating_points": operating_table(results),
        "thresholds": thresholds_table(results),
        "failures": failures.failures_table(results),
        "bytes_f1": bytes_f1_table(results),
    }
    return {name: tables[name] for name in TABLES}


# The figures drawn from the catalog's images (left out without one).
NEED_CATALOG = ("examples", "failure_gallery")


def summary_figures(results, table4_single, catalog=None, robustness=False) -> dict:
    """Every figure of :data:`risbench.results.FIGURES` (``examples`` only with
    the catalog) and, when asked, the robustness figure: name -> a function
    that draws it (drawn one at a time, each closed once saved)."""
    protocol = main_protocol(results)
    draw = {
        "prf_radius": lambda: figures.prf_radius_figure(
            results, load_curves(results, protocol), protocol
        ),
        "f1_by_modification": lambda: figures.modification_bars_figure(table4_single),
        "distance_histograms": lambda: figures.distance_histogram_figure(results, protocol),
        "examples": lambda: figures.examples_figure(catalog),
        "pr_curve": lambda: figures.pr_curve_figure(
            results, load_pair_counts(results, protocol), protocol
        ),
        "failure_gallery": lambda: figures.failure_gallery_figure(
            failures.gallery_rows(results, catalog)
        ),
        "bytes_f1": lambda: figures.bytes_f1_figure(bytes_f1_table(results), protocol),
    }
    names = [name for name in FIGURES if catalog is not None or name not in NEED_CATALOG]
    if robustness:
        draw[ROBUSTNESS] = lambda: figures.robustness_figure(strength_curves(results))
        names.append(ROBUSTNESS)
    return {name: draw[name] for name in names}


def summarize(
    runs,
    *,
    tables_dir: str | Path,
    figures_dir: str | Path,
    timings=(),
    images: str | Path | None = None,
    robustness: bool = False,
    l2_normalized=(),
    own_variants=(),
) -> None:
    """Writes every table (``{name}.csv``, ``.md`` and ``.html``, :func:`write_table`)
    and figure (``{name}.png``) of :func:`risbench.results.summary_outputs`.

    ``runs`` are the benchmark jobs' run indexes, the only way to the stats and
    per-radius tables; ``timings`` are the Snakemake ``benchmark:`` files
    timed, exactly those; ``images`` is the catalog (the example sheet);
    ``robustness`` draws best F1 against strength (the workflow asks when
    :func:`risbench.results.wants_robustness`); ``l2_normalized`` names the
    descriptors the config L2-normalises (:func:`risbench.config.l2_normalized`),
    whose Euclidean ranking Table 3 shows as the cosine one; ``own_variants``
    the data set's own modified copies (Table 4 names them after their folders).
    """
    results = load_results(runs)
    tables = summary_tables(results, load_timings(timings), l2_normalized, own_variants)
    catalog = pd.read_parquet(images) if images is not None else None
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    steps = grid_steps(results)
    for name, table in tables.items():
        write_table(tables_dir, name, table, steps)
    for name, draw in summary_figures(
        results, tables["table4_single"], catalog, robustness
    ).items():
        figures.save_figure(draw(), figures_dir / f"{name}.png")


# --------------------------------------------------------------------------------------
# best F1 against bytes per image (every descriptor: hashes, features, compact codes)

BYTES_F1_COLUMNS = [
    "descriptor",
    "distance",
    "family",
    "kind",
    "dimensions",
    "bytes_per_image",
    "queries",
    "radius",
    "f1",
    "pareto",
]


def descriptor_family(descriptor: str) -> str:
    """``hash`` (risbench.hashing), ``compact`` (risbench.compress) or ``features``."""
    from risbench import compress, hashing

    if descriptor in hashing.HASHES:
        return "hash"
    return "compact" if compress.parse_name(descriptor) else "features"


def pareto_front(bytes_per_image, f1) -> np.ndarray:
    """Per point, whether no other point is at most as large and at least as good
    with one of the two strictly better (the smallest descriptors for their F1)."""
    size, score = np.asarray(bytes_per_image, dtype=float), np.asarray(f1, dtype=float)
    front = np.ones(size.size, dtype=bool)
    for i in range(size.size):
        beaten = (size <= size[i]) & (score >= score[i]) & ((size < size[i]) | (score > score[i]))
        front[i] = not beaten.any()
    return front


def bytes_f1_table(results: pd.DataFrame) -> pd.DataFrame:
    """Best F1 (protocol ``all``) against bytes per image for every descriptor ×
    distance: a compact code counts its code bytes (:func:`risbench.compress.code_bytes`:
    PQ's m bytes, not its decoded floats), the others their stored bytes.
    ``pareto``: on the front of bytes against F1. Smallest first, then best F1."""
    from risbench import compress

    rows = results[results["protocol"] == main_protocol(results)]
    table = pd.DataFrame(
        {
            "descriptor": rows["descriptor"],
            "distance": rows["distance"],
            "family": rows["descriptor"].map(descriptor_family),
            "kind": rows["kind"],
            "dimensions": rows["dimensions"],
            "bytes_per_image": [
                compress.code_bytes(d) or b
                for d, b in zip(rows["descriptor"], rows["bytes_per_image"], strict=True)
            ],
            "queries": rows["queries"],
            "radius": rows["radius"],
            "f1": rows["f1"],
        },
        columns=BYTES_F1_COLUMNS,
    )
    table["pareto"] = pareto_front(table["bytes_per_image"], table["f1"])
    return table.sort_values(
        ["bytes_per_image", "f1", "descriptor", "distance"],
        ascending=[True, False, True, True],
        ignore_index=True,
    )
