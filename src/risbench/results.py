"""Benchmark results: the one owner of their files and of what the summary makes.

- :class:`BenchmarkStats`: the stats JSON of one benchmark (protocol ×
  descriptor × distance): descriptor size, best radius, distance statistics,
  ranked metrics, distance histogram. The benchmark job writes it, the report
  and the screening read it; nothing else builds or parses that JSON.
- :class:`RunIndex`: what the benchmark job of one descriptor × distance wrote,
  per protocol its per-radius table and its stats. The summary finds every
  result through these indexes and knows no folder layout.
- :func:`summary_outputs`: the tables and figures the summary makes, decided
  by the config's variants and protocols (the workflow's targets and the
  summary command agree through it).

Cheap to import (the workflow imports it when it parses the Snakefile): no
NumPy, pandas or matplotlib at module level.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# The paper's column names for its six modifications (Table 4), in its order;
# the base images are the variant `original`.
PAPER_COLUMNS = {
    "original": "Base",
    "blur": "Blur",
    "gray": "Gray",
    "resize": "Resize",
    "jpeg": "Compr",
    "rotate": "Rotate",
    "crop": "Crop",
}

# Every summary writes these tables (``{name}.csv``, ``.md`` and ``.html``) and figures
# (``{name}.png``); ``robustness`` only when :func:`wants_robustness`.
TABLES = (
    "table3_all",
    "table4_single",
    "distances",
    "ranked",
    "timing",
    "operating_points",
    "thresholds",
    "failures",
    "bytes_f1",
)
FIGURES = (
    "prf_radius",
    "pr_curve",
    "f1_by_modification",
    "distance_histograms",
    "examples",
    "failure_gallery",
    "bytes_f1",
)
ROBUSTNESS = "robustness"
# Each table's copies: every value (CSV), rounded (Markdown; HTML, the report's).
TABLE_FORMATS = ("csv", "md", "html")

BEST_KEYS = ("radius", "precision", "recall", "f1")
# What a run index lists per protocol: "queries" is optional (screening jobs
# write no per-query outcomes).
RUN_KEYS = ("table", "stats", "queries")
# The columns of a benchmark's per-query outcomes (risbench.outcomes writes them):
# the query, its tp/fp/fn at the best radius, the 1-based rank of its first
# relevant image (the query itself left out; null: none), and its nearest
# relevant and nearest non-relevant index images (distance, image_id, variant).
QUERY_COLUMNS = (
    "image_id",
    "variant",
    "path",
    "tp",
    "fp",
    "fn",
    "first_relevant_rank",
    "nearest_relevant_distance",
    "nearest_relevant_image_id",
    "nearest_relevant_variant",
    "nearest_nonrelevant_distance",
    "nearest_nonrelevant_image_id",
    "nearest_nonrelevant_variant",
)
# One operating point of a stats file (risbench.operating makes them).
OPERATING_KEYS = ("target_precision", "reached", "radius", "precision", "recall", "tp", "fp", "fn")
SINGLE_PREFIX = "single-"


def run_index_path(descriptor: str, distance: str, results_dir: str | os.PathLike = "results"):
    """Where the workflow writes the run index of one descriptor × distance (the
    one owner of that layout: the rules, the index command and the API ask here)."""
    return os.path.join(results_dir, "benchmark", "runs", f"{descriptor}__{distance}.json")


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file and the key."""


def bytes_per_image(width: int, kind: str) -> int:
    """Bytes one image's descriptor takes in its store of ``width`` columns:
    float32 values are 4 bytes each; bit-packed codes (``binary``, ``rv``) are
    stored one byte per column."""
    return int(width) * (4 if kind == "float" else 1)


def protocol_variant(protocol: str) -> str | None:
    """The modification a ``single-{variant}`` protocol queries with; None for others."""
    return protocol.removeprefix(SINGLE_PREFIX) if protocol.startswith(SINGLE_PREFIX) else None


