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
    resize with its filter choice: Lanczos (3-lobe SincFast-windowed
    SincFast) for colour images shrinking, Mitchell (cubic B = C = 1/3) for
    grayscale images (ImageMagick reads those as PseudoClass) and for
    enlarging; the cheaper pass first, as ImageMagick orders them. 19 of the
    20 golden files are bit-exact.
``jpeg`` (``-quality 10``)
    Pillow's libjpeg encoder: baseline, standard tables scaled to the quality,
    4:2:0 chroma subsampling. ImageMagick calls libjpeg with the float DCT,
    Pillow with the integer one, so pixels differ slightly (about 46 dB).
``rotate`` (``-rotate 5``)
    ImageMagick 6's ``RotateImage`` is a scale-rotate-translate distortion
    with best-fit canvas and a white virtual-pixel background, resampled with
    an elliptical weighted average of the Robidoux cubic (radius 2, 1024-entry
    weight table). Reimplemented exactly: bit-exact, same canvas
    (384x384 -> 418x418, 384x256 -> 406x290).
``crop`` (``-crop 90%x100%+0+0``)
    Keeps the left ``floor(width * (100 - p) / 100 + 0.5)`` columns.
    Bit-exact.

ImageMagick computes in 16 bits (8-bit values times 257) and its PNG writer
takes the 8-bit value as ``q // 257``; the NumPy paths here do the same.

Beyond the paper: ``mirror`` (horizontal flip), ``pad`` (white border of
p % of the width on the left and right and p % of the height on the top and
bottom), ``brightness`` (Pillow ``ImageEnhance.Brightness`` with factor
p / 100).

Images are RGB or L. ``apply`` keeps the mode (``gray`` always gives L); any
other mode is converted to RGB first.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

__all__ = [
    "MODIFICATIONS",
    "Modification",
    "apply",
    "canonical_name",
    "expand_sweeps",
    "modify_file",
    "parse_variant",
    "save",
]

_Q = 257.0  # 8-bit -> 16-bit quantum scale (ImageMagick Q16)
_QMAX = 65535.0
_MAGICK_EPSILON = 1.0e-12

# Keys under which apply() records what it did in the returned image's ``info``.
_INFO_VARIANT = "risbench.variant"
_INFO_JPEG = "risbench.jpeg"


@dataclass(frozen=True)
class Modification:
    """One registered modification.

    ``function(image, strength)`` takes an RGB or L image (and ``None`` as
    strength when the modification has none) and returns a new image.
    """

    name: str
    default: float | None
    unit: str
    description: str
    function: Callable[[Image.Image, float | None], Image.Image]
    valid: Callable[[float], bool] = lambda value: True
    valid_text: str = "any number"


# --------------------------------------------------------------------------------------
# 16-bit helpers (ImageMagick Q16 arithmetic)


def _to_q16(image: Image.Image) -> np.ndarray:
    """(H, W, C) float64 array of 16-bit quantum values."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    return a * _Q


def _clamp_q16(values: np.ndarray) -> np.ndarray:
    """ImageMagick's ClampToQuantum for a non-HDRI Q16 build: clamp, round half up."""
    return np.floor(np.clip(values, 0.0, _QMAX) + 0.5)


def _from_q16(values: np.ndarray, mode: str) -> Image.Image:
    """8-bit image from 16-bit quanta, as ImageMagick's PNG writer scales them (q // 257)."""
    out = np.floor(_clamp_q16(values) / _Q).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(out[:, :, 0], "L")
    return Image.fromarray(out, "RGB")


def _is_gray(image: Image.Image) -> bool:
    """True for an L image or an RGB image with equal channels (a grayscale file converted)."""
    if image.mode == "L":
        return True
    a = np.asarray(image)
    return bool((a[:, :, 0] == a[:, :, 1]).all() and (a[:, :, 0] == a[:, :, 2]).all())


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


