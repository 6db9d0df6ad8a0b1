"""Compiled inner loops of :mod:`risbench.phash` (numba), each in pHash 0.9.6's exact order.

Every loop performs the same IEEE operations as the C++ code, one by one and in the same
order: products are rounded to their type before they are added, double accumulations
stay double until they are stored, casts truncate. Nothing here may reassociate or fuse
(no ``fastmath``: LLVM then neither reorders additions nor contracts a multiply and an
add into one FMA), so the outputs stay bit-identical to the NumPy formulation they
replace and to the golden pHash outputs (tests/test_phash.py checks both).

Speed comes from fusing what NumPy had to do in many passes over memory, and from
vectorising across independent lines (the recursion of the blur is sequential along a
line, so the inner loop runs over a chunk of lines at once).

Compiled on first use and cached on disk (``cache=True``: numba's ``__pycache__`` next to
this file, or its user-wide cache when that is not writable).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@nb.njit(**_JIT)
def _store(out, i, j, v, cast):
    """Store a double as CImg does: rounded to float, then (uint8 images) truncated to
    int32 and the low byte kept, as x86-64's cvttss2si and a narrowing store do."""
    f = np.float32(v)
    if cast:
        out[i, j] = np.uint8(np.int32(f) & 0xFF)
    else:
        out[i, j] = f


@nb.njit(**_JIT)
def _vanvliet_chunk(x, j0, m, out, cast, coef, fwd, v1, v2, v3):
    """One CImg ``blur(1)`` pass (Van Vliet/Young recursion, Neumann borders, Triggs-Sdika
    end state) along axis 0 of columns ``j0 .. j0 + m`` of ``x``: every column a line.

    ``coef`` is ``(b0, a1, a2, a3, m0..m8)``. Both recursions run in double in CImg's
    order, the causal outputs stored as float (``fwd``, at least (N, m)) in between; the
    inner loops run across the m lines (vectorised), ``v1..v3`` (at least m) holding their
    last three outputs.
    """
    b0, a1, a2, a3 = coef[0], coef[1], coef[2], coef[3]
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = coef[4:13]
    n = x.shape[0]
    den = 1.0 - a1 - a2 - a3
    sq = b0 * b0
    for j in range(m):
        init = np.float64(x[0, j0 + j]) / b0
        v1[j] = init
        v2[j] = init
        v3[j] = init
    for i in range(n):  # causal
        for j in range(m):
            v0 = ((np.float64(x[i, j0 + j]) + a1 * v1[j]) + a2 * v2[j]) + a3 * v3[j]
            fwd[i, j] = np.float32(v0)
            v3[j] = v2[j]
            v2[j] = v1[j]
            v1[j] = v0
    for j in range(m):  # Triggs-Sdika end state from the double causal tail
        u = np.float64(x[n - 1, j0 + j]) / den
        w = u / den
        e1 = v1[j] - u
        e2 = v2[j] - u
        e3 = v3[j] - u
        z0 = (m0 * e1 + m1 * e2 + m2 * e3 + w) * sq
        v1[j] = z0
        v2[j] = (m3 * e1 + m4 * e2 + m5 * e3 + w) * sq
        v3[j] = (m6 * e1 + m7 * e2 + m8 * e3 + w) * sq
        _store(out, n - 1, j0 + j, z0, cast)
    for i in range(n - 2, -1, -1):  # anti-causal, on the float causal outputs
        for j in range(m):
            v0 = ((np.float64(fwd[i, j]) * sq + a1 * v1[j]) + a2 * v2[j]) + a3 * v3[j]
            v3[j] = v2[j]
            v2[j] = v1[j]
            v1[j] = v0
            _store(out, i, j0 + j, v0, cast)


@nb.njit(**_JIT)
def vanvliet_axis0(x, out, cast, chunk, coef):
    """The blur pass along axis 0 of ``x`` (N, L) uint8 or float32 into ``out`` (N, L)
    float32 or, with ``cast``, uint8 (either may be a strided view), ``chunk`` lines at a
    time. Memory: one (N, chunk) float32 buffer."""
    n, width = x.shape
    fwd = np.empty((n, chunk), np.float32)
    v = np.empty((3, chunk))
    for j0 in range(0, width, chunk):
        m = min(chunk, width - j0)
        _vanvliet_chunk(x, j0, m, out, cast, coef, fwd, v[0], v[1], v[2])


@nb.njit(**_JIT)
def vanvliet_axis1(x, out, cast, chunk, coef):
    """The blur pass along axis 1 of ``x`` (H, W) (the x pass: every row a line) into
    ``out`` (H, W). Blocks of ``chunk`` rows are copied into a transposed tile, blurred
    there as columns and copied back: contiguous row reads and writes, and the recursion
    still vectorised across lines. Memory: three (W, chunk) tiles."""
    h, w = x.shape
    tile = np.empty((w, chunk), x.dtype)
    done = np.empty((w, chunk), out.dtype)
    fwd = np.empty((w, chunk), np.float32)
    v = np.empty((3, chunk))
    for r0 in range(0, h, chunk):
        m = min(chunk, h - r0)
        for r in range(m):
            row = x[r0 + r]
            for i in range(w):
                tile[i, r] = row[i]
        _vanvliet_chunk(tile, 0, m, done, cast, coef, fwd, v[0], v[1], v[2])
        for r in range(m):
            row = out[r0 + r]
            for i in range(w):
                row[i] = done[i, r]


