"""Operating points: the recall a benchmark reaches at a fixed precision, and the
radius that gives it (issue 12: perception's headline "recall at 99.9 %
precision", ISC2021's "recall at P90").

Read off the per-radius table of a sweep (its summed ``tp``, ``fp``, ``fn``); no
new sweep. Precision and recall here are **pooled over the (query, index)
pairs** — precision = tp / (tp + fp), recall = tp / (tp + fn) — as perception
and ISC2021 define them, not the per-query means of Table 3: a deployed radius
is judged by the share of all the matches it returns that are right, and a
per-query mean counts a query that retrieves nothing as precise.

For each target precision: among the radii that retrieve something and whose
pooled precision is at least the target, the one with the largest pooled
recall; at equal recall the smallest radius (equal recall is equal tp, so the
smallest such radius returns the fewest false matches). No such radius, or no
relevant pair at all: the target is *not reached* (``reached`` false, recall 0,
radius and precision None), never a made-up radius.
"""

from __future__ import annotations

import numpy as np

from risbench.results import OPERATING_KEYS as KEYS

# The default targets (config ``benchmark.target_precisions``; the schema's default
# is checked equal to this by tests/test_outcomes.py).
TARGET_PRECISIONS = (0.9, 0.99, 0.999)


def check_targets(targets) -> tuple[float, ...]:
    """The targets as floats, each in (0, 1], none repeated."""
    out = tuple(float(t) for t in targets)
    if not out:
        raise ValueError("target precisions: give at least one")
    bad = [t for t in out if not 0 < t <= 1]
    if bad:
        raise ValueError(f"target precisions must lie in (0, 1], not {bad}")
    if len(set(out)) != len(out):
        raise ValueError(f"target precisions repeat a value: {list(out)}")
    return out


def operating_points(radii, tp, fp, fn, targets=TARGET_PRECISIONS) -> list[dict]:
    """One record per target (in the order given) with the keys of :data:`KEYS`,
    from a per-radius table's ``radii`` (increasing) and summed ``tp``, ``fp``,
    ``fn``; see the module notes for the rule."""
    radii = np.asarray(radii, dtype=np.float64)
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    if not radii.shape == tp.shape == fp.shape == fn.shape or radii.ndim != 1:
        raise ValueError("radii, tp, fp and fn need one value per radius")
    retrieved, relevant = tp + fp, tp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(retrieved > 0, tp / retrieved, np.nan)
        recall = np.where(relevant > 0, tp / relevant, np.nan)
    points = []
    for target in check_targets(targets):
        ok = np.flatnonzero((retrieved > 0) & (relevant > 0) & (precision >= target))
        if ok.size == 0:
            points.append(_not_reached(target))
            continue
        i = int(ok[np.argmax(recall[ok])])  # argmax: the first, the smallest radius
        values = (radii[i], precision[i], recall[i], tp[i], fp[i], fn[i])
        points.append(_point(target, True, *values))
    return points


def _point(target, reached, radius, precision, recall, tp, fp, fn) -> dict:
    """A record of :data:`KEYS` in plain Python numbers."""

    def plain(value, kind):
        return None if value is None else kind(value)

    values = (
        float(target),
        bool(reached),
        plain(radius, float),
        plain(precision, float),
        float(recall),
        plain(tp, int),
        plain(fp, int),
        plain(fn, int),
    )
    return dict(zip(KEYS, values, strict=True))


def _not_reached(target: float) -> dict:
    return _point(target, False, None, None, 0.0, None, None, None)