def _convolve_axis(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate along ``axis`` with edge replication (ImageMagick's default virtual pixels)."""
    r = len(kernel) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    padded = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    out = np.zeros_like(a)
    for i, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(i, i + n), axis=axis)
    return out


def _blur(image: Image.Image, sigma: float | None) -> Image.Image:
    kernel = _blur_kernel(float(sigma))
    a = _to_q16(image)
    a = _clamp_q16(_convolve_axis(a, kernel, axis=1))
    a = _convolve_axis(a, kernel, axis=0)
    return _from_q16(a, image.mode)


# --------------------------------------------------------------------------------------
# gray


def _gray(image: Image.Image, _strength: float | None = None) -> Image.Image:
    if image.mode == "L":
        return image.copy()
    a = np.asarray(image, dtype=np.float64) * _Q
    luma = 0.212656 * a[:, :, 0] + 0.715158 * a[:, :, 1] + 0.072186 * a[:, :, 2]
    return _from_q16(luma[:, :, None], "L")


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


def _resample_axis(a: np.ndarray, n_out: int, axis: int, filt, support: float) -> np.ndarray:
    index, weights = _resize_taps(a.shape[axis], n_out, filt, support)
    shape = [1, 1, 1]
    shape[axis] = n_out
    out = np.zeros(a.shape[:axis] + (n_out,) + a.shape[axis + 1 :])
    for k in range(index.shape[1]):
        out += weights[:, k].reshape(shape) * np.take(a, index[:, k], axis=axis)
    return _clamp_q16(out)


def _scaled_size(size: int, percent: float) -> int:
    return max(1, int(math.floor(size * percent / 100.0 + 0.5)))


def _resize(image: Image.Image, percent: float | None) -> Image.Image:
    w, h = image.size
    new_w, new_h = _scaled_size(w, percent), _scaled_size(h, percent)
    if (new_w, new_h) == (w, h):
        return image.copy()
    enlarging = (new_w / w) * (new_h / h) > 1.0
    if enlarging or _is_gray(image):
        filt, support = _mitchell, 2.0
    else:
        filt, support = _lanczos, 3.0
    a = _to_q16(image)
    if new_w * (h + new_h) > new_h * (w + new_w):
        a = _resample_axis(a, new_w, 1, filt, support)
        a = _resample_axis(a, new_h, 0, filt, support)
    else:
        a = _resample_axis(a, new_h, 0, filt, support)
        a = _resample_axis(a, new_w, 1, filt, support)
    return _from_q16(a, image.mode)


# --------------------------------------------------------------------------------------
# jpeg


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality), subsampling="4:2:0", optimize=False)
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: float | None) -> Image.Image:
    data = _jpeg_bytes(image, int(quality))
    with Image.open(io.BytesIO(data)) as decoded:
        out = decoded.convert(image.mode)
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


def _rotated_geometry(width: int, height: int, degrees: float):
    """Best-fit output geometry (x, y, w, h) of ImageMagick's SRT distortion, and cos, sin."""
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
    return gx, gy, gw, gh, cos, sin


def _rotate(image: Image.Image, degrees: float | None) -> Image.Image:
    """ImageMagick 6 ``-rotate``: clockwise, canvas enlarged, white corners."""
    degrees = float(degrees)
    quarter = degrees / 90.0
    if quarter == int(quarter):
        turns = int(quarter) % 4
        methods = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180}
        methods[3] = Image.Transpose.ROTATE_90
        return image.copy() if turns == 0 else image.transpose(methods[turns])
    width, height = image.size
    gx, gy, gw, gh, cos, sin = _rotated_geometry(width, height, degrees)
    cx, cy = width / 2.0, height / 2.0
    src = _to_q16(image)
    pad = 3
    canvas = np.full((height + 2 * pad, width + 2 * pad, src.shape[2]), _QMAX)
    canvas[pad : pad + height, pad : pad + width] = src
    jj, ii = np.mgrid[0:gh, 0:gw]
    dx = gx + ii + 0.5 - cx
    dy = gy + jj + 0.5 - cy
    # Inverse mapping (output -> input), then to pixel-index coordinates (centre = integer).
    u0 = cos * dx + sin * dy + cx - 0.5
    v0 = -sin * dx + cos * dy + cy - 0.5
    fu = np.floor(u0).astype(np.int64)
    fv = np.floor(v0).astype(np.int64)
    total = np.zeros((gh, gw, src.shape[2]))
    divisor = np.zeros((gh, gw))
    for dv in range(-1, 3):
        for du in range(-1, 3):
            u = fu + du
            v = fv + dv
            q = 256.0 * ((u - u0) ** 2 + (v - v0) ** 2)  # ellipse quotient scaled to the LUT
            weight = np.where(q < _WLUT_WIDTH, _ROBIDOUX_LUT[np.clip(q, 0, 1023).astype(int)], 0)
            uu = np.clip(u + pad, 0, width + 2 * pad - 1)
            vv = np.clip(v + pad, 0, height + 2 * pad - 1)
            total += weight[:, :, None] * canvas[vv, uu]
            divisor += weight
    return _from_q16(total / divisor[:, :, None], image.mode)


