"""The paper's tables and figures from benchmark outputs.

Input: the stats JSON of each benchmark job (best radius and its P/R/F1,
descriptor size) and, beside it, the per-radius table (parquet).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

# The paper's column names for its six modifications (Table 4).
PAPER_COLUMNS = {
    "original": "Base",
    "blur": "Blur",
    "gray": "Gray",
    "resize": "Resize",
    "jpeg": "Compr",
    "rotate": "Rotate",
    "crop": "Crop",
}


def load_results(stats_paths: list[str | Path]) -> pd.DataFrame:
    """One row per benchmark job: protocol, descriptor, distance, size and best radius."""
    rows = []
    for path in stats_paths:
        stats = json.loads(Path(path).read_text())
        best = stats["best"]
        rows.append(
            {
                "protocol": stats["protocol"],
                "descriptor": stats["descriptor"],
                "distance": stats["distance"],
                "kind": stats["kind"],
                "dimensions": stats["dim"],
                "bytes_per_image": stats["bytes_per_image"],
                "radius": best["radius"],
                "precision": best["precision"],
                "recall": best["recall"],
                "f1": best["f1"],
                "table": str(Path(path).with_suffix(".parquet")),
            }
        )
    return pd.DataFrame(rows)


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


def table4(results: pd.DataFrame) -> pd.DataFrame:
    """Best F1 per single modification: one row per descriptor and distance."""
    rows = results[results["protocol"].str.startswith("single-")].copy()
    rows["variant"] = rows["protocol"].str.removeprefix("single-")
    order = list(dict.fromkeys(rows["variant"]))
    wide = rows.pivot_table(
        index=["descriptor", "distance"], columns="variant", values="f1", aggfunc="first"
    )
    wide = wide[order].rename(columns=lambda v: PAPER_COLUMNS.get(v, v))
    wide.columns.name = None
    wide["mean"] = wide.mean(axis=1)
    return wide.sort_values(["mean"], ascending=False).reset_index()


def to_markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".4f") + "\n"


def prf_radius_figure(results: pd.DataFrame, path: Path) -> None:
    """Precision, recall and F1 against radius, one panel per descriptor x distance
    (the paper's Figures 5-7), the best radius marked."""
    rows = results[results["protocol"] == "all"].sort_values(["descriptor", "distance"])
    curves = []
    for row in rows.itertuples():
        sweep = pd.read_parquet(row.table)
        long = sweep.melt(
            id_vars="radius", value_vars=["precision", "recall", "f1"], var_name="metric"
        )
        long["panel"] = f"{row.descriptor} · {row.distance}"
        curves.append(long)
    data = pd.concat(curves, ignore_index=True)
    grid = sns.relplot(
        data=data,
        x="radius",
        y="value",
        hue="metric",
        col="panel",
        col_wrap=min(4, len(rows)),
        kind="line",
        height=2.6,
        aspect=1.3,
        facet_kws={"sharex": False},
    )
    for ax, row in zip(grid.axes.flat, rows.itertuples(), strict=False):
        ax.axvline(row.radius, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{row.descriptor} · {row.distance}\nbest F1 {row.f1:.3f} at r={row.radius:.3g}")
    grid.set_axis_labels("radius (normalised distance)", "mean over queries")
    grid.figure.suptitle("Precision, recall and F1 against radius (all modifications)", y=1.02)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)


def summarize(stats_paths, *, tables_dir: Path, figures_dir: Path, timings=()) -> None:
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(stats_paths)
    for name, table in (("table3_all", table3(results)), ("table4_single", table4(results))):
        table.to_csv(tables_dir / f"{name}.csv", index=False)
        (tables_dir / f"{name}.md").write_text(to_markdown(table))
    prf_radius_figure(results, figures_dir / "prf_radius.png")
