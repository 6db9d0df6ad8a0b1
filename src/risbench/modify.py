"""Named, parameterised image modifications (the paper's ImageMagick commands).

A *variant* name is one or more steps joined by ``+``; a step is
``<modification>[-<strength>]``, e.g. ``rotate``, ``rotate-2``, ``jpeg-30``,
``crop-10+jpeg-30`` (crop, then JPEG). A step written with its default
strength is normalised to the bare name (``rotate-5`` -> ``rotate``), so one
variant has one name.

The paper's six modifications reproduce ImageMagick 6.9.11 (Q16), whose
outputs on 20 images are in ``tests/data/golden/modified``:

``blur`` (``-blur 4x2``)
    ImageMagick's ``blur:4x2`` kernel (a 9-tap Gaussian, sigma 2, sampled at
    3 points per tap and normalised), horizontal pass then vertical pass,
    edge pixels replicated, 16-bit rounding between the passes. Bit-exact.
``gray`` (``-type Grayscale``)
    Rec.709 luma on the gamma-encoded values,
    ``0.212656 R + 0.715158 G + 0.072186 B``, rounded to 16 bits; 8-bit
    output. Bit-exact.
``resize`` (``-resize 50%``)
    Each side ``floor(side * p / 100 + 0.5)``; ImageMagick's separable
    resize with its filter choice, made from the channel count of the decoded
    file: Lanczos (3-lobe SincFast-windowed SincFast) for any 3-channel image
    shrinking, even one whose channels are equal; Mitchell (cubic B = C = 1/3)
    for a single-channel (L) image, which ImageMagick reads as PseudoClass, and
    for enlarging; the cheaper pass first, as ImageMagick orders them. 19 of
    the 20 golden files are bit-exact.
``jpeg`` (``-quality 10``)
    Pillow's libjpeg encoder: baseline, standard tables scaled to the quality,
    ImageMagick's chroma sampling (4:2:0 below quality 90, none from 90 on).
    Below quality 90 ImageMagick calls libjpeg with the float DCT, Pillow with
    the integer one, so pixels differ slightly (about 46 dB at quality 10);
    from 90 on both use the integer DCT and agree exactly.
``rotate`` (``-rotate 5``)
    ImageMagick 6's ``RotateImage`` is a scale-rotate-translate distortion
    with best-fit canvas and a white virtual-pixel background, resampled with
    an elliptical weighted average of the Robidoux cubic (radius 2, 1024-entry
    weight table). Reimplemented exactly: bit-exact, same canvas
    (384x384 -> 418x418, 384x256 -> 406x290).
``crop`` (``-crop 90%x100%+0+0``)
    Keeps the left ``floor(width * (100 - p) / 100 + 0.5)`` columns.
    Bit-exact.

ImageMagick computes in 16 bits (8-bit values times 257). Its PNG writer
takes the 8-bit value as ``q // 257``, its JPEG writer rounds
(``floor(q / 257 + 0.5)``); the 16-bit steps here do the same, rounding when
their result is JPEG-encoded next (a following ``jpeg`` step, or
``save(..., reencode_quality=...)``).

Beyond the paper: ``mirror`` (horizontal flip), ``pad`` (white border of
p % of the width on the left and right and p % of the height on the top and
bottom), ``brightness`` (Pillow ``ImageEnhance.Brightness`` with factor
p / 100).

Images are RGB or L. ``apply`` keeps the mode (``gray`` always gives L); any
other mode is converted to RGB first.

Memory: the 16-bit steps work in strips of rows (blur with a halo of r rows,
resize reading only the input rows its taps touch, rotate in blocks of output
rows that cover only the columns reaching the source: the rest of the canvas
is the white background) and paste 8-bit strips into the output image. Their
float64 working arrays hold a sixteenth of the image's samples each, within
64 Ki and 1 Mi elements (8 MiB); outputs are identical to the earlier
whole-image code. The bound reached, as peak RSS above the interpreter
for ``modify_file`` (decoding and writing included) on photo-like RGB PNGs
(``benchmarks/bench_memory.py``): every modification 6-13 bytes per input
pixel at 12 and 24 MP, 9-18 at 1 MP where fixed costs weigh more, against a
target of 40. It is made of Pillow's input image (4 B/px for RGB, 1 for L),
the output image (4 B, or 1, per output pixel), for rotate a uint8 copy of
the input (3 B/px), and working arrays of at most about 50 MiB. rotate and
enlarging resize grow with the output: per output pixel, the image plus the
bounded working set (a 1x60000 L image rotates to a 312-megapixel canvas in
about 350 MB).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from risbench import files

__all__ = [
    "MODIFICATIONS",
    "Modification",
    "apply",
    "canonical_name",
    "expand_sweeps",
    "modify_file",
    "open_image",
    "parse_variant",
    "save",
]

_Q = 257.0  # 8-bit -> 16-bit quantum scale (ImageMagick Q16)
_QMAX = 65535.0
_MAGICK_EPSILON = 1.0e-12

# Keys under which apply() records what it did in the returned image's ``info``.
_INFO_VARIANT = "risbench.variant"
_INFO_JPEG = "risbench.jpeg"
_INFO_ROUNDED = "risbench.rounded"

# Elements of one float64 working array of a strip: a sixteenth of the image's samples,
# between 64 Ki (small images: the per-strip Python overhead stays small) and 1 Mi
# (8 MiB; large images: the working set stays far below the image itself).
_STRIP_MIN = 1 << 16
_STRIP_MAX = 1 << 20


@dataclass(frozen=True)
class Modification:
    """One registered modification.

    ``function(image, strength, rounding=False)`` takes an RGB or L image (and
    ``None`` as strength when the modification has none) and returns a new
    image. ``q16`` modifications compute in 16 bits; ``rounding`` says how
    their result becomes 8 bits: truncated as ImageMagick's PNG writer does
    (False) or rounded as its JPEG writer does (True). The others ignore it.
    """

    name: str
    default: float | None
    unit: str
    description: str
    function: Callable[..., Image.Image]
    valid: Callable[[float], bool] = lambda value: True
    valid_text: str = "any number"
    q16: bool = False


# --------------------------------------------------------------------------------------
# 16-bit helpers (ImageMagick Q16 arithmetic), strip by strip


def _channels(image: Image.Image) -> int:
    return 1 if image.mode == "L" else 3


def _strip_budget(image: Image.Image) -> int:
    """Elements per float64 working array for ``image`` (see _STRIP_MIN, _STRIP_MAX)."""
    samples = image.width * image.height * _channels(image)
    return min(_STRIP_MAX, max(_STRIP_MIN, samples // 16))


def _strips(n_rows: int, rows_per_strip: int) -> Iterator[tuple[int, int]]:
    step = max(1, int(rows_per_strip))
    for top in range(0, n_rows, step):
        yield top, min(n_rows, top + step)


def _q16_rows(image: Image.Image, top: int, bottom: int) -> np.ndarray:
    """Rows ``[top, bottom)`` as a (rows, W, C) float64 array of 16-bit quantum values."""
    a = np.asarray(image.crop((0, top, image.width, bottom)), dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    return a * _Q


def _clamp_q16(values: np.ndarray) -> np.ndarray:
    """ImageMagick's ClampToQuantum for a non-HDRI Q16 build: clamp, round half up."""
    return np.floor(np.clip(values, 0.0, _QMAX) + 0.5)