@nb.njit(**_JIT)
def mh_correlate(pad, kernel, out):
    """17x17 correlation of the edge-padded image ``pad`` (h + 16, w + 16) float32 with
    ``kernel`` into ``out`` (h, w) float32: per pixel, products rounded to float and added
    in float in pHash's order (kernel row q outer, column p inner).

    The 17 taps of one kernel row are added in a register (the constant-length p loop is
    unrolled), so each output is loaded and stored once per kernel row, not once per tap;
    the x loop runs over independent pixels and is vectorised without reordering any
    pixel's additions."""
    h, w = out.shape
    for y in range(h):
        acc = out[y]
        for q in range(17):
            row = pad[y + q]
            k = kernel[q]
            for x in range(w):
                s = k[0] * row[x] if q == 0 else acc[x] + k[0] * row[x]
                for p in range(1, 17):
                    s = s + k[p] * row[x + p]
                acc[x] = s


@nb.njit(**_JIT)
def radon_sums(flat_img, flat, line, s1, s2):
    """Per radon line, the double sums of the sampled pixels and of their squares, added
    in sample order (``np.bincount`` with weights, fused: no gathered copy)."""
    for i in range(flat.shape[0]):
        v = np.float64(flat_img[flat[i]])
        k = line[i]
        s1[k] += v
        s2[k] += v * v


@nb.njit(**_JIT)
def area_axis0(a, src, weight, out, cast):
    """CImg's moving-average resize along axis 0 (interpolation 2, shrinking): output row
    j accumulates ``a[src[j, k]] * weight[j, k]`` in float, pieces in input order, then is
    divided by n in float. ``out`` float32, or with ``cast`` uint8 (truncating cast)."""
    size, pieces = src.shape
    n, width = a.shape
    acc = np.empty(width, np.float32)
    scale = np.float32(n)
    for j in range(size):
        acc[:] = 0
        for k in range(pieces):
            row = a[src[j, k]]
            wk = weight[j, k]
            for c in range(width):
                acc[c] = acc[c] + np.float32(row[c]) * wk
        for c in range(width):
            _store(out, j, c, acc[c] / scale, cast)


@nb.njit(**_JIT)
def _area_row(row, src, weight, out, r, cast):
    """One row of :func:`area_axis1`: each output's pieces added in float, in order."""
    size, pieces = src.shape
    scale = np.float32(row.shape[0])
    for j in range(size):
        s = np.float32(0)
        for k in range(pieces):
            s = s + np.float32(row[src[j, k]]) * weight[j, k]
        _store(out, r, j, s / scale, cast)


@nb.njit(**_JIT)
def area_axis1(a, src, weight, out, cast):
    """:func:`area_axis0` along axis 1 of ``a`` (H, n): the same float accumulation per
    output, reading rows in place (no transposed view). Four rows at a time: their four
    sums are independent, so the additions of one do not wait on another's (2x faster
    than one row at a time on a 4 MP image), each sum still in piece order."""
    size, pieces = src.shape
    h, n = a.shape
    scale = np.float32(n)
    for r in range(0, h - h % 4, 4):
        ra, rb, rc, rd = a[r], a[r + 1], a[r + 2], a[r + 3]
        for j in range(size):
            s0 = s1 = s2 = s3 = np.float32(0)
            for k in range(pieces):
                c = src[j, k]
                wk = weight[j, k]
                s0 = s0 + np.float32(ra[c]) * wk
                s1 = s1 + np.float32(rb[c]) * wk
                s2 = s2 + np.float32(rc[c]) * wk
                s3 = s3 + np.float32(rd[c]) * wk
            _store(out, r, j, s0 / scale, cast)
            _store(out, r + 1, j, s1 / scale, cast)
            _store(out, r + 2, j, s2 / scale, cast)
            _store(out, r + 3, j, s3 / scale, cast)
    for r in range(h - h % 4, h):
        _area_row(a[r], src, weight, out, r, cast)


@nb.njit(**_JIT)
def studio_luma(rgbx, out):
    """CImg's studio-range luma of 8-bit RGB, in integers:
    ``16 + (66 R + 129 G + 25 B + 128) >> 8``, from C-contiguous (H, W, 4) uint8 (RGB and
    a padding byte, as Pillow stores RGB) into C-contiguous (H, W) uint8. Flat indexing:
    the loop then vectorises (10x faster than 2-D indexing here)."""
    src = rgbx.reshape(-1)
    dst = out.reshape(-1)
    for i in range(dst.shape[0]):
        r = np.int32(src[4 * i])
        g = np.int32(src[4 * i + 1])
        b = np.int32(src[4 * i + 2])
        dst[i] = np.uint8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16)


@nb.njit(**_JIT)
def cubic_axis0(a, idx, t, i0, i2, i3, out, cast):
    """CImg's cubic resize (interpolation 5, enlarging) along axis 0: output row j from
    source row ``idx[j]`` and its neighbours ``i0, i2, i3`` at fraction ``t[j]``, in C's
    double expressions and order; ``out`` float32, or with ``cast`` uint8 clamped to
    0..255 and truncated."""
    size, width = out.shape
    for j in range(size):
        s = idx[j]
        tj = t[j]
        tt = tj * tj
        ttt = tt * tj
        r0, r1, r2, r3 = a[i0[s]], a[s], a[i2[s]], a[i3[s]]
        for c in range(width):
            p0 = np.float64(r0[c])
            p1 = np.float64(r1[c])
            p2 = np.float64(r2[c])
            p3 = np.float64(r3[c])
            ca = -p0 + p2
            cb = 2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3
            cc = -p0 + 3.0 * p1 - 3.0 * p2 + p3
            v = ((tj * ca + tt * cb) + ttt * cc) * 0.5 + p1
            if cast:
                out[j, c] = np.uint8(min(max(v, 0.0), 255.0))
            else:
                out[j, c] = np.float32(v)