def _plain(value):
    """JSON for NumPy scalars and arrays (they have ``tolist``), without importing NumPy."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _read_json(path: str | Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such {what} file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not a {what} JSON file ({error})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: a {what} file holds one JSON object")
    return data


def _require(data: dict, keys, path, what: str, prefix: str = "") -> None:
    missing = [f"{prefix}{key}" for key in keys if key not in data]
    if missing:
        raise ResultsError(f"{path}: {what} lacks key(s) {', '.join(missing)}")


# --------------------------------------------------------------------------------------
# the stats of one benchmark


@dataclass
class BenchmarkStats:
    """One benchmark's summary; the JSON has these keys in this order.

    ``dim`` counts values (float) or bits (codes); ``bytes_per_image`` is the
    stored size (:func:`bytes_per_image`); ``best`` holds the radius with the
    best mean F1 and its radius, precision, recall, f1 (and fbeta, tp, fp, fn);
    ``distances``, ``ranked`` and ``histogram`` are the blocks of
    :class:`risbench.metrics.SweepResult` (empty when not computed);
    ``operating_points``: per target precision, the pooled recall and the
    radius that gives it (:func:`risbench.operating.operating_points`).
    """

    protocol: str
    descriptor: str
    distance: str
    kind: str
    dim: int
    bytes_per_image: int
    queries: int
    seconds: float
    best: dict
    distances: dict
    ranked: dict
    histogram: dict
    operating_points: list = field(default_factory=list)

    @classmethod
    def from_sweep(
        cls, result, *, protocol, descriptor, distance, kind, dim, width, seconds, targets=None
    ):
        """The stats of a :class:`risbench.metrics.SweepResult` of a descriptor of
        ``kind`` with ``dim`` values or bits, stored in ``width`` columns;
        ``targets``: the target precisions of the operating points (default
        :data:`risbench.operating.TARGET_PRECISIONS`)."""
        from risbench import operating  # lazily: NumPy, only where a sweep is

        if result.distance != distance:
            raise ValueError(f"a sweep of distance {result.distance!r} given as {distance!r}")
        targets = operating.TARGET_PRECISIONS if targets is None else targets
        points = operating.operating_points(result.radii, result.tp, result.fp, result.fn, targets)
        return cls(
            protocol=protocol,
            descriptor=descriptor,
            distance=distance,
            kind=kind,
            dim=int(dim),
            bytes_per_image=bytes_per_image(width, kind),
            queries=int(result.queries),
            seconds=float(seconds),
            best=result.best(),
            distances=result.distance_stats(),
            ranked=result.ranked(),
            histogram=result.histogram().to_dict(orient="list"),
            operating_points=points,
        )

    @property
    def variant(self) -> str | None:
        return protocol_variant(self.protocol)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=_plain)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> BenchmarkStats:
        data = _read_json(path, "benchmark stats")
        names = [field.name for field in fields(cls)]
        _require(data, names, path, "benchmark stats")
        if not isinstance(data["best"], dict):
            raise ResultsError(f"{path}: benchmark stats key 'best' is not an object")
        _require(data["best"], BEST_KEYS, path, "benchmark stats", prefix="best.")
        points = data["operating_points"]
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise ResultsError(f"{path}: benchmark stats key 'operating_points' is not a list")
        for i, point in enumerate(points):
            _require(point, OPERATING_KEYS, path, "benchmark stats", f"operating_points[{i}].")
        return cls(**{name: data[name] for name in names})


# --------------------------------------------------------------------------------------
# the index of one descriptor × distance's benchmarks


@dataclass
class RunIndex:
    """The outputs of the benchmark job of one descriptor × distance:
    ``protocols`` maps each protocol to ``{"table": path, "stats": path}`` and,
    where the job wrote them, ``"queries"``: its per-query outcomes
    (:mod:`risbench.outcomes`).

    In the file, paths are relative to the index's folder (so a moved results
    folder still reads); :meth:`read` turns them back into paths usable from
    the working directory.
    """

    descriptor: str
    distance: str
    protocols: dict[str, dict[str, str]]

    def stats_paths(self) -> list[str]:
        return [entry["stats"] for entry in self.protocols.values()]

    def write(self, path: str | Path) -> None:
        folder = Path(path).parent
        protocols = {
            protocol: {key: os.path.relpath(entry[key], folder) for key in RUN_KEYS if key in entry}
            for protocol, entry in self.protocols.items()
        }
        data = {"descriptor": self.descriptor, "distance": self.distance, "protocols": protocols}
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def read(cls, path: str | Path) -> RunIndex:
        data = _read_json(path, "run index")
        _require(data, ("descriptor", "distance", "protocols"), path, "run index")
        if not isinstance(data["protocols"], dict):
            raise ResultsError(f"{path}: run index key 'protocols' is not an object")
        folder = Path(path).parent
        protocols = {}
        for protocol, entry in data["protocols"].items():
            if not isinstance(entry, dict):
                raise ResultsError(f"{path}: run index key 'protocols.{protocol}' is not an object")
            _require(entry, ("table", "stats"), path, "run index", f"protocols.{protocol}.")
            protocols[protocol] = {
                key: os.path.normpath(os.path.join(folder, entry[key]))
                for key in RUN_KEYS
                if key in entry
            }
        return cls(data["descriptor"], data["distance"], protocols)


# --------------------------------------------------------------------------------------
# what the summary makes


def strength_sweeps(variants) -> dict[str, dict[str, float]]:
    """The modifications run at two or more strengths among ``variants``:
    modification → {variant: strength}, over single-step variants with a
    strength (the default strength included: ``rotate`` is rotate at 5°).
    Compositions, modifications without a strength and names that are not a
    modification (``original``) are no sweep."""
    from risbench import modify  # lazily: NumPy and Pillow, only when asked

    found: dict[str, dict[str, float]] = {}
    for variant in dict.fromkeys(variants):
        try:
            steps = modify.parse_variant(variant)
        except ValueError:
            continue
        if len(steps) == 1 and steps[0][1] is not None:
            found.setdefault(steps[0][0], {})[variant] = float(steps[0][1])
    return {mod: points for mod, points in found.items() if len(set(points.values())) > 1}


def wants_robustness(variants, protocols) -> bool:
    """Whether the summary draws the robustness figure: some modification runs
    at two or more strengths under the single protocol (``single-{variant}``)."""
    protocols = set(protocols)
    return bool(strength_sweeps(v for v in variants if f"{SINGLE_PREFIX}{v}" in protocols))


def summary_outputs(
    variants,
    protocols,
    *,
    tables_dir: str = "results/tables",
    figures_dir: str = "results/figures",
) -> list[str]:
    """Every file the summary writes for a config's ``variants`` and
    ``protocols``: each table as CSV, Markdown and HTML, then each figure."""
    figures = list(FIGURES)
    if wants_robustness(variants, protocols):
        figures.append(ROBUSTNESS)
    tables = [f"{tables_dir}/{name}.{ext}" for name in TABLES for ext in TABLE_FORMATS]
    return tables + [f"{figures_dir}/{name}.png" for name in figures]
