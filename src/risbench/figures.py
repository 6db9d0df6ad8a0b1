"""The summary's figures, each a matplotlib Figure (tests inspect it before it is saved).

Figure functions take the DataFrames of :mod:`risbench.report` (the results,
the per-radius curves, Table 4, the strength curves, the catalog) and draw
them; a figure with nothing to draw says why in a one-panel message figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from risbench.results import PAPER_COLUMNS, strength_sweeps  # noqa: E402

# What a radius means for each distance (x axes).
DISTANCE_UNITS = {
    "hamming": "Hamming distance (fraction of bits)",
    "rv": "RV distance (1 − peak correlation)",
    "cosine": "cosine distance (1 − cos θ)",
    "angular": "angular distance (θ / π)",
    "euclidean": "Euclidean distance (descriptor units)",
}

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
    variants = {label: variant for variant, label in PAPER_COLUMNS.items()}
    swept = {
        variant
        for points in strength_sweeps(variants.get(c, c) for c in columns).values()
        for variant in points
    }
    return [c for c in columns if c in variants or c not in swept]


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


def _histogram_panel(ax, row, colors: dict) -> None:
    """One panel of :func:`distance_histogram_figure`: each kind's grid bins, then
    its pairs beyond the grid as one hatched bin from the last radius to the
    largest distance seen (as a share per grid step, like the others), the x
    range from the first bin to the largest distance of either kind."""
    histogram, stats = row.histogram, row.distances or {}
    radius = np.asarray(histogram["radius"], dtype=float)
    edges = _histogram_edges(radius, len(radius))
    step = edges[-1] - edges[-2] if len(edges) > 1 else 1.0
    right, beyond = edges[0], {}
    for pairs, color in colors.items():
        counts = np.asarray(histogram.get(pairs, []), dtype=float)
        own = stats.get(pairs) or {}
        outside = int(own.get("beyond_grid") or 0)
        total = counts.sum() + outside
        if counts.size == 0 or total == 0:
            continue
        ax.stairs(counts / total, edges, fill=True, alpha=0.45, color=color)
        nonzero = np.flatnonzero(counts)
        if nonzero.size:
            right = max(right, edges[nonzero[-1] + 1])
        if own.get("max") is not None:
            right = max(right, float(own["max"]))
        if outside:
            beyond[pairs] = outside
            top = max(float(own.get("max") or edges[-1] + step), edges[-1] + step)
            share = outside / total * step / (top - edges[-1])
            ax.stairs([share], [edges[-1], top], fill=False, hatch="///", color=color)
            right = max(right, top)
    ax.set_xlim(edges[0], right if right > edges[0] else edges[-1])
    if beyond:
        counts = ", ".join(f"{pairs} {n}" for pairs, n in beyond.items())
        label = f"beyond grid (r > {edges[-1]:.3g}):\n{counts}"
        ax.text(0.98, 0.97, label, ha="right", va="top", fontsize=6, transform=ax.transAxes)
    ax.axvline(row.radius, color="0.2", linestyle=":", linewidth=1.1)


def distance_histogram_figure(results: pd.DataFrame, protocol: str | None = "all"):
    """Distances of similar against dissimilar pairs, one panel per descriptor ×
    distance (:func:`_histogram_panel`): two step histograms over the whole
    range of distances seen (each kind a share of its own pair count, pairs
    beyond the radius grid hatched and counted) and the best radius; panels
    without a histogram say so."""
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
            ax.set_ylabel("share of pairs per grid step" if i % 4 == 0 else "", fontsize=7)
            ax.tick_params(labelsize=7)
            if not row.histogram:
                ax.text(0.5, 0.5, "no histogram", ha="center", va="center", transform=ax.transAxes)
                continue
            _histogram_panel(ax, row, colors)
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=color, alpha=0.45) for color in colors.values()
        ]
        handles.append(plt.Rectangle((0, 0), 1, 1, fill=False, hatch="///", color="0.3"))
        handles.append(Line2D([], [], color="0.2", linestyle=":", linewidth=1.1))
        figure.legend(
            handles,
            [
                "similar pairs (same base image)",
                "dissimilar pairs",
                "beyond the radius grid",
                "best radius",
            ],
            loc="outside lower center",
            ncols=4,
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
# operating points and failures (issue 12)


def pooled_pr(counts: pd.DataFrame) -> pd.DataFrame:
    """Pooled precision tp / (tp + fp) and recall tp / (tp + fn) of per-radius
    counts (the operating points' definition, :mod:`risbench.operating`); radii
    that retrieve nothing or have nothing relevant are left out."""
    retrieved, relevant = counts["tp"] + counts["fp"], counts["tp"] + counts["fn"]
    keep = (retrieved > 0) & (relevant > 0)
    return pd.DataFrame(
        {
            "precision": counts["tp"][keep] / retrieved[keep],
            "recall": counts["tp"][keep] / relevant[keep],
        }
    )


def pr_curve_figure(results: pd.DataFrame, counts: pd.DataFrame, protocol: str | None = "all"):
    """Precision against recall, pooled over pairs, as the radius grows: one panel
    per distance, one line per descriptor (colour), each reached operating point
    marked; beside :func:`prf_radius_figure`, which plots per-query means."""
    panels = _panels(results, protocol)
    title = f"Precision-recall curves, pooled over pairs (protocol {protocol})"
    if panels.empty:
        return message_figure(title, f"no benchmark of protocol '{protocol}'")
    distances = list(dict.fromkeys(d for d in DISTANCE_UNITS if d in set(panels.distance)))
    distances += sorted(set(panels.distance) - set(distances))
    descriptors = sorted(panels["descriptor"].unique())
    palette = sns.color_palette("tab10" if len(descriptors) <= 10 else "husl", len(descriptors))
    color = dict(zip(descriptors, palette, strict=True))
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        legend_height = 0.5 + 0.16 * math.ceil(len(descriptors) / 3)
        figure, axes = _grid(len(distances), 3, 3.8, 3.4, legend_height)
        for ax, distance in zip(axes, distances, strict=True):
            for row in panels[panels.distance == distance].itertuples():
                mine = counts[(counts.descriptor == row.descriptor) & (counts.distance == distance)]
                curve = pooled_pr(mine)
                ax.plot(curve["recall"], curve["precision"], color=color[row.descriptor],
                        linewidth=1.3, label=row.descriptor)  # fmt: skip
                points = [p for p in row.operating_points or () if p["reached"]]
                ax.scatter([p["recall"] for p in points], [p["precision"] for p in points],
                           color=color[row.descriptor], marker="o", s=14, zorder=3)  # fmt: skip
            ax.set_xlim(-0.03, 1.03)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(distance, fontsize=9)
            ax.set_xlabel("recall (tp / (tp + fn))", fontsize=7)
            ax.set_ylabel("precision (tp / (tp + fp))", fontsize=7)
            ax.tick_params(labelsize=7)
        handles = [Line2D([], [], color=color[d], linewidth=1.3) for d in descriptors]
        handles.append(Line2D([], [], color="0.3", marker="o", linestyle="none", markersize=4))
        figure.legend(
            handles,
            [*descriptors, "operating point (recall at a target precision)"],
            loc="outside lower center",
            ncols=3,
            fontsize=7,
            frameon=False,
        )
        figure.suptitle(title)
    return figure


def thumbnail(path, side: int = 256):
    """An RGB thumbnail at most ``side`` pixels a side (decoded at a reduced scale
    where the format allows: JPEG's ``draft``), or None when the file is missing."""
    from PIL import Image

    if not isinstance(path, str) or not Path(path).exists():
        return None
    with Image.open(path) as image:
        image.draft("RGB", (side, side))
        image = image.convert("RGB")
        image.thumbnail((side, side))
        return np.asarray(image)


def failure_gallery_figure(rows: pd.DataFrame, side: int = 256):
    """The hardest queries of the best float descriptor and the best hash
    (:func:`risbench.failures.gallery_rows`): per query one row of thumbnails,
    the query, its original and its closest false match, with their distances
    and whether the query missed at the best radius. At most ``side`` pixels a
    thumbnail, one row decoded at a time."""
    title = "Hardest queries: query, its original, its closest false match"
    if rows.empty:
        return message_figure(title, "no per-query outcomes to show")
    figure, axes = _grid(3 * len(rows), 3, 2.6, 2.5)
    for i, row in enumerate(rows.itertuples()):
        verdict = "missed" if row.missed else "found"
        cells = (
            (row.query_path, f"{row.descriptor} · {row.distance}\n{row.image_id} ({row.variant})"),
            (row.original_path, f"original · d = {row.nearest_relevant_distance:.3g}\n"
             f"{verdict} at r = {row.radius:.3g}"),
            (row.false_match_path, f"closest false match · d = "
             f"{row.nearest_nonrelevant_distance:.3g}\n{row.nearest_nonrelevant_image_id}"),
        )  # fmt: skip
        for ax, (path, label) in zip(axes[3 * i : 3 * i + 3], cells, strict=True):
            image = thumbnail(path, side)
            if image is None:
                ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(image)
            ax.set_axis_off()
            ax.set_title(label, fontsize=7)
    figure.suptitle(title)
    return figure


FAMILY_MARKERS = {"hash": "s", "features": "o", "compact": "^"}


def bytes_f1_figure(table: pd.DataFrame, protocol: str | None = "all"):
    """Best F1 (the main protocol) against bytes per image (log x), one marker shape a
    family (hashes, CNN features, compact codes), the Pareto front as a step line
    through its points, each labelled."""
    title = f"Best F1 against bytes per image (protocol {protocol})"
    if table.empty:
        return message_figure(title, f"no benchmark of protocol {protocol}")
    with sns.axes_style(STYLE["style"]), sns.plotting_context(STYLE["context"]):
        figure, ax = plt.subplots(figsize=(8, 5), layout="constrained")
        palette = sns.color_palette("deep", len(FAMILY_MARKERS))
        for (family, marker), color in zip(FAMILY_MARKERS.items(), palette, strict=True):
            rows = table[table["family"] == family]
            if not rows.empty:
                ax.scatter(
                    rows["bytes_per_image"],
                    rows["f1"],
                    marker=marker,
                    color=color,
                    s=36,
                    alpha=0.8,
                    label=family,
                )
        front = table[table["pareto"]].sort_values("bytes_per_image")
        ax.step(
            front["bytes_per_image"],
            front["f1"],
            where="post",
            color="0.2",
            linewidth=1,
            linestyle="--",
            label="Pareto front",
        )
        _label_front(ax, front)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per image (log scale)")
        ax.set_ylabel("best F1")
        ax.legend(loc="lower right", frameon=False)
        ax.set_title(title)
    return figure


def _label_front(ax, front: pd.DataFrame) -> None:
    """Names each point of the Pareto front once (ties at one point: the first
    name and how many more), left of the point in the right half of the plot so
    that no name runs off it, alternately below and above."""
    points = front.groupby(["bytes_per_image", "f1"], sort=True)
    right = math.sqrt(front["bytes_per_image"].min() * front["bytes_per_image"].max())
    for i, ((size, f1), rows) in enumerate(points):
        first = rows.iloc[0]
        text = f"{first['descriptor']} ({first['distance']})"
        if len(rows) > 1:
            text += f" +{len(rows) - 1} tied"
        left = size > right
        ax.annotate(
            text,
            (size, f1),
            xytext=(-4 if left else 4, 6 if i % 2 else -10),
            textcoords="offset points",
            ha="right" if left else "left",
            fontsize=6,
        )
