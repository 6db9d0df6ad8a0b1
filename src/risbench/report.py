"""The paper's tables and figures from benchmark outputs.

Inputs: the stats JSON of each benchmark job (best radius and its P/R/F1,
descriptor size, distance statistics, ranked metrics, distance histogram) with,
beside it, the per-radius table (parquet); the Snakemake ``benchmark:`` files of
every job (timings); the image catalog (example sheet).

Each table builder takes DataFrames and returns a DataFrame; each figure
function returns a matplotlib Figure (tests inspect it before it is saved);
:func:`summarize` writes them all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# The paper's column names for its six modifications (Table 4), in its order.
PAPER_COLUMNS = {
    "original": "Base",
    "blur": "Blur",
    "gray": "Gray",
    "resize": "Resize",
    "jpeg": "Compr",
    "rotate": "Rotate",
    "crop": "Crop",
}

# What a radius means for each distance (x axes).
DISTANCE_UNITS = {
    "hamming": "Hamming distance (fraction of bits)",
    "rv": "RV distance (1 − peak correlation)",
    "cosine": "cosine distance (1 − cos θ)",
    "angular": "angular distance (θ / π)",
    "euclidean": "Euclidean distance (descriptor units)",
}

# The strength at which a modification leaves the image as it is: the base
# images (protocol single-original) sit there on a robustness curve.
IDENTITY_STRENGTH = {"rotate": 0.0, "crop": 0.0, "blur": 0.0, "resize": 100.0, "pad": 0.0}

STATS = ("count", "mean", "min", "q1", "median", "q3", "max")
STAGES = ("dataset", "modify", "hash", "extract", "benchmark")
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
]

# --------------------------------------------------------------------------------------
# loading


def load_results(stats_paths: list[str | Path]) -> pd.DataFrame:
    """One row per benchmark job: protocol, descriptor, distance, size and best radius.

    ``variant`` is the modification of a ``single-{variant}`` protocol (else
    None); ``distances``, ``ranked`` and ``histogram`` hold the JSON's blocks as
    dicts (None when the engine did not write them); ``table`` is the path of
    the per-radius table beside the JSON.
    """
    rows = []
    for path in stats_paths:
        stats = json.loads(Path(path).read_text())
        best = stats["best"]
        protocol = stats["protocol"]
        rows.append(
            {
                "protocol": protocol,
                "variant": protocol.removeprefix("single-")
                if protocol.startswith("single-")
                else None,
                "descriptor": stats["descriptor"],
                "distance": stats["distance"],
                "kind": stats.get("kind"),
                "dimensions": stats.get("dim"),
                "bytes_per_image": stats.get("bytes_per_image"),
                "queries": stats.get("queries"),
                "seconds": stats.get("seconds"),
                "radius": best["radius"],
                "precision": best["precision"],
                "recall": best["recall"],
                "f1": best["f1"],
                "distances": stats.get("distances") or None,
                "ranked": stats.get("ranked") or None,
                "histogram": stats.get("histogram") or None,
                "table": str(Path(path).with_suffix(".parquet")),
            }
        )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def main_protocol(results: pd.DataFrame) -> str | None:
    """The protocol the overview figures show: ``all`` when run, else the first one."""
    protocols = list(dict.fromkeys(results["protocol"]))
    if "all" in protocols:
        return "all"
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


def parse_timing_path(path: str | Path) -> dict:
    """Stage and job of a Snakemake benchmark file, from its path under ``timings/``.

    ``dataset.tsv``, ``modify/{variant}.tsv``, ``hash/{hash}/{variant}.tsv``,
    ``extract/{model}/{variant}.tsv``,
    ``benchmark/{protocol}/{descriptor}__{distance}.tsv``.
    """
    parts = Path(path).with_suffix("").parts
    if "timings" in parts:
        parts = parts[len(parts) - 1 - parts[::-1].index("timings") + 1 :]
    job = {"stage": parts[0], "descriptor": "", "variant": "", "protocol": "", "distance": ""}
    if parts[0] == "modify" and len(parts) == 2:
        job["variant"] = parts[1]
    elif parts[0] in ("hash", "extract") and len(parts) == 3:
        job["descriptor"], job["variant"] = parts[1], parts[2]
    elif parts[0] == "benchmark" and len(parts) == 3:
        descriptor, _, distance = parts[2].rpartition("__")
        job.update(protocol=parts[1], descriptor=descriptor, distance=distance)
    return job


def load_timings(paths: list[str | Path]) -> pd.DataFrame:
    """One row per job: stage, descriptor (the model for ``extract``), variant,
    protocol, distance, wall seconds, peak resident memory (MB) and CPU seconds.

    A file with several rows (``repeat``) gives the mean time and the largest
    memory; values Snakemake could not measure (``-``, ``NA``) are missing.
    """
    rows = []
    for path in paths:
        measured = pd.read_csv(path, sep="\t")
        values = {
            name: pd.to_numeric(measured[column], errors="coerce")
            if column in measured
            else pd.Series(dtype=float)
            for column, name in TIMING_COLUMNS.items()
        }
        rows.append(
            {
                **parse_timing_path(path),
                "seconds": values["seconds"].mean(),
                "max_rss_mb": values["max_rss_mb"].max(),
                "cpu_seconds": values["cpu_seconds"].mean(),
            }
        )
    columns = ["stage", "descriptor", "variant", "protocol", "distance", *TIMING_COLUMNS.values()]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------
# tables


def table3(results: pd.DataFrame) -> pd.DataFrame:
    """Best F1 per descriptor and distance over all modifications, best first."""
    rows = results[results["protocol"] == "all"]
    table = rows[
        [
            "descriptor",
            "dimensions",
            "distance",
            "radius",
            "precision",
            "recall",
            "f1",
            "bytes_per_image",
        ]
    ]
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


def table4(results: pd.DataFrame) -> pd.DataFrame:
    """Best F1 per single modification: one row per descriptor and distance, one
    column per variant (the paper's names, then strengths and compositions in
    config order) and their mean; best mean first, ties by name."""
    rows = results[results["protocol"].str.startswith("single-")]
    if rows.empty:
        return pd.DataFrame(columns=["descriptor", "distance", "mean"])
    order = variant_order(rows["variant"])
    wide = rows.pivot_table(
        index=["descriptor", "distance"], columns="variant", values="f1", aggfunc="first"
    )
    wide = wide[order].rename(columns=lambda v: PAPER_COLUMNS.get(v, v))
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


def ranked_table(results: pd.DataFrame) -> pd.DataFrame:
    """Ranked retrieval (recall@1, recall@10, mAP, micro-AP) per protocol, descriptor
    and distance where the engine computed them; protocols in run order, best
    mAP first within one, ties by name."""
    rows = results[results["ranked"].notna()]
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
    from risbench import modify

    columns = ["modification", "strength", "variant", "descriptor", "distance", "f1"]
    single = results[results["variant"].notna()]
    strengths: dict[str, dict[str, float]] = {}
    for variant in dict.fromkeys(single["variant"]):
        try:
            steps = modify.parse_variant(variant)
        except ValueError:
            continue
        if len(steps) == 1 and steps[0][1] is not None:
            strengths.setdefault(steps[0][0], {})[variant] = steps[0][1]
    rows = []
    for mod, points in strengths.items():
        if len(set(points.values())) < 2:
            continue
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


def to_markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".4f", missingval="") + "\n"


# --------------------------------------------------------------------------------------
# figures

STYLE = {"style": "whitegrid", "context": "paper"}
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]


def _grid(panels: int, ncols: int, width: float, height: float, extra_height: float = 0.0):
    """A figure of ``panels`` axes in rows of ``ncols`` (unused cells removed);
    ``extra_height`` inches are kept for a legend."""
    ncols = max(1, min(ncols, panels))
    nrows = max(1, math.ceil(panels / ncols))
    figure, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * width, nrows * height + extra_height),
        squeeze=False,
        layout="constrained",
    )
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.remove()
    return figure, flat[:panels]


def message_figure(title: str, message: str):
    """A one-panel figure that says why there is nothing to draw."""
    figure, ax = plt.subplots(figsize=(7, 2.2), layout="constrained")
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, wrap=True)
    figure.suptitle(title)
    return figure


def _panel_name(descriptor: str, distance: str) -> str:
    return f"{descriptor} · {distance}"


def _panels(results: pd.DataFrame, protocol: str | None) -> pd.DataFrame:
    rows = results[results["protocol"] == protocol]
    return rows.sort_values(["descriptor", "distance"], ignore_index=True)


def _distance_label(distance: str) -> str:
    return DISTANCE_UNITS.get(distance, f"{distance} distance")


def prf_radius_figure(results: pd.DataFrame, curves: pd.DataFrame, protocol: str | None = "all"):
    """Precision, recall and F1 against radius, one panel per descriptor × distance
    (the paper's Figures 5-7), the best radius marked: three lines and one
    marker line per panel."""
    panels = _panels(results, protocol)
    title = f"Precision, recall and F1 against radius (protocol {protocol})"
    if panels.empty:
        return message_figure(title, f"no benchmark of protocol '{protocol}'")
    colors = dict(zip(("precision", "recall", "f1"), sns.color_palette("deep", 3), strict=True))
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        figure, axes = _grid(len(panels), 4, 3.5, 2.7)
        for i, (ax, row) in enumerate(zip(axes, panels.itertuples(), strict=True)):
            curve = curves[
                (curves.descriptor == row.descriptor) & (curves.distance == row.distance)
            ]
            for metric, color in colors.items():
                ax.plot(curve["radius"], curve[metric], color=color, linewidth=1.4, label=metric)
            ax.axvline(row.radius, color="0.35", linestyle=":", linewidth=1.1, label="best radius")
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(
                f"{row.descriptor}\n{row.distance} · best F1 {row.f1:.3f} at r = {row.radius:.3g}",
                fontsize=8,
            )
            ax.set_xlabel(f"radius: {_distance_label(row.distance)}", fontsize=7)
            ax.set_ylabel("mean over queries (0-1)" if i % 4 == 0 else "", fontsize=7)
            ax.tick_params(labelsize=7)
        handles, labels = axes[0].get_legend_handles_labels()
        labels = [{"f1": "F1"}.get(label, label) for label in labels]
        figure.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
        figure.suptitle(title)
    return figure


def bar_columns(columns) -> list[str]:
    """The Table 4 columns Figure 4 shows: every variant but the strengths of a
    swept modification (the robustness figure has those); the paper's six (at
    their default strengths) and compositions stay."""
    from risbench import modify

    paper = {label: variant for variant, label in PAPER_COLUMNS.items()}
    single = {}  # column -> (modification, strength), single-step variants with a strength
    for column in columns:
        try:
            steps = modify.parse_variant(paper.get(column, column))
        except ValueError:  # the base images, or a name this version does not know
            continue
        if len(steps) == 1 and steps[0][1] is not None:
            single[column] = steps[0]
    strengths: dict[str, set[float]] = {}
    for mod, strength in single.values():
        strengths.setdefault(mod, set()).add(strength)
    return [c for c in columns if c in paper or c not in single or len(strengths[single[c][0]]) < 2]


def modification_bars_figure(table: pd.DataFrame):
    """Best F1 per single modification, grouped bars per descriptor × distance (the
    paper's Figure 4), descriptors best mean first: one bar container per shown
    variant (:func:`bar_columns`) in each panel; more than 12 descriptor rows
    are split over two panels side by side."""
    title = "Best F1 per modification (protocol single: base images indexed)"
    variants = bar_columns(
        [c for c in table.columns if c not in ("descriptor", "distance", "mean")]
    )
    if table.empty or not variants:
        return message_figure(title, "no single-modification protocol configured")
    labels = [_panel_name(d, m) for d, m in zip(table.descriptor, table.distance, strict=True)]
    long = (
        table.assign(label=labels)
        .melt(id_vars="label", value_vars=variants, var_name="modification", value_name="f1")
        .dropna(subset=["f1"])
    )
    palette = sns.color_palette("colorblind" if len(variants) <= 10 else "husl", len(variants))
    ncols = 1 if len(labels) <= 12 else 2
    per_panel = math.ceil(len(labels) / ncols)
    height = 1.0 + per_panel * (0.07 * len(variants) + 0.12)
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        figure, axes = _grid(ncols, ncols, 7.2, max(3.0, height))
        for i, ax in enumerate(axes):
            chunk = labels[i * per_panel : (i + 1) * per_panel]
            sns.barplot(
                data=long[long["label"].isin(chunk)],
                y="label",
                x="f1",
                hue="modification",
                hue_order=variants,
                order=chunk,
                orient="h",
                palette=palette,
                width=0.85,
                ax=ax,
            )
            ax.set_xlim(0, 1)
            ax.set_xlabel("best F1 over the radius grid (0-1)")
            ax.set_ylabel("descriptor · distance" if i == 0 else "")
            ax.tick_params(axis="y", labelsize=8)
            for y in range(1, len(chunk)):
                ax.axhline(y - 0.5, color="0.85", linewidth=0.6)
            handles, names = ax.get_legend_handles_labels()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        figure.legend(
            handles,
            names,
            title="modification",
            loc="outside lower center",
            ncols=min(len(variants), 8),
            frameon=False,
        )
        figure.suptitle(title)
    return figure


def _histogram_edges(radius: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges of a histogram given by its grid: ``bins + 1`` radii are the edges;
    ``bins`` radii are each bin's upper edge (bin i holds (r[i-1], r[i]])."""
    if len(radius) == bins + 1:
        return radius
    step = radius[1] - radius[0] if len(radius) > 1 else 1.0
    return np.concatenate([[radius[0] - step], radius])


def distance_histogram_figure(results: pd.DataFrame, protocol: str | None = "all"):
    """Distances of similar against dissimilar pairs, one panel per descriptor ×
    distance: two step histograms (each normalised to its own pair count) and
    the best radius; panels without a histogram say so."""
    panels = _panels(results, protocol)
    title = f"Distances of similar and dissimilar pairs (protocol {protocol})"
    if panels.empty or panels["histogram"].isna().all():
        return message_figure(title, "the benchmark wrote no distance histograms")
    colors = {"similar": sns.color_palette("deep")[2], "dissimilar": sns.color_palette("deep")[3]}
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        figure, axes = _grid(len(panels), 4, 3.5, 2.5)
        for i, (ax, row) in enumerate(zip(axes, panels.itertuples(), strict=True)):
            ax.set_title(f"{row.descriptor}\n{row.distance}", fontsize=8)
            ax.set_xlabel(_distance_label(row.distance), fontsize=7)
            ax.set_ylabel("share of pairs per bin" if i % 4 == 0 else "", fontsize=7)
            ax.tick_params(labelsize=7)
            histogram = row.histogram
            if not histogram:
                ax.text(0.5, 0.5, "no histogram", ha="center", va="center", transform=ax.transAxes)
                continue
            radius = np.asarray(histogram["radius"], dtype=float)
            last = 0
            for pairs, color in colors.items():
                counts = np.asarray(histogram.get(pairs, []), dtype=float)
                if counts.size == 0:
                    continue
                edges = _histogram_edges(radius, counts.size)
                share = counts / counts.sum() if counts.sum() else counts
                ax.stairs(share, edges, fill=True, alpha=0.45, color=color, label=f"{pairs} pairs")
                nonzero = np.flatnonzero(counts)
                last = max(last, nonzero[-1] + 1 if nonzero.size else 0)
            if last:
                edges = _histogram_edges(radius, len(radius))
                ax.set_xlim(edges[0], edges[min(last + 1, len(edges) - 1)])
            ax.axvline(row.radius, color="0.2", linestyle=":", linewidth=1.1, label="best radius")
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=color, alpha=0.45) for color in colors.values()
        ]
        handles.append(Line2D([], [], color="0.2", linestyle=":", linewidth=1.1))
        figure.legend(
            handles,
            ["similar pairs (same base image)", "dissimilar pairs", "best radius"],
            loc="outside lower center",
            ncols=3,
            frameon=False,
        )
        figure.suptitle(title)
    return figure


