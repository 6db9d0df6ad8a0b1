"""Comparing pHash Radial Variance digests: ``ph_crosscorr`` and degenerate digests.

Apart from :mod:`risbench.phash`, which computes the digests, so that the
benchmark (which compares them) does not depend on how they are computed:
editing the hash code reruns the hash jobs, not every benchmark.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rv_degenerate", "rv_peak"]


def rv_degenerate(digest_rows: np.ndarray) -> np.ndarray:
    """Which RV digests are degenerate: constant (all 40 bytes equal), one bool per row.

    pHash returns the all-zero digest when a radon line samples no pixel (images taller
    than about 2.02x their width or wider than about 3.04x their height: phone screenshots,
    panoramas) and for images that are constant after the blur (zero variance). A constant
    digest has no correlation with anything, itself included: ``ph_crosscorr`` divides 0 by
    0 at every shift and its peak stays 0.
    """
    rows = np.asarray(digest_rows)
    if rows.ndim != 2 or rows.shape[1] != 40 or rows.dtype != np.uint8:
        raise ValueError(
            f"rv_degenerate: expected (rows, 40) uint8 digests, got {rows.dtype} {rows.shape}"
        )
    return (rows == rows[:, :1]).all(axis=1)


# --------------------------------------------------------------------------------------------
# RV cross-correlation (ph_crosscorr)

# _ROLL[d, j] = (j + d) mod 40: sum_i x[i] y[(i - d) mod 40] = sum_j x[(j + d) mod 40] y[j]
_ROLL = (np.arange(40)[None, :] + np.arange(40)[:, None]) % 40


def rv_peak(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``ph_crosscorr`` peaks for all pairs: a (q, 40), b (n, 40) uint8 -> (q, n) float64.

    The peak is the maximum over the 40 circular shifts of the Pearson correlation, floored
    at 0 (pHash's running maximum starts at 0; a constant digest gives 0).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 40)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 40)
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    bt = np.ascontiguousarray(bc.T)
    best = np.zeros((len(ac), len(bc)))
    buf = np.empty_like(best)
    for shift in _ROLL:  # one matrix product per shift; memory stays (q, n)
        np.matmul(ac[:, shift], bt, out=buf)
        np.maximum(best, buf, out=best)
    den = np.sqrt(np.einsum("qi,qi->q", ac, ac)[:, None] * np.einsum("ni,ni->n", bc, bc)[None])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, best / den, 0.0)
