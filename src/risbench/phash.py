"""pHash 0.9.6 image hashes (DCT, Marr-Hildreth, Radial Variance), bit for bit in NumPy.

This re-implements the three image hashes of pHash 0.9.6 on CImg 3.2.1 (Van Vliet blur) as
described in ``tests/data/golden/README.md``. Every float/double rounding step of the C++
code is reproduced in the same order (products rounded to float before a float accumulation,
double accumulations stored as float, truncating uint8 casts, ...), so the results equal the
reference build's on the whole golden set (140 files, 150 pairs).

* :func:`dct_hash` -- ``ph_dct_imagehash``: 8 bytes, the uint64 value big-endian.
* :func:`mh_hash` -- ``ph_mh_imagehash(alpha=2, level=1)``: 72 bytes in array order.
* :func:`rv_digest` -- ``ph_image_digest(sigma=1, gamma=1, N=180)``: 40 bytes.
* :func:`rv_peak` -- ``ph_crosscorr`` peaks, vectorised over two sets of digests.
* :func:`rv_degenerate` -- which digests are constant (peak 0 with everything, themselves
  included).

Image modes
-----------
pHash reads files itself through CImg (libpng/libjpeg); here the caller passes a PIL image
and its mode picks the pHash code path:

* ``L`` (and ``1``): one channel -> pHash's single-channel paths (grey values used as they
  are; the MH hash then blurs/resizes/equalises in float, not uint8).
* ``RGB``: three channels -> pHash's colour paths on CImg's studio-range luma
  ``Y = 16 + (66 R + 129 G + 25 B + 128) // 256``. The luma is computed by Pillow's matrix
  conversion with coefficients 66/256, 129/256, 25/256 and offset 16, which is exact for all
  2^24 colours (every intermediate is a multiple of 1/256 below 2^16, exact in float32).
* Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, and ``P``/``L``/``RGB`` images with a
  ``transparency`` entry, i.e. a PNG ``tRNS`` colour key, which libpng turns into an alpha
  channel for CImg): pHash 0.9.6 mishandles alpha. Its DCT hash breaks on 4-channel
  images (it crops with the size of a still empty image; fixed upstream in 2013) and takes
  channel 0 of 2-channel ones, the MH hash blurs channel 0 only (red, for RGBA), the RV
  digest throws for 4 channels and fails for 2 -- and wherever it runs, the arbitrary colour
  stored under invisible pixels would decide the hash. Such images are flattened onto
  opaque white first, ``(c * a + 255 * (255 - a) + 127) // 255`` per channel (integer
  rounding), then treated as ``RGB`` (``LA``/``La``: as ``L``).
* ``P`` without transparency: expanded to ``RGB``, as libpng expands palettes for CImg.
* ``I;16*`` / ``I`` (16-bit grey): clipped to 0..65535 and scaled to 8 bits by ``v >> 8``,
  then ``L``. ``F``: clipped to 0..255 and truncated, then ``L``.
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and anything else: Pillow's ``convert("RGB")``.

Images larger than 512 pixels along an axis make CImg's cubic resize (MH hash) use its
moving-average (area) resize along that axis; that branch follows CImg's algorithm (float
accumulation) but, unlike everything else here, is not covered by the golden data (largest
side there: 418).

Speed: tables (DCT matrix, MH kernel, per-size sampling and resize plans) are built once.
The costly loops -- the recursive blur along every line, the 17x17 MH correlation (289
float products added per pixel in a fixed order), the moving-average resize, the radon
sums and the luma -- are compiled with numba (:mod:`risbench.phash_kernels`), vectorised
across independent lines/pixels only, so no pixel's operations change order; an RGB
image's pixels are read from Pillow's own memory (zero-copy Arrow export) where Pillow
allows. Importing this module loads the compiled loops (compiling them once into numba's
cache on first use: a few seconds).

Memory: at most 40 bytes per input pixel at peak, decode included (measured ~7-9 for a
3 MP photo, 5 for the DCT hash), plus a constant ~230 MB per process taken at import
(numba ~120 MB, pyarrow ~50, the loaded compiled loops ~50). The grey conversion of
images Pillow cannot export whole runs in strips of rows, the blur works on chunks of
lines with one output image and cache-sized buffers, and the resizes work in chunks of
columns. None of this changes the order of any floating-point operation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pyarrow  # for Pillow's zero-copy pixel export (see _rgbx_view)
from PIL import Image

from risbench import phash_kernels as _kern
from risbench.rvcompare import rv_degenerate, rv_peak  # noqa: F401 - part of this API

__all__ = ["dct_hash", "gray_array", "mh_hash", "rv_degenerate", "rv_digest", "rv_peak"]

_F32 = np.float32
_F64 = np.float64

# Pillow matrix conversion RGB -> L computing floor(66/256 R + 129/256 G + 25/256 B + 16 + 0.5),
# i.e. CImg's RGBtoYCbCr luma on 8-bit data, exactly (checked for all colours in the tests).
_LUMA_MATRIX = (66 / 256, 129 / 256, 25 / 256, 16.0)


# --------------------------------------------------------------------------------------------
# Loading


def _flatten_on_white(arr: np.ndarray) -> np.ndarray:
    """(H, W, C+1) uint8 with alpha last -> (H, W, C) uint8 composited onto opaque white."""
    colour = arr[..., :-1].astype(np.uint32)
    alpha = arr[..., -1:].astype(np.uint32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _base_image(image: Image.Image) -> Image.Image:
    """The image as pHash would load it: mode ``L`` (one channel) or ``RGB`` (three)."""
    mode = image.mode
    keyed = "transparency" in image.info  # tRNS colour key: libpng makes it an alpha channel
    if mode in ("L", "RGB") and not keyed:
        return image
    if mode in ("P", "RGB"):
        if not keyed:
            return image.convert("RGB")
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "L" and keyed:
        image, mode = image.convert("LA"), "LA"
    if mode in ("PA", "RGBa"):
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "La":
        image, mode = image.convert("LA"), "LA"
    if mode == "RGBA":
        return Image.fromarray(_flatten_on_white(np.asarray(image)), "RGB")
    if mode == "LA":
        return Image.fromarray(_flatten_on_white(np.asarray(image))[..., 0], "L")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I"):
        arr = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=_F64))
        return Image.fromarray(np.trunc(np.clip(arr, 0, 255)).astype(np.uint8), "L")
    return image.convert("RGB")


# Pixels per strip of rows converted at a time: the mode conversions (alpha flattening in
# uint32, 16-bit and float scaling in 64-bit) need up to ~40 bytes per pixel of temporaries.
_STRIP_PIXELS = 1 << 18


def _rgbx_view(image: Image.Image) -> np.ndarray | None:
    """Pillow's own pixel memory of an RGB image as (H, W, 4) uint8 (RGB + padding byte),
    without a copy, through the Arrow C data interface (Pillow >= 11.2). None where Pillow
    cannot export it: older Pillow, or an image larger than Pillow's block size (16 MB by
    default), stored in several blocks."""
    if not hasattr(image, "__arrow_c_array__"):
        return None
    try:
        exported = pyarrow.array(image)
    except ValueError:  # "Image rows are not contiguous in memory."
        return None
    w, h = image.size
    kind = exported.type  # one pixel: a fixed list of 4 bytes, R, G, B, padding
    pixel = pyarrow.types.is_fixed_size_list(kind) and kind.list_size == 4
    if not pixel or kind.value_type != pyarrow.uint8() or exported.offset:
        return None  # another Pillow's layout: take the conversion path
    data = exported.buffers()[-1]
    if data is None or data.size < h * w * 4:
        return None
    return np.frombuffer(data, dtype=np.uint8, count=h * w * 4).reshape(h, w, 4)


def gray_array(image: Image.Image) -> tuple[np.ndarray, bool]:
    """The grey image all three hashes start from, and whether pHash sees 3 channels.

    Returns ``(gray, colour)``: ``gray`` is (H, W) uint8 -- the studio-range luma for colour
    images, the single channel otherwise. An RGB image Pillow can export without a copy
    goes straight to the luma; anything else is converted in strips of rows (every
    conversion is per pixel), so the temporaries stay bounded whatever the image size.
    """
    plain = "transparency" not in image.info
    if image.mode == "L" and plain:
        return np.asarray(image), False
    w, h = image.size
    gray = np.empty((h, w), dtype=np.uint8)
    if image.mode == "RGB" and plain and _luma_into(image, gray, convert=False):
        return gray, True
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    if rows >= h:  # one strip: no crop
        base = _base_image(image)
        if base.mode == "RGB":
            _luma_into(base, gray)
            return gray, True
        return np.asarray(base), False
    colour = _base_image(image.crop((0, 0, 1, 1))).mode == "RGB"
    for r0 in range(0, h, rows):
        base = _base_image(image.crop((0, r0, w, min(h, r0 + rows))))
        if colour:
            _luma_into(base, gray[r0 : r0 + rows])
        else:
            gray[r0 : r0 + rows] = np.asarray(base)
    return gray, colour


def _luma_into(rgb: Image.Image, out: np.ndarray, convert: bool = True) -> bool:
    """Write the studio-range luma of an RGB image into ``out``: from Pillow's memory when
    it can be exported, else (with ``convert``) through Pillow's matrix conversion.
    Returns whether ``out`` was written."""
    rgbx = _rgbx_view(rgb)
    if rgbx is not None:
        _kern.studio_luma(rgbx, out)
        return True
    if convert:
        out[...] = np.asarray(rgb.convert("L", _LUMA_MATRIX))
    return convert


def _u8_cast(x: np.ndarray) -> np.ndarray:
    """C cast float -> uint8 as x86-64 does it: truncate toward zero, keep the low byte.

    (NaN, from degenerate constant images, gives 0 as cvttsd2si's 0x80000000 does.)"""
    with np.errstate(invalid="ignore"):
        return x.astype(np.int32).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# DCT hash


def _dct_matrix_rows() -> np.ndarray:
    """Rows 1..8 of pHash's float 32x32 DCT matrix (row 0 does not influence the hash)."""
    c1 = float(_F32(math.sqrt(2.0 / 32)))
    rows = [
        [c1 * math.cos(math.pi / 2 / 32 * v * (2 * n + 1)) for n in range(32)] for v in range(1, 9)
    ]
    return np.array(rows, dtype=_F32)


_DCT_C8 = _dct_matrix_rows()  # (8, 32) float32
_DCT_C8_T = np.ascontiguousarray(_DCT_C8.T)  # (32, 8)
_BITS64 = np.uint64(1) << np.arange(64, dtype=np.uint64)


@lru_cache(maxsize=256)
def _dct_sample_index(n: int) -> np.ndarray:
    """Clamped rows (columns) of the 7x7 windows around the 32 nearest-neighbour samples."""
    centres = (np.arange(32) * n) // 32
    return np.clip(centres[:, None] + np.arange(-3, 4)[None, :], 0, n - 1).ravel()


def _float_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CImg float matrix product: float products, summed in double, stored as float."""
    prod = a[:, :, None] * b[None, :, :]  # (m, k, n) float32 products
    return prod.sum(axis=1, dtype=_F64).astype(_F32)


def dct_hash(image: Image.Image) -> bytes:
    """pHash 0.9.6 ``ph_dct_imagehash``: the 64-bit hash as 8 big-endian bytes."""
    gray, _ = gray_array(image)
    h, w = gray.shape
    # 7x7 box sums (Neumann borders) at the 32x32 nearest-neighbour samples only; exact ints
    rows = gray[_dct_sample_index(h)].reshape(32, 7, w).sum(axis=1, dtype=np.int32)
    sums = rows[:, _dct_sample_index(w)].reshape(32, 32, 7).sum(axis=2, dtype=np.int32)
    coeffs = _float_matmul(_float_matmul(_DCT_C8, sums.astype(_F32)), _DCT_C8_T).ravel()
    srt = np.sort(coeffs)
    median = (srt[31] + srt[32]) / _F32(2)  # float arithmetic, as CImg's median()
    return int(_BITS64[coeffs > median].sum()).to_bytes(8, "big")


# --------------------------------------------------------------------------------------------
# CImg blur(1): Van Vliet / Young recursive Gaussian, Neumann borders, Triggs-Sdika end


def _vanvliet_coefficients(sigma: float):
    s = max(sigma, 0.5)
    q = -0.2568 + 0.5784 * s + 0.0561 * s * s
    m0, m1, m2 = 1.16680, 1.10783, 1.40586
    scale = (m0 + q) * (m1 * m1 + m2 * m2 + 2 * m1 * q + q * q)
    b1 = -q * (2 * m0 * m1 + m1 * m1 + m2 * m2 + (2 * m0 + 4 * m1) * q + 3 * q * q) / scale
    b2 = q * q * (m0 + 2 * m1 + 3 * q) / scale
    b3 = -q * q * q / scale
    b0 = m0 * (m1 * m1 + m2 * m2) / scale
    a1, a2, a3 = -b1, -b2, -b3
    k = 1.0 / ((1.0 + a1 - a2 + a3) * (1.0 - a1 - a2 - a3) * (1.0 + a2 + (a1 - a3) * a3))
    m = (
        k * (-a3 * a1 + 1.0 - a3 * a3 - a2),
        k * (a3 + a1) * (a2 + a3 * a1),
        k * a3 * (a1 + a3 * a2),
        k * (a1 + a3 * a2),
        -k * (a2 - 1.0) * (a2 + a3 * a1),
        -k * a3 * (a3 * a1 + a3 * a3 + a2 - 1.0),
        k * (a3 * a1 + a2 + a1 * a1 - a2 * a2),
        k * (a1 * a2 + a3 * a2 * a2 - a1 * a3 * a3 - a3 * a3 * a3 - a3 * a2 + a3),
        k * a3 * (a1 + a3 * a2),
    )
    return b0, a1, a2, a3, m


_VV = _vanvliet_coefficients(1.0)
_VV_FLAT = (*_VV[:4], *_VV[4])  # (b0, a1, a2, a3, m0..m8) for the compiled pass


# Lines per chunk of the compiled blur passes: the inner loop runs across them (vectorised)
# while their double-precision state and float32 causal outputs stay in cache. (Measured
# best on a 4 MP photo: the x pass works on transposed tiles of 32 rows.)
_BLUR_CHUNK = 128
_BLUR_TILE_ROWS = 32


def _vanvliet_lines(x: np.ndarray, u8: bool = False, axis: int = 0) -> np.ndarray:
    """One blur pass of the 2-D ``x`` along ``axis``, every column (axis 0) or row (axis 1)
    a line.

    ``x`` holds uint8 or float32 values. Both recursions run in double in CImg's order, the
    causal outputs being stored as float in between (:mod:`risbench.phash_kernels`).
    Returns float32, or with ``u8`` the result cast to uint8 as CImg's uint8 image stores
    it. Memory: the output plus a few (line length x chunk) buffers, whatever the image.
    """
    n = x.shape[axis]
    if n < 2:
        return _u8_cast(x.astype(_F32)) if u8 else x.astype(_F32)
    out = np.empty(x.shape, dtype=np.uint8 if u8 else _F32)
    if axis == 0:
        _kern.vanvliet_axis0(x, out, u8, _BLUR_CHUNK, _VV_FLAT)
    else:
        _kern.vanvliet_axis1(x, out, u8, _BLUR_TILE_ROWS, _VV_FLAT)
    return out


def _blur_u8(img: np.ndarray) -> np.ndarray:
    """CImg ``blur(1)`` of a uint8 image: x pass, uint8 cast, y pass, uint8 cast."""
    return _vanvliet_lines(_vanvliet_lines(img, u8=True, axis=1), u8=True)


def _blur_f32(img: np.ndarray) -> np.ndarray:
    """CImg ``get_blur(1)``: the same on a float copy, without casts between the passes."""
    return _vanvliet_lines(_vanvliet_lines(img, axis=1))


# --------------------------------------------------------------------------------------------
# CImg resize(512, 512, 1, 1, 5): cubic (or moving average when shrinking), x then y


@lru_cache(maxsize=256)
def _cubic_plan(n: int, size: int):
    """Source index, fraction and neighbour indices of CImg's cubic resize n -> size."""
    f = (n - 1) / (size - 1)
    pos = np.empty(size)
    acc = 0.0
    for j in range(size):  # running double sum, as CImg computes the positions
        pos[j] = acc
        acc = min(float(n - 1), acc + f)
    idx = np.floor(pos).astype(np.intp)
    src = np.arange(n)
    i0 = np.where(src > 0, src - 1, src)
    i2 = np.where(src <= n - 2, src + 1, src)
    i3 = np.where(src < n - 2, src + 2, i2)
    return idx, pos - idx, i0, i2, i3


def _cubic_axis0(a: np.ndarray, size: int, clamp: bool) -> np.ndarray:
    """Cubic upsampling along axis 0 of (n, L) uint8 (clamp) or float32 values."""
    idx, t, i0, i2, i3 = _cubic_plan(a.shape[0], size)
    out = np.empty((size, a.shape[1]), dtype=np.uint8 if clamp else _F32)
    _kern.cubic_axis0(a, idx, t, i0, i2, i3, out, clamp)
    return out


@lru_cache(maxsize=256)
def _area_plan(n: int, size: int):
    """Source index and weight of every piece of CImg's moving-average resize n -> size.

    Input pixel i covers [i*size, (i+1)*size), output j covers [j*n, (j+1)*n); the pieces
    of output j are ``src[j, :]`` with weights ``weight[j, :]`` in input order (padding
    pieces have weight 0 and add 0 * a[0] = 0).
    """
    bounds = np.union1d(np.arange(n + 1) * size, np.arange(size + 1) * n)
    starts = bounds[:-1]
    dst = starts // n
    first = np.searchsorted(dst, np.arange(size))
    rank = np.arange(len(starts)) - first[dst]  # position of a piece within its output
    src = np.zeros((size, int(rank.max()) + 1), dtype=np.intp)
    weight = np.zeros(src.shape, dtype=_F32)
    src[dst, rank] = starts // size
    weight[dst, rank] = np.diff(bounds)
    return src, weight


def _area_axis0(a: np.ndarray, size: int, clamp: bool) -> np.ndarray:
    """CImg moving-average resize (interpolation 2) along axis 0, for shrinking axes.

    Each output accumulates value * overlap in float, in input order, and is divided by n.
    Not covered by the golden data (no image there is larger than 512 pixels).
    """
    src, weight = _area_plan(a.shape[0], size)
    out = np.empty((size, a.shape[1]), dtype=np.uint8 if clamp else _F32)
    _kern.area_axis0(a, src, weight, out, clamp)
    return out


# Input elements per column chunk of a resize: its temporaries (up to ~40 bytes per output
# element in the cubic branch) stay bounded for long thin images.
_RESIZE_CHUNK = 1 << 20


def _resize_axis0(a: np.ndarray, size: int, clamp: bool) -> np.ndarray:
    """Resize (n, L) along axis 0 to ``size`` (uint8 with ``clamp``, else float32), in
    chunks of columns (every column is resized on its own)."""
    n, width = a.shape
    if n == size:
        return np.ascontiguousarray(a)
    step = max(1, _RESIZE_CHUNK // max(n, size))
    if width <= step:
        return _resize_columns(a, size, clamp)
    out = np.empty((size, width), dtype=np.uint8 if clamp else _F32)
    for c0 in range(0, width, step):
        out[:, c0 : c0 + step] = _resize_columns(a[:, c0 : c0 + step], size, clamp)
    return out


def _resize_columns(a: np.ndarray, size: int, clamp: bool) -> np.ndarray:
    n = a.shape[0]
    if n == 1:
        return np.repeat(a, size, axis=0)
    if n > size:
        return _area_axis0(a, size, clamp)
    return _cubic_axis0(a, size, clamp)


def _resize512(img: np.ndarray, clamp: bool) -> np.ndarray:
    h, w = img.shape
    if w > 512:  # shrinking along x: the moving average straight on the rows
        src, weight = _area_plan(w, 512)
        t = np.empty((h, 512), dtype=np.uint8 if clamp else _F32)
        _kern.area_axis1(img, src, weight, t, clamp)
    else:
        t = _resize_axis0(img.T, 512, clamp).T  # along x
    return _resize_axis0(t, 512, clamp)  # along y


# --------------------------------------------------------------------------------------------
# CImg equalize(256)


def _equalize_u8(img: np.ndarray) -> np.ndarray:
    """Integer variant, as a 256-entry lookup table."""
    counts = np.bincount(img.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    lo, hi = int(present[0]), int(present[-1])
    if hi == lo:
        return img
    levels = np.arange(lo, hi + 1)
    bins = np.where(levels == hi, 255, ((levels - lo) * 256) // (hi - lo))
    cum = np.cumsum(np.bincount(bins, weights=counts[lo : hi + 1], minlength=256)).astype(np.int64)
    pos = ((levels - lo) * 255) // (hi - lo)
    lut = np.arange(256, dtype=np.int64)
    lut[lo : hi + 1] = lo + ((hi - lo) * cum[pos]) // int(cum[-1])
    return np.take(lut.astype(np.uint8), img)


def _equalize_f32(img: np.ndarray) -> np.ndarray:
    """Float variant; returns float32."""
    lo = img.min()
    hi = img.max()
    if hi == lo:
        return img
    # histogram bins: get_histogram works in double; lookup: float difference, then double
    exact = (img.astype(_F64) - float(lo)) * 256 / (float(hi) - float(lo))
    bins = np.where(img == hi, 255, exact.astype(np.int64))
    cum = np.cumsum(np.bincount(bins.ravel(), minlength=256))
    pos = ((img - lo).astype(_F64) * 255.0 / float(hi - lo)).astype(np.int64)
    scaled = _F32(hi - lo) * cum.astype(_F32)
    return lo + np.take(scaled, pos) / _F32(cum[-1])


# --------------------------------------------------------------------------------------------
# Marr-Hildreth hash


def _mh_kernel() -> np.ndarray:
    xs = (np.arange(17, dtype=_F32) - _F32(8)) * _F32(0.5)
    a = xs[None, :] * xs[None, :] + xs[:, None] * xs[:, None]  # exact in float
    e = np.array([math.exp(-float(v) / 2) for v in a.ravel()], dtype=_F32).reshape(17, 17)
    return (_F32(2) - a) * e


_MH_KERNEL = _mh_kernel()

# the 64 groups of 3x3 blocks (r outer, c inner) in row-major order: (64, 9) indices
_grid = np.arange(0, 29, 4)
_MH_GROUP_ROWS = (
    (_grid[:, None, None, None] + np.arange(3)[None, None, :, None])
    .repeat(8, axis=1)
    .repeat(3, axis=3)
    .reshape(64, 9)
)
_MH_GROUP_COLS = (
    (_grid[None, :, None, None] + np.arange(3)[None, None, None, :])
    .repeat(8, axis=0)
    .repeat(3, axis=2)
    .reshape(64, 9)
)


def _mh_preprocess(gray: np.ndarray, colour: bool) -> np.ndarray:
    """Blur, resize to 512x512 and equalise, on uint8 (colour) or in float (one channel)."""
    if colour:
        return _equalize_u8(_resize512(_blur_u8(gray), clamp=True))
    return _u8_cast(_equalize_f32(_resize512(_blur_f32(gray), clamp=False)))


def _mh_correlate(img: np.ndarray) -> np.ndarray:
    """17x17 correlation with Neumann borders, products rounded to float and added in float
    in pHash's order (q outer, p inner): :func:`risbench.phash_kernels.mh_correlate` on the
    edge-padded image. Returns (h, w) float32."""
    pad = np.pad(img, 8, mode="edge").astype(_F32)
    out = np.empty(img.shape, dtype=_F32)
    _kern.mh_correlate(pad, _MH_KERNEL, out)
    return out


def mh_hash(image: Image.Image) -> bytes:
    """pHash 0.9.6 ``ph_mh_imagehash(alpha=2, level=1)``: 72 bytes."""
    img = _mh_preprocess(*gray_array(image))
    valid = _mh_correlate(img)
    lo = valid.min()
    hi = valid.max()
    if hi == lo:  # CImg's normalize() fills a constant image with the lower bound
        norm = np.zeros((496, 496), dtype=_F32)
    else:  # float arithmetic; rows/columns 496.. are not used
        norm = (valid[:496, :496] - lo) / (hi - lo)
    # 16x16 block sums in double, in CImg's order (row by row), stored as float
    # (axis-0 reductions are sequential in NumPy: 256 terms, row by row, per block)
    parts = norm.reshape(31, 16, 31, 16).transpose(1, 3, 0, 2).reshape(256, 31 * 31)
    blocks = np.add.reduce(parts, axis=0, dtype=_F64).astype(_F32).reshape(31, 31)
    groups = blocks[_MH_GROUP_ROWS, _MH_GROUP_COLS]  # (64, 9)
    ave = (np.add.reduce(groups.T.astype(_F64), axis=0) / 9).astype(_F32)
    return np.packbits(groups > ave[:, None]).tobytes()


# --------------------------------------------------------------------------------------------
# Radial Variance digest

_RV_N = 180
_RV_TAN = [math.tan(k * math.pi / _RV_N) for k in range(_RV_N)]
_RV_COS = np.array(
    [[math.cos((math.pi * (2 * n + 1) * k) / (2 * _RV_N)) for n in range(_RV_N)] for k in range(40)]
)
_SQRT_TWO = 1.4142135623730950488016887


def _round_ph(t: np.ndarray) -> np.ndarray:
    """pHash 0.9.6's ROUNDING_FACTOR rounding: floor(t + 0.5) if t >= 0 else floor(t - 0.5)."""
    return np.floor(t + np.where(t >= 0, 0.5, -0.5)).astype(np.intp)


@lru_cache(maxsize=64)
def _radon_plan(h: int, w: int):
    """Flat pixel indices sampled by ph_radon_projections, their line, and pixels per line."""
    d = max(w, h)
    xo = int(math.floor(_F32(w) / _F32(2) + 0.5))
    yo = int(math.floor(_F32(h) / _F32(2) + 0.5))
    x = np.arange(d)
    flat, line = [], []

    def take(k, ok, rows, cols):
        flat.append(rows[ok] * w + cols[ok])
        line.append(np.full(int(ok.sum()), k, dtype=np.intp))

    for k in [*range(0, _RV_N // 4 + 1), *range(3 * _RV_N // 4, _RV_N)]:
        dd = _round_ph(_RV_TAN[k] * (x - xo).astype(_F64))
        take(k, (dd + yo >= 0) & (dd + yo < h) & (x < w), dd + yo, x)
        if k < _RV_N // 4:
            take(_RV_N // 2 - k, (dd + xo >= 0) & (dd + xo < w) & (x < h), x, dd + xo)
        elif k > 3 * _RV_N // 4:  # pHash samples these lines around (yo, yo)
            ok = (yo - dd >= 0) & (yo - dd < w) & (2 * yo - x >= 0) & (2 * yo - x < h)
            take(3 * _RV_N // 2 - k, ok, 2 * yo - x, yo - dd)
    # compact dtypes: up to 64 plans stay cached, ~180 * max(h, w) samples each
    flat = np.concatenate(flat).astype(np.int32 if h * w < 2**31 else np.int64)
    line = np.concatenate(line).astype(np.uint8)
    return flat, line, np.bincount(line, minlength=_RV_N)


def _radon_features(img: np.ndarray) -> np.ndarray:
    flat, line, count = _radon_plan(*img.shape)
    s1, s2 = np.zeros(_RV_N), np.zeros(_RV_N)
    _kern.radon_sums(img.ravel(), flat, line, s1, s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        feat = s2 / count - (s1 * s1) / (count * count)
    total = np.cumsum(feat)[-1]  # sequential double sums, as the C loop
    total_sq = np.cumsum(feat * feat)[-1]
    mean = total / _RV_N
    var = total_sq / _RV_N - (total * total) / (_RV_N * _RV_N)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant images: NaN, as in C
        return (feat - mean) / np.sqrt(var)


def rv_digest(image: Image.Image) -> bytes:
    """pHash 0.9.6 ``ph_image_digest(sigma=1, gamma=1, N=180)``: 40 bytes."""
    gray, _ = gray_array(image)
    feat = _radon_features(_blur_u8(gray))
    t = np.cumsum(_RV_COS * feat[None, :], axis=1)[:, -1]
    c = np.empty(40)
    c[0] = t[0] / math.sqrt(float(_RV_N))
    c[1:] = t[1:] * _SQRT_TWO / math.sqrt(float(_RV_N))
    hi = max(0.0, float(c.max()))
    lo = min(0.0, float(c.min()))
    with np.errstate(divide="ignore", invalid="ignore"):
        return _u8_cast(255 * (c - lo) / (hi - lo)).tobytes()


def _load_compiled() -> None:
    """Load (or, with a cold cache, compile) the numba loops every hash uses, for both
    image paths (uint8 colour, float grey) and both resize branches, at import: their
    code (~50 MB, once per process) then counts as part of importing this module rather
    than as memory of the first image hashed, and no image's timing includes it."""
    for mode, shape in (("RGB", (520, 7, 3)), ("L", (7, 520))):
        pixels = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
        for image in (Image.fromarray(pixels, mode), Image.fromarray(pixels.swapaxes(0, 1), mode)):
            dct_hash(image), mh_hash(image), rv_digest(image)


_load_compiled()
