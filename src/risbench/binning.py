"""Binning kernels of the radius sweep: distances to grid bins, bins to counts.

A pair is retrieved at radius r exactly when the computed distance d satisfies
d ≤ r, with d as the kernel computes it (float32 for cosine, angular and
euclidean, float64 for rv, integer bit counts for hamming). :class:`Binner`
maps each distance to its bin, the index of the first grid radius that
retrieves it, exactly:

- default grids have a power-of-two step, so d / step is exact in floating
  point and the bin is ceil(d / step), no correction needed ("dyadic");
- other evenly spaced grids estimate ceil(d / step) and correct it by one
  comparison each way against the radii rounded down to the distance's dtype
  ("uniform");
- any other increasing grid uses a binary search on those radii ("search");
- hamming compares integer bit counts c: radius r retrieves c exactly when
  c ≤ floor(r·bits + 1e-9) (the 1e-9 absorbs the rounding of r·bits, so that a
  grid value k/bits retrieves distance k/bits); a lookup table maps every count
  to its bin ("lut").

The counters turn bins into (rows, R+1) cumulative counts (how many pairs of
each row are retrieved at each radius). On the CPU that is
:func:`count_rows`, a fused numba kernel (:mod:`risbench.cpukernels`) that
bins each row while it is in cache, with the same operations in the same
dtype as :class:`Binner`, and sums it and finds its maximum in the same pass
(given a :class:`risbench.distance.RowFinish`, it first makes the row's
distances: products to distances, or XOR + popcount);
on the GPU an offset bincount of the Binner's bins (:func:`cum_bincount`).
Both are exact and agree (``tests/test_metrics.py``).
"""

from __future__ import annotations

import math

import numpy as np

from risbench import cpukernels
from risbench import distance as dist

# Upper bound of each distance (None: unbounded), used to size the bin dtype.
DISTANCE_BOUND = {"hamming": 1.0, "rv": 1.0, "cosine": 2.0, "angular": 1.0, "euclidean": None}
HAMMING_EPS = 1e-9


def is_power_of_two(x: float) -> bool:
    mantissa, _ = math.frexp(x)
    return x > 0 and mantissa == 0.5


def down_to(radii: np.ndarray, dtype) -> np.ndarray:
    """The largest value of ``dtype`` ≤ each radius: d ≤ r ⟺ d ≤ that value for d
    of that dtype."""
    t = radii.astype(dtype)
    over = t.astype(np.float64) > radii
    t[over] = np.nextafter(t[over], dtype(-np.inf))
    return t


def uniform_step(radii: np.ndarray) -> float | None:
    """The step of an evenly spaced grid from 0 (to 1e-6 of a step), else None."""
    R = len(radii) - 1
    step = radii[1] - radii[0] if R >= 1 else 0.0
    uniform = (
        R >= 1
        and radii[0] == 0
        and step > 0
        and np.all(np.abs(radii - np.arange(R + 1) * step) <= 1e-6 * step)
        and R < 2**22
    )
    return float(step) if uniform else None