def _strength_label(modification: str) -> str:
    from risbench import modify

    unit = modify.MODIFICATIONS[modification].unit if modification in modify.MODIFICATIONS else ""
    return f"{modification} strength ({unit})" if unit else f"{modification} strength"


def robustness_figure(curves: pd.DataFrame):
    """Best F1 against modification strength: one panel per swept modification, one
    line per descriptor × distance (colour: descriptor, dash: distance)."""
    title = "Robustness: best F1 against modification strength (protocol single)"
    if curves.empty:
        return message_figure(title, "no strength sweep configured (config: sweeps)")
    modifications = list(dict.fromkeys(curves["modification"]))
    descriptors = sorted(curves["descriptor"].unique())
    distances = sorted(curves["distance"].unique())
    palette = sns.color_palette("tab10" if len(descriptors) <= 10 else "tab20", len(descriptors))
    if len(descriptors) > 20:
        palette = sns.color_palette("husl", len(descriptors))
    color = dict(zip(descriptors, palette, strict=True))
    dash = {d: LINESTYLES[i % len(LINESTYLES)] for i, d in enumerate(distances)}
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        ncols = min(2, len(modifications))
        lines = len(curves[["descriptor", "distance"]].drop_duplicates())
        legend_height = 0.6 + 0.16 * math.ceil(lines / 3)
        figure, axes = _grid(len(modifications), ncols, 10.4 / ncols, 3.6, legend_height)
        for i, (ax, mod) in enumerate(zip(axes, modifications, strict=True)):
            panel = curves[curves.modification == mod]
            for (descriptor, distance), line in panel.groupby(["descriptor", "distance"]):
                ax.plot(
                    line["strength"],
                    line["f1"],
                    color=color[descriptor],
                    linestyle=dash[distance],
                    marker="o",
                    markersize=3.5,
                    linewidth=1.3,
                    label=_panel_name(descriptor, distance),
                )
            ticks = sorted(panel["strength"].unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(mod)
            ax.set_xlabel(_strength_label(mod))
            ax.set_ylabel("best F1 (0-1)" if i % 2 == 0 else "")
        handles, labels = [], []
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
        order = sorted(range(len(labels)), key=labels.__getitem__)
        figure.legend(
            [handles[k] for k in order],
            [labels[k] for k in order],
            title="descriptor · distance",
            loc="outside lower center",
            ncols=3,
            fontsize=7,
            frameon=False,
        )
        figure.suptitle(title)
    return figure


def example_images(images: pd.DataFrame) -> pd.DataFrame:
    """The first base image (catalog order) and its modified versions, in catalog order."""
    bases = images[images["role"] == "base"].sort_values("row")
    if bases.empty:
        return images.iloc[0:0]
    group = bases["group"].iloc[0]
    rows = images[(images["group"] == group) & (images["role"] != "distractor")]
    return rows.sort_values("row", ignore_index=True)


def examples_figure(images: pd.DataFrame, max_side: int = 480):
    """A sheet of one base photo and its modified versions, titled by variant and
    size, drawn at a common pixel scale (a resized image looks smaller)."""
    from PIL import Image

    title = "Example: one base photo and its modified versions"
    shown = []
    for row in example_images(images).itertuples():
        if Path(row.path).exists():
            with Image.open(row.path) as image:
                shown.append((row, image.size, image.convert("RGB")))
    if not shown:
        return message_figure(title, "no base image found in the catalog")
    width = max(size[0] for _, size, _ in shown)
    height = max(size[1] for _, size, _ in shown)
    scale = min(1.0, max_side / max(width, height))
    ncols = min(4, len(shown))
    panel_w = 3.2
    panel_h = panel_w * height / width + 0.5
    figure, axes = _grid(len(shown), ncols, panel_w, panel_h)
    for ax, (row, (w, h), image) in zip(axes, shown, strict=True):
        image.thumbnail((max(1, round(w * scale)), max(1, round(h * scale))))
        ax.imshow(np.asarray(image), extent=(0, w, h, 0), interpolation="lanczos")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        ax.set_title(f"{row.variant}\n{w} × {h} px", fontsize=9)
    figure.suptitle(f"{title}: {shown[0][0].image_id}")
    return figure


def save_figure(figure, path: Path) -> None:
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


# --------------------------------------------------------------------------------------
# entry point

TABLES = ("table3_all", "table4_single", "distances", "ranked", "timing")
FIGURES = ("prf_radius", "f1_by_modification", "distance_histograms", "examples")


def benchmark_paths(benchmark_dir: str | Path, protocols, pairs) -> list[Path]:
    """The stats files of every protocol × ``descriptor__distance`` pair (the
    workflow runs the full cross product): ``{dir}/{protocol}/{pair}.json``."""
    return [
        Path(benchmark_dir) / protocol / f"{pair}.json" for protocol in protocols for pair in pairs
    ]


def select_timings(paths, results: pd.DataFrame, variants=None) -> list[Path]:
    """The timing files of this run's jobs among ``paths``: a timings folder may
    also hold files of jobs that an earlier config ran (a removed hash, model,
    variant or protocol). ``variants`` (None: any) are the run's image variants;
    an ``extract`` file is the run's when one of its descriptors starts with the
    model's name."""
    jobs = set(zip(results["protocol"], results["descriptor"], results["distance"], strict=True))
    descriptors = set(results["descriptor"])
    kept = []
    for path in paths:
        job = parse_timing_path(path)
        variant_ok = variants is None or job["variant"] in variants
        if job["stage"] == "benchmark":
            ok = (job["protocol"], job["descriptor"], job["distance"]) in jobs
        elif job["stage"] == "hash":
            ok = variant_ok and job["descriptor"] in descriptors
        elif job["stage"] == "extract":
            ok = variant_ok and any(d.startswith(f"{job['descriptor']}_") for d in descriptors)
        elif job["stage"] == "modify":
            ok = variant_ok
        else:
            ok = True
        if ok:
            kept.append(Path(path))
    return kept


def summarize(
    stats_paths=(),
    *,
    tables_dir: str | Path,
    figures_dir: str | Path,
    benchmark_dir: str | Path | None = None,
    protocols=(),
    pairs=(),
    timings=(),
    timings_dir: str | Path | None = None,
    images: str | Path | None = None,
    robustness: bool = False,
) -> None:
    """Writes every table (``{name}.csv`` and ``.md``) and figure (``{name}.png``).

    The benchmark stats are ``stats_paths`` plus, with ``benchmark_dir``, those
    of every protocol × pair (:func:`benchmark_paths`; a command line that names
    each file can outgrow the kernel's limit on one argument). Timings are the
    files ``timings`` plus, with ``timings_dir``, the ``*.tsv`` under it that
    belong to this run (:func:`select_timings`).

    Tables: :data:`TABLES`; figures: :data:`FIGURES` (``examples`` only with
    ``images``, the catalog) and ``robustness`` when asked for (the workflow
    asks when the config runs a modification at two or more strengths).
    """
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    stats_paths = list(stats_paths)
    if benchmark_dir is not None:
        stats_paths += benchmark_paths(benchmark_dir, protocols, pairs)
    results = load_results(stats_paths)
    catalog = pd.read_parquet(images) if images is not None else None
    timings = list(timings)
    if timings_dir is not None:
        variants = set(catalog["variant"]) if catalog is not None else None
        found = sorted(Path(timings_dir).rglob("*.tsv"))
        given = {str(path) for path in timings}
        timings += [p for p in select_timings(found, results, variants) if str(p) not in given]
    protocol = main_protocol(results)
    table4_single = table4(results)
    tables = {
        "table3_all": table3(results),
        "table4_single": table4_single,
        "distances": distance_table(results, protocol),
        "ranked": ranked_table(results),
        "timing": timing_table(load_timings(timings)),
    }
    for name, table in tables.items():
        table.to_csv(tables_dir / f"{name}.csv", index=False)
        (tables_dir / f"{name}.md").write_text(to_markdown(table))
    figures = {
        "prf_radius": lambda: prf_radius_figure(results, load_curves(results, protocol), protocol),
        "f1_by_modification": lambda: modification_bars_figure(table4_single),
        "distance_histograms": lambda: distance_histogram_figure(results, protocol),
    }
    if catalog is not None:
        figures["examples"] = lambda: examples_figure(catalog)
    if robustness:
        figures["robustness"] = lambda: robustness_figure(strength_curves(results))
    for name, draw in figures.items():
        save_figure(draw(), figures_dir / f"{name}.png")