def _to_8bit(values: np.ndarray, rounding: bool) -> np.ndarray:
    """8-bit samples of 16-bit quanta as ImageMagick writes them.

    Its PNG writer truncates (``q // 257``); its JPEG writer rounds with
    ScaleQuantumToChar, ``((q + 128) - ((q + 128) >> 8)) >> 8``, which equals
    ``floor(q / 257 + 0.5)`` for every q in 0..65535.
    """
    q = _clamp_q16(values)
    if rounding:
        return np.floor(q / _Q + 0.5).astype(np.uint8)
    return np.floor(q / _Q).astype(np.uint8)


def _paste_q16(out: Image.Image, values: np.ndarray, left: int, top: int, rounding: bool):
    """Writes a (rows, cols, C) block of 16-bit quanta into the 8-bit image ``out``."""
    pixels = _to_8bit(values, rounding)
    if out.mode == "L":
        block = Image.fromarray(pixels[:, :, 0], "L")
    else:
        block = Image.fromarray(pixels, "RGB")
    out.paste(block, (left, top))


# --------------------------------------------------------------------------------------
# blur


def _blur_kernel(sigma: float) -> np.ndarray:
    """ImageMagick's ``blur:{2 sigma}x{sigma}`` kernel (morphology.c BlurKernel, KernelRank 3)."""
    radius = 2.0 * sigma
    width = 2 * max(1, int(radius)) + 1
    rank = 3
    v = (width * rank - 1) // 2
    s = sigma * rank
    alpha = 1.0 / (2.0 * s * s)
    beta = 1.0 / (math.sqrt(2.0 * math.pi) * s)
    kernel = np.zeros(width)
    for u in range(-v, v + 1):
        kernel[(u + v) // rank] += math.exp(-(u * u) * alpha) * beta
    return kernel / kernel.sum()


def _correlate_rows(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate along axis 1 with edge replication (ImageMagick's default virtual pixels)."""
    r = len(kernel) // 2
    padded = np.pad(a, [(0, 0), (r, r), (0, 0)], mode="edge")
    n = a.shape[1]
    out = np.zeros_like(a)
    for i, weight in enumerate(kernel):
        out += weight * padded[:, i : i + n]
    return out


def _correlate_columns_valid(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate along axis 0 where the kernel fits: rows ``r .. len - r`` of ``a``."""
    n = a.shape[0] - (len(kernel) - 1)
    out = np.zeros((n,) + a.shape[1:])
    for i, weight in enumerate(kernel):
        out += weight * a[i : i + n]
    return out


def _blur(image: Image.Image, sigma: float | None, rounding: bool = False) -> Image.Image:
    """Horizontal pass, 16-bit clamp, vertical pass; strips of rows with a halo of r rows."""
    kernel = _blur_kernel(float(sigma))
    r = len(kernel) // 2
    width, height = image.size
    out = Image.new(image.mode, image.size)
    rows_per_strip = _strip_budget(image) // (width * _channels(image))
    for top, bottom in _strips(height, rows_per_strip):
        # Edge replication at the top and bottom: clamped row indices, as np.pad "edge".
        rows = np.clip(np.arange(top - r, bottom + r), 0, height - 1)
        a = _q16_rows(image, int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
        a = _clamp_q16(_correlate_rows(a, kernel))
        _paste_q16(out, _correlate_columns_valid(a, kernel), 0, top, rounding)
    return out


# --------------------------------------------------------------------------------------
# gray


def _gray(image: Image.Image, _strength: float | None = None, rounding: bool = False):
    if image.mode == "L":
        return image.copy()
    out = Image.new("L", image.size)
    for top, bottom in _strips(image.height, _strip_budget(image) // (3 * image.width)):
        a = _q16_rows(image, top, bottom)
        luma = 0.212656 * a[:, :, 0] + 0.715158 * a[:, :, 1] + 0.072186 * a[:, :, 2]
        _paste_q16(out, luma[:, :, None], 0, top, rounding)
    return out


# --------------------------------------------------------------------------------------
# resize

# SincFast for Q16 builds (resize.c): max. abs. rel. error 2.2e-8 on [0, 4].
_SINCFAST_C = (
    0.173611107357320220183368594093166520811e-2,
    -0.384240921114946632192116762889211361285e-3,
    0.394201182359318128221229891724947048771e-4,
    -0.250963301609117217660068889165550534856e-5,
    0.111902032818095784414237782071368805120e-6,
    -0.372895101408779549368465614321137048875e-8,
    0.957694196677572570319816780188718518330e-10,
    -0.187208577776590710853865174371617338991e-11,
    0.253524321426864752676094495396308636823e-13,
    -0.177084805010701112639035485248501049364e-15,
)


def _sinc_fast(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    xx = x * x
    p = np.full_like(xx, _SINCFAST_C[-1])
    for c in _SINCFAST_C[-2::-1]:
        p = c + xx * p
    approx = (xx - 1.0) * (xx - 4.0) * (xx - 9.0) * (xx - 16.0) * p
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.sin(np.pi * x) / (np.pi * x)
    return np.where(x > 4.0, exact, approx)


def _lanczos(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 3.0, _sinc_fast(x) * _sinc_fast(x / 3.0), 0.0)


def _cubic_bc(x: np.ndarray, b: float, c: float) -> np.ndarray:
    """ImageMagick's CubicBC filter (Mitchell-Netravali family)."""
    x = np.abs(x)
    c0 = (6.0 - 2.0 * b) / 6.0
    c2 = (-18.0 + 12.0 * b + 6.0 * c) / 6.0
    c3 = (12.0 - 9.0 * b - 6.0 * c) / 6.0
    c4 = (8.0 * b + 24.0 * c) / 6.0
    c5 = (-12.0 * b - 48.0 * c) / 6.0
    c6 = (6.0 * b + 30.0 * c) / 6.0
    c7 = (-b - 6.0 * c) / 6.0
    inner = c0 + x * (x * (c2 + x * c3))
    outer = c4 + x * (c5 + x * (c6 + x * c7))
    return np.where(x < 1.0, inner, np.where(x < 2.0, outer, 0.0))


def _mitchell(x: np.ndarray) -> np.ndarray:
    return _cubic_bc(x, 1.0 / 3.0, 1.0 / 3.0)


def _resize_taps(n_in: int, n_out: int, filt, filter_support: float):
    """Source indices and normalised weights, (n_out, taps), as ImageMagick's resize.c."""
    factor = n_out / n_in
    scale = max(1.0 / factor + _MAGICK_EPSILON, 1.0)
    support = scale * filter_support
    if support < 0.5:
        support, scale = 0.5, 1.0
    scale = 1.0 / scale
    bisect = (np.arange(n_out) + 0.5) / factor + _MAGICK_EPSILON
    start = np.maximum(bisect - support + 0.5, 0.0).astype(np.int64)
    stop = np.minimum(bisect + support + 0.5, float(n_in)).astype(np.int64)
    taps = int((stop - start).max())
    index = start[:, None] + np.arange(taps)[None, :]
    inside = index < stop[:, None]
    weights = np.where(inside, filt(scale * (index - bisect[:, None] + 0.5)), 0.0)
    density = weights.sum(axis=1, keepdims=True)
    normalise = (density != 0.0) & (density != 1.0)
    weights = np.where(normalise, weights / np.where(density == 0.0, 1.0, density), weights)
    return np.minimum(index, n_in - 1), weights


def _resample(a: np.ndarray, index: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """One separable pass along ``axis`` with taps from _resize_taps, clamped to 16 bits."""
    n_out = index.shape[0]
    shape = [1, 1, 1]
    shape[axis] = n_out
    out = np.zeros(a.shape[:axis] + (n_out,) + a.shape[axis + 1 :])
    for k in range(index.shape[1]):
        out += weights[:, k].reshape(shape) * np.take(a, index[:, k], axis=axis)
    return _clamp_q16(out)


def _scaled_size(size: int, percent: float) -> int:
    return max(1, int(math.floor(size * percent / 100.0 + 0.5)))


# Source modes ImageMagick 6 reads as PseudoClass (grey, bilevel, palette) or
# with an alpha channel ("matte"): its resize then defaults to Mitchell, not
# Lanczos (AcquireResizeFilter). risbench's originals are RGB PNGs decoded from
# such files, so the source's mode travels with the image (SOURCE_MODE_INFO).
MITCHELL_SOURCE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa"})
SOURCE_MODE_INFO = "risbench.source_mode"


def _resize_filter(image: Image.Image, enlarging: bool, pseudo_class: bool = False):
    """ImageMagick's automatic choice: Mitchell when enlarging, for a single-channel
    file (read as PseudoClass) or a source file ImageMagick would read as
    PseudoClass or with alpha (``pseudo_class``); Lanczos for any other 3-channel
    one, even if it looks gray."""
    if enlarging or pseudo_class or image.mode == "L":
        return _mitchell, 2.0
    return _lanczos, 3.0


def _resize(
    image: Image.Image, percent: float | None, rounding: bool = False, pseudo_class: bool = False
) -> Image.Image:
    """Separable resize, strips of output rows; each strip reads only the input rows its
    vertical taps touch, so both pass orders give today's values exactly."""
    w, h = image.size
    new_w, new_h = _scaled_size(w, percent), _scaled_size(h, percent)
    if (new_w, new_h) == (w, h):
        return image.copy()
    filt, support = _resize_filter(image, (new_w / w) * (new_h / h) > 1.0, pseudo_class)
    col_index, col_weights = _resize_taps(w, new_w, filt, support)
    row_index, row_weights = _resize_taps(h, new_h, filt, support)
    width_first = new_w * (h + new_h) > new_h * (w + new_w)
    budget, c = _strip_budget(image), _channels(image)
    out = Image.new(image.mode, (new_w, new_h))
    # Output rows per strip: the input block (about rows * h / new_h rows of w) and the
    # output strip (rows of new_w) both stay within the budget.
    rows_per_strip = min(budget * new_h // (w * c * h), budget // (new_w * c))
    for top, bottom in _strips(new_h, rows_per_strip):
        index, weights = row_index[top:bottom], row_weights[top:bottom]
        lo, hi = int(index.min()), int(index.max()) + 1
        a = _q16_rows(image, lo, hi)
        if width_first:
            a = _resample(a, col_index, col_weights, axis=1)
            a = _resample(a, index - lo, weights, axis=0)
        else:
            a = _resample(a, index - lo, weights, axis=0)
            a = _resample(a, col_index, col_weights, axis=1)
        _paste_q16(out, a, 0, top, rounding)
    return out


# --------------------------------------------------------------------------------------
# jpeg


def _jpeg_subsampling(quality: int) -> str:
    """ImageMagick's default chroma sampling: 4:2:0 below quality 90, none from 90 on."""
    return "4:4:4" if quality >= 90 else "4:2:0"


def _write_jpeg(image: Image.Image, fp: BinaryIO, quality: int) -> None:
    quality = int(quality)
    image.save(fp, "JPEG", quality=quality, subsampling=_jpeg_subsampling(quality))


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    _write_jpeg(image, buffer, quality)
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: float | None, rounding: bool = False) -> Image.Image:
    data = _jpeg_bytes(image, int(quality))
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    # The decoder gives the encoder's mode back (L or RGB); convert() would copy it.
    out = decoded if decoded.mode == image.mode else decoded.convert(image.mode)
    out.info = {_INFO_JPEG: data}
    return out


# --------------------------------------------------------------------------------------
# rotate

_ROBIDOUX_B = (228.0 - 108.0 * math.sqrt(2.0)) / 199.0
_ROBIDOUX_C = (1.0 - _ROBIDOUX_B) / 2.0
_WLUT_WIDTH = 1024
# resample.c: filter_lut[Q] = weight(sqrt(Q) * support / sqrt(WLUT_WIDTH)), support 2.
_ROBIDOUX_LUT = _cubic_bc(
    np.sqrt(np.arange(_WLUT_WIDTH)) * 2.0 * math.sqrt(1.0 / _WLUT_WIDTH),
    _ROBIDOUX_B,
    _ROBIDOUX_C,
)
_ROTATE_PAD = 3  # white border around the source: every tap outside the image reads white
# Output pixels per rotate block (each holds about 25 float64/int64 values at a time, about
# 200 bytes): a 64th of the input's pixels, between 4 Ki and 64 Ki (12 MiB).
_ROTATE_BLOCK_MIN = 1 << 12
_ROTATE_BLOCK_MAX = 1 << 16


@dataclass(frozen=True)
class _Rotation:
    """ImageMagick's SRT distortion for one image and angle: the best-fit output
    geometry (x, y, w, h), the source size and centre, and cos, sin of the angle."""

    gx: int
    gy: int
    gw: int
    gh: int
    width: int
    height: int
    cos: float
    sin: float

    @classmethod
    def of(cls, width: int, height: int, degrees: float) -> _Rotation:
        angle = math.radians(degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        cx, cy = width / 2.0, height / 2.0
        xs, ys = [], []
        for px, py in ((0, 0), (width, 0), (0, height), (width, height)):
            xs.append(cos * (px - cx) - sin * (py - cy) + cx)
            ys.append(sin * (px - cx) + cos * (py - cy) + cy)
        gx = math.floor(min(xs) - 0.5)
        gy = math.floor(min(ys) - 0.5)
        gw = math.ceil(max(xs) - gx + 0.5)
        gh = math.ceil(max(ys) - gy + 0.5)
        return cls(gx, gy, gw, gh, width, height, cos, sin)

    def source_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Per output row, the columns [first, stop) whose taps can reach the source image.

        Every other pixel reads only the white border and comes out pure white, so it
        is not computed. Along a row the inverse-mapped u0, v0 are linear in the
        column; a tap (floor(u0) - 1 .. floor(u0) + 2) reaches the source only when
        u0 is in [-3, W + 2) and v0 in [-3, H + 2). The bounds add one unit there and
        a column or two after rounding, so rounding errors cannot cut a pixel off.
        Rows that reach nothing get first = gw, stop = 0.
        """
        dy = self.gy + np.arange(self.gh) + 0.5 - self.height / 2.0
        dx0 = self.gx + 0.5 - self.width / 2.0  # dx of column 0
        first = np.zeros(self.gh)
        stop = np.full(self.gh, float(self.gw))
        for slope, offset, size in (
            (self.cos, self.sin * dy + self.width / 2.0 - 0.5, self.width),
            (-self.sin, self.cos * dy + self.height / 2.0 - 0.5, self.height),
        ):
            at0 = offset + slope * dx0  # value at column i: at0 + slope * i
            if abs(slope) < 1e-9:  # constant along the row (to within 1e-4 px)
                stop = np.where((at0 >= -4.0) & (at0 <= size + 3.0), stop, 0.0)
                continue
            ends = np.sort(np.stack([(-4.0 - at0) / slope, (size + 3.0 - at0) / slope]), axis=0)
            first = np.maximum(first, np.floor(ends[0]) - 1.0)
            stop = np.minimum(stop, np.ceil(ends[1]) + 2.0)
        first = np.clip(first, 0, self.gw).astype(np.int64)
        stop = np.clip(stop, 0, self.gw).astype(np.int64)
        empty = stop <= first
        return np.where(empty, self.gw, first), np.where(empty, 0, stop)


def _rotate_blocks(
    first: np.ndarray, stop: np.ndarray, block_pixels: int
) -> Iterator[tuple[int, int, int, int]]:
    """Rectangles (j0, j1, i0, i1) of consecutive output rows and the union of their
    column ranges, each at most ``block_pixels`` pixels (or one row)."""
    j0, n = 0, len(first)
    while j0 < n:
        lo, hi, j1 = int(first[j0]), int(stop[j0]), j0 + 1
        while j1 < n:
            new_lo, new_hi = min(lo, int(first[j1])), max(hi, int(stop[j1]))
            if (j1 + 1 - j0) * max(0, new_hi - new_lo) > block_pixels:
                break
            lo, hi, j1 = new_lo, new_hi, j1 + 1
        if hi > lo:
            yield j0, j1, lo, hi
        j0 = j1


def _white_bordered(image: Image.Image) -> np.ndarray:
    """(H + 2 pad, W + 2 pad, C) uint8 copy of the image inside a white border."""
    width, height, c, pad = image.width, image.height, _channels(image), _ROTATE_PAD
    canvas = np.full((height + 2 * pad, width + 2 * pad, c), 255, np.uint8)
    for top, bottom in _strips(height, _STRIP_MAX // (width * c)):
        strip = np.asarray(image.crop((0, top, width, bottom)))
        canvas[pad + top : pad + bottom, pad : pad + width] = strip.reshape(-1, width, c)
    return canvas


def _rotate_block(canvas: np.ndarray, rot: _Rotation, j0: int, j1: int, i0: int, i1: int):
    """16-bit values of output rows [j0, j1) and columns [i0, i1): ImageMagick's EWA
    resampling with the Robidoux LUT over the 4x4 taps around the inverse-mapped point."""
    jj, ii = np.mgrid[j0:j1, i0:i1]
    cx, cy = rot.width / 2.0, rot.height / 2.0
    dx = rot.gx + ii + 0.5 - cx
    dy = rot.gy + jj + 0.5 - cy
    # Inverse mapping (output -> input), then to pixel-index coordinates (centre = integer).
    u0 = rot.cos * dx + rot.sin * dy + cx - 0.5
    v0 = -rot.sin * dx + rot.cos * dy + cy - 0.5
    fu = np.floor(u0).astype(np.int64)
    fv = np.floor(v0).astype(np.int64)
    total = np.zeros(fu.shape + (canvas.shape[2],))
    divisor = np.zeros(fu.shape)
    for dv in range(-1, 3):
        for du in range(-1, 3):
            u = fu + du
            v = fv + dv
            q = 256.0 * ((u - u0) ** 2 + (v - v0) ** 2)  # ellipse quotient scaled to the LUT
            weight = np.where(q < _WLUT_WIDTH, _ROBIDOUX_LUT[np.clip(q, 0, 1023).astype(int)], 0)
            uu = np.clip(u + _ROTATE_PAD, 0, canvas.shape[1] - 1)
            vv = np.clip(v + _ROTATE_PAD, 0, canvas.shape[0] - 1)
            total += weight[:, :, None] * (canvas[vv, uu] * _Q)
            divisor += weight
    return total / divisor[:, :, None]


def _rotate(image: Image.Image, degrees: float | None, rounding: bool = False) -> Image.Image:
    """ImageMagick 6 ``-rotate``: clockwise, canvas enlarged, white corners."""
    degrees = float(degrees)
    quarter = degrees / 90.0
    if quarter == int(quarter):
        turns = int(quarter) % 4
        methods = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180}
        methods[3] = Image.Transpose.ROTATE_90
        return image.copy() if turns == 0 else image.transpose(methods[turns])
    rot = _Rotation.of(image.width, image.height, degrees)
    canvas = _white_bordered(image)
    out = Image.new(image.mode, (rot.gw, rot.gh), 255 if image.mode == "L" else (255,) * 3)
    pixels = image.width * image.height
    block_pixels = min(_ROTATE_BLOCK_MAX, max(_ROTATE_BLOCK_MIN, pixels // 64))
    for j0, j1, i0, i1 in _rotate_blocks(*rot.source_columns(), block_pixels):
        _paste_q16(out, _rotate_block(canvas, rot, j0, j1, i0, i1), i0, j0, rounding)
    return out


# --------------------------------------------------------------------------------------
# crop and the modifications beyond the paper (8-bit: ``rounding`` does not apply)


def _crop(image: Image.Image, percent: float | None, rounding: bool = False) -> Image.Image:
    width, height = image.size
    keep = _scaled_size(width, 100.0 - percent)
    return image.crop((0, 0, keep, height))


def _mirror(image: Image.Image, _strength: float | None = None, rounding: bool = False):
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _pad(image: Image.Image, percent: float | None, rounding: bool = False) -> Image.Image:
    width, height = image.size
    bx = int(math.floor(width * percent / 100.0 + 0.5))
    by = int(math.floor(height * percent / 100.0 + 0.5))
    fill = 255 if image.mode == "L" else (255, 255, 255)
    return ImageOps.expand(image, border=(bx, by, bx, by), fill=fill)


def _brightness(image: Image.Image, percent: float | None, rounding: bool = False):
    return ImageEnhance.Brightness(image).enhance(percent / 100.0)


def _integer_in(lo: int, hi: int) -> Callable[[float], bool]:
    return lambda value: value == int(value) and lo <= value <= hi


MODIFICATIONS: dict[str, Modification] = {
    m.name: m
    for m in (
        Modification(
            "blur",
            2.0,
            "sigma (px)",
            "Gaussian blur, radius 2 sigma (ImageMagick -blur 4x2)",
            _blur,
            lambda v: 0.0 < v <= 100.0,
            "a sigma in (0, 100]",
            q16=True,
        ),
        Modification(
            "gray",
            None,
            "",
            "grayscale, Rec.709 luma (ImageMagick -type Grayscale); 8-bit L output",
            _gray,
            q16=True,
        ),
        Modification(
            "resize",
            50.0,
            "% of the size kept",
            "resize each side to p % (ImageMagick -resize 50%: Lanczos, Mitchell for L images)",
            _resize,
            lambda v: 0.0 < v <= 1000.0,
            "a percentage in (0, 1000]",
            q16=True,
        ),
        Modification(
            "jpeg",
            10.0,
            "quality",
            "JPEG compression, baseline, 4:2:0 below quality 90 (ImageMagick -quality 10)",
            _jpeg,
            _integer_in(1, 100),
            "an integer quality from 1 to 100",
        ),
        Modification(
            "rotate",
            5.0,
            "degrees clockwise",
            "rotation, canvas enlarged, white corners (ImageMagick -rotate 5)",
            _rotate,
            lambda v: -360.0 <= v <= 360.0,
            "an angle in [-360, 360] degrees",
            q16=True,
        ),
        Modification(
            "crop",
            10.0,
            "% removed on the right",
            "keep the left (100 - p) % of the columns (ImageMagick -crop 90%x100%+0+0)",
            _crop,
            lambda v: 0.0 <= v < 100.0,
            "a percentage in [0, 100)",
        ),
        Modification("mirror", None, "", "horizontal flip", _mirror),
        Modification(
            "pad",
            10.0,
            "% of each side",
            "white border: p % of the width left and right, p % of the height top and bottom",
            _pad,
            lambda v: 0.0 <= v <= 1000.0,
            "a percentage in [0, 1000]",
        ),
        Modification(
            "brightness",
            130.0,
            "% brightness",
            "brightness factor p / 100 (Pillow ImageEnhance.Brightness)",
            _brightness,
            lambda v: 0.0 <= v <= 1000.0,
            "a percentage in [0, 1000]",
        ),
    )
}

# --------------------------------------------------------------------------------------
# names

_STRENGTH = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _format_strength(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def _parse_step(step: str, variant: str) -> tuple[str, float | None]:
    name, dash, text = step.partition("-")
    mod = MODIFICATIONS.get(name)
    if mod is None:
        raise ValueError(
            f"unknown modification {name!r} in variant {variant!r}; "
            f"valid modifications: {', '.join(MODIFICATIONS)}"
        )
    if not dash:
        return name, mod.default
    if mod.default is None:
        raise ValueError(
            f"modification {name!r} takes no strength, but variant {variant!r} gives {text!r}"
        )
    if not _STRENGTH.fullmatch(text):
        raise ValueError(
            f"bad strength {text!r} for {name!r} in variant {variant!r}: expected a decimal "
            f"number ({mod.unit}), e.g. {name}-{_format_strength(mod.default)}"
        )
    value = float(text)
    if not mod.valid(value):
        raise ValueError(
            f"strength {text} for {name!r} in variant {variant!r} is out of range: "
            f"expected {mod.valid_text} ({mod.unit})"
        )
    return name, value


def parse_variant(name: str) -> list[tuple[str, float | None]]:
    """Steps of a variant name, in application order: ``[(modification, strength)]``.

    The strength is the effective one (the default when the name omits it) and
    ``None`` for modifications without one (``gray``, ``mirror``).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"empty variant name {name!r}")
    steps = name.strip().split("+")
    if any(not step for step in steps):
        raise ValueError(f"variant {name!r} has an empty step (stray '+')")
    return [_parse_step(step, name) for step in steps]


def _step_name(mod: str, strength: float | None) -> str:
    default = MODIFICATIONS[mod].default
    if strength is None or strength == default:
        return mod
    return f"{mod}-{_format_strength(strength)}"


def canonical_name(name: str) -> str:
    """The one name of a variant: default strengths dropped, numbers normalised."""
    return "+".join(_step_name(mod, strength) for mod, strength in parse_variant(name))


def expand_sweeps(modifications: list[str], sweeps: dict[str, list[float]]) -> list[str]:
    """Variant names for the configured modifications plus their strength sweeps.

    Each entry is canonicalised; right after the first single-step entry of a
    modification with a sweep come that sweep's variants. Sweeps of
    modifications not listed are appended at the end, in the order of
    ``sweeps``. Duplicates are dropped, first occurrence kept.
    """
    sweeps = dict(sweeps or {})
    for mod, values in sweeps.items():
        if mod not in MODIFICATIONS:
            raise ValueError(
                f"sweep for unknown modification {mod!r}; "
                f"valid modifications: {', '.join(MODIFICATIONS)}"
            )
        if MODIFICATIONS[mod].default is None and values:
            raise ValueError(f"modification {mod!r} takes no strength and cannot be swept")

    def swept(mod: str) -> list[str]:
        return [canonical_name(f"{mod}-{_format_strength(float(v))}") for v in sweeps.pop(mod)]

    out: list[str] = []
    for entry in modifications:
        steps = parse_variant(entry)
        out.append(canonical_name(entry))
        if len(steps) == 1 and steps[0][0] in sweeps:
            out.extend(swept(steps[0][0]))
    for mod in list(sweeps):
        out.extend(swept(mod))
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------
# applying and writing


def _prepare(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")


def _rounds(mod: str, for_jpeg: bool) -> bool:
    """Whether a ``mod`` step whose result goes to a JPEG writer (or not) rounds to 8 bits."""
    return for_jpeg and MODIFICATIONS[mod].q16


def apply(variant: str, image: Image.Image, *, for_jpeg: bool = False) -> Image.Image:
    """The image modified by ``variant`` (a new image; the input is not changed).

    RGB in, RGB out (L in, L out); ``gray`` gives L. A ``jpeg`` step yields
    the decoded JPEG, so later steps see the compression. The result records
    the canonical variant name in ``info["risbench.variant"]`` and, when the
    last step is ``jpeg``, the encoded bytes in ``info["risbench.jpeg"]``.

    16-bit steps (blur, gray, resize, rotate) round their result to 8 bits when
    it is JPEG-encoded next, as ImageMagick's JPEG writer does: before a
    ``jpeg`` step, and for the last step when ``for_jpeg`` (the caller writes
    the result as JPEG, e.g. ``save(..., reencode_quality=...)``). Otherwise
    they truncate, as its PNG writer does.
    """
    steps = parse_variant(variant)
    pseudo_class = image.info.get(SOURCE_MODE_INFO) in MITCHELL_SOURCE_MODES
    current = _prepare(image)
    data: bytes | None = None
    for k, (mod, strength) in enumerate(steps):
        jpeg_next = steps[k + 1][0] == "jpeg" if k + 1 < len(steps) else for_jpeg
        extra = {"pseudo_class": pseudo_class} if mod == "resize" else {}
        current = MODIFICATIONS[mod].function(current, strength, rounding=jpeg_next, **extra)
        data = current.info.get(_INFO_JPEG) if mod == "jpeg" else None
    if current is image:
        current = current.copy()
    current.info = {k: v for k, v in current.info.items() if not k.startswith("risbench.")}
    current.info[_INFO_VARIANT] = canonical_name(variant)
    if _rounds(steps[-1][0], for_jpeg):
        current.info[_INFO_ROUNDED] = True
    if data is not None:
        current.info[_INFO_JPEG] = data
    return current


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """:func:`risbench.files.write_atomic`, into its folder made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, write)


def _modified_for_save(name: str, image: Image.Image, for_jpeg: bool) -> Image.Image:
    """``apply(name, image)``, or ``image`` itself when apply already made it for ``name``
    with the same 8-bit conversion of its last step."""
    if image.info.get(_INFO_VARIANT) != name:
        return apply(name, image, for_jpeg=for_jpeg)
    wanted = _rounds(parse_variant(name)[-1][0], for_jpeg)
    if bool(image.info.get(_INFO_ROUNDED, False)) != wanted:
        made, needed = ("JPEG", "PNG") if not wanted else ("PNG", "JPEG")
        raise ValueError(
            f"this image was made by apply({name!r}) for {made} output, but it is to be "
            f"written as {needed}; pass the original image, or apply({name!r}, ..., "
            f"for_jpeg={wanted}) first"
        )
    return image


def save(
    variant: str,
    image: Image.Image,
    path_without_suffix: str | Path,
    *,
    reencode_quality: int | None = None,
) -> Path:
    """Apply ``variant`` to ``image`` and write the result; returns the written path.

    ``image`` is normally the original. An image that ``apply`` already made
    for this same variant (it carries the variant name in ``info``) is written
    as it is, not modified twice.

    A variant whose last step is ``jpeg`` is written as ``.jpg``: exactly the
    bytes that step encoded. Anything else is a lossless ``.png``, or, with
    ``reencode_quality``, a ``.jpg`` at that quality, as the paper's ``mogrify
    -format jpg`` re-encoded every output: 16-bit results rounded to 8 bits
    and ImageMagick's chroma sampling (4:2:0 below quality 90, 4:4:4 from 90).
    """
    if reencode_quality is not None and not 1 <= int(reencode_quality) <= 100:
        raise ValueError(f"reencode_quality must be from 1 to 100, not {reencode_quality!r}")
    name = canonical_name(variant)
    last, strength = parse_variant(name)[-1]
    out = _modified_for_save(name, image, reencode_quality is not None and last != "jpeg")
    base = str(path_without_suffix)
    if last == "jpeg":
        data = out.info.get(_INFO_JPEG)
        if data is None:  # an image not made by apply(); encode it once
            data = _jpeg_bytes(out, int(strength))
        path = Path(base + ".jpg")
        _write_atomic(path, lambda fp: fp.write(data))
    elif reencode_quality is not None:
        path = Path(base + ".jpg")
        _write_atomic(path, lambda fp: _write_jpeg(_prepare(out), fp, int(reencode_quality)))
    else:
        path = Path(base + ".png")
        _write_atomic(path, lambda fp: _prepare(out).save(fp, "PNG"))
    return path


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def open_image(src: str | Path) -> Image.Image:
    """Open an image as L (single-channel files) or RGB (everything else).

    The mode is the file's channel count, which ``resize`` uses to choose its
    filter as ImageMagick does. An RGB or L file is returned as decoded, without
    the copy a ``convert`` would make.
    """
    with Image.open(src) as im:
        target = "L" if im.mode in _GRAY_MODES else "RGB"
        if im.mode != target or getattr(im, "is_animated", False):
            return im.convert(target)
        im.load()
        return im


def modify_file(
    variant: str,
    src: str | Path,
    dst_without_suffix: str | Path,
    *,
    reencode_quality: int | None = None,
    source_mode: str | None = None,
) -> Path:
    """Open ``src``, apply ``variant`` and write it (see ``save``); returns the written path.

    ``source_mode``: the Pillow mode of the file ``src`` was decoded from, when
    ``src`` is risbench's RGB copy of it (resize picks its filter from it)."""
    image = open_image(src)
    if source_mode is not None:
        image.info[SOURCE_MODE_INFO] = source_mode
    return save(variant, image, dst_without_suffix, reencode_quality=reencode_quality)


def modify_variant(
    variant: str,
    originals: str | Path,
    images_dir: str | Path,
    list_path: str | Path,
    *,
    reencode_quality: int | None = None,
) -> None:
    """The modify job: ``variant`` of every base image of the original variant's
    list ``originals``, written under ``images_dir``, and that variant's list."""
    import pandas as pd
    from tqdm import tqdm

    from risbench import catalog
    from risbench.jobtime import compute

    bases = catalog.bases(pd.read_parquet(originals))
    out_dir = Path(images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = bases["source_mode"] if "source_mode" in bases else [None] * len(bases)
    rows = list(zip(bases["image_id"], bases["path"], modes, strict=True))
    paths = []
    with compute(f"modify {variant}"):
        for image_id, src, mode in tqdm(rows, desc=variant, unit="img"):
            path = modify_file(
                variant, src, out_dir / image_id, reencode_quality=reencode_quality,
                source_mode=mode,
            )  # fmt: skip
            paths.append(str(path))
    catalog.modified_list(bases, variant, paths).to_parquet(list_path, index=False)