class Binner:
    """Maps a raw distance tile to bin indices: bin = the index of the first
    radius that retrieves the pair (len(radii) or more: beyond the grid).

    ``limit[j]`` is the largest raw value retrieved at radius j (``limit[R+1]``:
    none), so that bin ≤ j ⟺ raw ≤ limit[j]."""

    def __init__(self, radii: np.ndarray, distance: str, bits: int | None, xp):
        self.xp = xp
        self.R = len(radii) - 1
        self.raw = np.dtype(dist.raw_dtype(distance, bits))
        if distance == "hamming":
            self._init_lut(radii, bits)
        else:
            self._init_float(radii, DISTANCE_BOUND[distance])

    def _init_lut(self, radii: np.ndarray, bits: int) -> None:
        xp, R = self.xp, self.R
        thresholds = np.floor(radii * bits + HAMMING_EPS)
        lut = np.searchsorted(thresholds, np.arange(bits + 1), side="left")
        self.mode = "lut"
        self.dtype = np.int16 if R + 2 < 2**15 - 1 else np.int32
        self.lut = xp.asarray(lut.astype(self.dtype))
        # the fused CPU counter: pairs at radius j = counts ≤ upto[j] (0..bits)
        self.top = bits
        self.upto = np.minimum(thresholds, bits).astype(np.int64)
        self.clamp = False
        self.limit = xp.asarray(np.append(thresholds, -1).astype(np.int64))

    def _init_float(self, radii: np.ndarray, bound: float | None) -> None:
        xp, R, raw = self.xp, self.R, self.raw
        t = down_to(radii, raw.type)  # the radii as the raw dtype sees them
        step = uniform_step(radii)
        if step is not None and is_power_of_two(step):
            dyadic = np.array_equal(radii, np.arange(R + 1) * step)
        else:
            dyadic = False
        if dyadic:
            self.mode = "dyadic"
            self.scale = raw.type(1 / step)
        elif step is not None:
            self.mode = "uniform"
            self.scale = raw.type(1 / step)
            ext = np.concatenate([[-np.inf], t, [np.inf]]).astype(raw)
            self.hi = xp.asarray(ext[1:])  # hi[k] = t_k (t_{R+1} = +inf)
            self.lo = xp.asarray(ext[:-1])  # lo[k] = t_{k-1} (t_{-1} = -inf)
        else:
            self.mode = "search"
        self.thr = xp.asarray(t)  # bin = the first j with d ≤ thr[j]
        top = 2**15 - 2 if R + 2 < 2**15 - 2 else 2**31 - 2
        self.dtype = np.int16 if top < 2**15 else np.int32
        self.limit = xp.asarray(np.append(t, -np.inf).astype(raw))
        # Distances are bounded for all but euclidean: skip the clamp when the
        # largest possible bin fits the bin dtype (bins above R count as beyond).
        fits = bound is not None and self.mode != "search"
        fits = fits and bound * (1 + 1e-6) * float(self.scale) + 2 < top
        self.clamp = self.mode != "search" and not fits

    def bins(self, x):
        """Bins of a (small) array of raw distances, as int64."""
        out = self.xp.empty(x.shape, dtype=self.dtype)
        scratch = None if self.mode == "lut" else self.xp.empty(x.shape, dtype=self.raw)
        return self(x, out, scratch).astype(np.int64)

    def __call__(self, x, out, scratch):
        """Bins of ``x`` into ``out`` (the bin dtype); ``scratch``: a buffer of
        ``x``'s shape in the raw dtype (unused by the lookup table)."""
        xp = self.xp
        if self.mode == "lut":
            if dist.is_numpy(xp):
                np.take(self.lut, x, out=out, mode="clip")
            else:
                out[...] = self.lut[x]
            return out
        if self.mode == "search":
            out[...] = xp.searchsorted(self.thr, x.ravel(), side="left").reshape(x.shape)
            return out
        u = scratch
        xp.multiply(x, self.scale, out=u)
        if self.clamp:
            xp.minimum(u, self.raw.type(self.R + 1), out=u)
        if self.mode == "dyadic":
            if dist.is_numpy(xp):
                np.ceil(u, out=out, casting="unsafe")
            else:
                out[...] = xp.ceil(u)
            return out
        # uniform: estimate, then one correction each way (the estimate is off by ≤ 1)
        k = xp.ceil(u).astype(np.int32)
        xp.minimum(k, self.R + 1, out=k)
        k += x > self.hi[k]
        k -= x <= self.lo[k]
        out[...] = k
        return out


# --------------------------------------------------------------------------- counting


def bincount(xp, values, length: int):
    """``bincount`` of non-negative integers with exactly ``length`` bins (CuPy's
    refuses empty input)."""
    if values.size == 0:
        return xp.zeros(length, dtype=np.int64)
    return xp.bincount(values, minlength=length)[:length]


def first_at_least(cum, k, xp=np):
    """Per row, the first radius index j with cum[j] ≥ k (cum is non-decreasing
    along a row), or R + 1 when there is none."""
    reached = cum >= k
    j = xp.argmax(reached, axis=1)
    return xp.where(reached[:, -1], j, cum.shape[1])


def cum_bincount(b, R: int, xp=np):
    """(c, R+1) counts of bins ≤ j per row, from one offset bincount."""
    c, n = b.shape
    v = xp.minimum(b, R + 1).astype(np.int64)
    v += (xp.arange(c, dtype=np.int64) * (R + 2))[:, None]
    h = xp.bincount(v.ravel(), minlength=c * (R + 2)).reshape(c, R + 2)[:, : R + 1]
    return xp.cumsum(h, axis=1).astype(np.int32)


def count_rows(binner: Binner, x, cum, rowsum, rowmax, finish=None, pick=None):
    """The CPU counter: per row of the distance tile ``x``, the cumulative
    counts ``cum`` (rows, R+1; int32 or float64), the row's sum and its maximum
    (:func:`risbench.cpukernels.count_rows`; NumPy arrays only). ``finish``: a
    :class:`risbench.distance.RowFinish` when ``x`` still holds products;
    ``pick``: (k, limit, level) to pick each row's candidates too (returned)."""
    return cpukernels.count_rows(binner, x, cum, rowsum, rowmax, finish, pick)