# --------------------------------------------------------------------------------------
# crop and the modifications beyond the paper


def _crop(image: Image.Image, percent: float | None) -> Image.Image:
    width, height = image.size
    keep = _scaled_size(width, 100.0 - percent)
    return image.crop((0, 0, keep, height))


def _mirror(image: Image.Image, _strength: float | None = None) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _pad(image: Image.Image, percent: float | None) -> Image.Image:
    width, height = image.size
    bx = int(math.floor(width * percent / 100.0 + 0.5))
    by = int(math.floor(height * percent / 100.0 + 0.5))
    fill = 255 if image.mode == "L" else (255, 255, 255)
    return ImageOps.expand(image, border=(bx, by, bx, by), fill=fill)


def _brightness(image: Image.Image, percent: float | None) -> Image.Image:
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
        ),
        Modification(
            "gray",
            None,
            "",
            "grayscale, Rec.709 luma (ImageMagick -type Grayscale); 8-bit L output",
            _gray,
        ),
        Modification(
            "resize",
            50.0,
            "% of the size kept",
            "resize each side to p % (ImageMagick -resize 50%, Lanczos)",
            _resize,
            lambda v: 0.0 < v <= 1000.0,
            "a percentage in (0, 1000]",
        ),
        Modification(
            "jpeg",
            10.0,
            "quality",
            "JPEG compression, baseline, 4:2:0 (ImageMagick -quality 10)",
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


def apply(variant: str, image: Image.Image) -> Image.Image:
    """The image modified by ``variant`` (a new image; the input is not changed).

    RGB in, RGB out (L in, L out); ``gray`` gives L. A ``jpeg`` step yields
    the decoded JPEG, so later steps see the compression. The result records
    the canonical variant name in ``info["risbench.variant"]`` and, when the
    last step is ``jpeg``, the encoded bytes in ``info["risbench.jpeg"]``.
    """
    steps = parse_variant(variant)
    current = _prepare(image)
    data: bytes | None = None
    for mod, strength in steps:
        current = MODIFICATIONS[mod].function(current, strength)
        data = current.info.get(_INFO_JPEG) if mod == "jpeg" else None
    if current is image:
        current = current.copy()
    current.info = {k: v for k, v in current.info.items() if not k.startswith("risbench.")}
    current.info[_INFO_VARIANT] = canonical_name(variant)
    if data is not None:
        current.info[_INFO_JPEG] = data
    return current


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    ``reencode_quality``, a ``.jpg`` at that quality (4:2:0), as the paper's
    ``mogrify -format jpg`` re-encoded every output.
    """
    if reencode_quality is not None and not 1 <= int(reencode_quality) <= 100:
        raise ValueError(f"reencode_quality must be from 1 to 100, not {reencode_quality!r}")
    name = canonical_name(variant)
    if image.info.get(_INFO_VARIANT) == name:
        out = image
    else:
        out = apply(name, image)
    base = str(path_without_suffix)
    if parse_variant(name)[-1][0] == "jpeg":
        data = out.info.get(_INFO_JPEG)
        if data is None:  # an image not made by apply(); encode it once
            data = _jpeg_bytes(out, int(parse_variant(name)[-1][1]))
        path = Path(base + ".jpg")
    elif reencode_quality is not None:
        data = _jpeg_bytes(_prepare(out), int(reencode_quality))
        path = Path(base + ".jpg")
    else:
        buffer = io.BytesIO()
        _prepare(out).save(buffer, "PNG")
        data = buffer.getvalue()
        path = Path(base + ".png")
    _write_atomic(path, data)
    return path


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def open_image(src: str | Path) -> Image.Image:
    """Open an image as L (single-channel files) or RGB (everything else)."""
    with Image.open(src) as im:
        return im.convert("L" if im.mode in _GRAY_MODES else "RGB")


def modify_file(
    variant: str,
    src: str | Path,
    dst_without_suffix: str | Path,
    *,
    reencode_quality: int | None = None,
) -> Path:
    """Open ``src``, apply ``variant`` and write it (see ``save``); returns the written path."""
    return save(variant, open_image(src), dst_without_suffix, reencode_quality=reencode_quality)
