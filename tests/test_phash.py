"""risbench.phash against the golden pHash 0.9.6 reference (tests/data/golden/phash.json)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from risbench import phash

GOLDEN = Path(__file__).parent / "data" / "golden"
REFERENCE = json.loads((GOLDEN / "phash.json").read_text())
FILES = sorted(REFERENCE["files"])
PAIRS = REFERENCE["pairs"]

# Files whose hashes are known to differ from phash.json: none (all 140 files match exactly
# for dct, mh and rv). Keep entries as {name: "reason, bit/byte counts"} should any appear.
EXPECTED_FAILURES: dict[str, str] = {}


def _open(name: str) -> Image.Image:
    image = Image.open(GOLDEN / name)
    image.load()
    return image


@cache
def _hashes(name: str) -> tuple[bytes, bytes, bytes]:
    image = _open(name)
    return phash.dct_hash(image), phash.mh_hash(image), phash.rv_digest(image)


def _xfail(name: str) -> None:
    if name in EXPECTED_FAILURES:
        pytest.xfail(EXPECTED_FAILURES[name])


def test_golden_set_complete():
    assert len(FILES) == 140
    assert len(PAIRS) == 150


@pytest.mark.parametrize("name", FILES)
def test_dct_hash(name):
    _xfail(name)
    value = _hashes(name)[0]
    assert len(value) == 8
    assert value.hex() == REFERENCE["files"][name]["dct"]


@pytest.mark.parametrize("name", FILES)
def test_mh_hash(name):
    _xfail(name)
    value = _hashes(name)[1]
    assert len(value) == 72
    assert value.hex() == REFERENCE["files"][name]["mh"]


@pytest.mark.parametrize("name", FILES)
def test_rv_digest(name):
    _xfail(name)
    value = _hashes(name)[2]
    assert len(value) == 40
    assert list(value) == REFERENCE["files"][name]["rv"]


def _popcount(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def test_pair_distances():
    digests_a = np.array([list(_hashes(p["a"])[2]) for p in PAIRS], dtype=np.uint8)
    digests_b = np.array([list(_hashes(p["b"])[2]) for p in PAIRS], dtype=np.uint8)
    peaks = phash.rv_peak(digests_a, digests_b)
    for i, pair in enumerate(PAIRS):
        dct_a, mh_a, _ = _hashes(pair["a"])
        dct_b, mh_b, _ = _hashes(pair["b"])
        assert _popcount(dct_a, dct_b) == pair["dct_hamming"], pair
        assert abs(_popcount(mh_a, mh_b) / 576 - pair["mh_distance"]) <= 1e-6, pair
        assert abs(peaks[i, i] - pair["rv_peak"]) <= 1e-6, pair
        assert (peaks[i, i] > 0.90) == pair["rv_match"], pair


def test_rv_peak_on_reference_digests():
    files = REFERENCE["files"]
    a = np.array([files[p["a"]]["rv"] for p in PAIRS], dtype=np.uint8)
    b = np.array([files[p["b"]]["rv"] for p in PAIRS], dtype=np.uint8)
    peaks = phash.rv_peak(a, b)
    assert peaks.shape == (150, 150)
    expected = np.array([p["rv_peak"] for p in PAIRS])
    np.testing.assert_allclose(np.diag(peaks), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# rv_peak against a direct transcription of ph_crosscorr


def _crosscorr(x: np.ndarray, y: np.ndarray) -> float:
    n = len(y)
    xs = [float(v) for v in x]
    ys = [float(v) for v in y]
    meanx = sum(xs) / n
    meany = sum(ys) / n
    best = 0.0
    for d in range(n):
        num = denx = deny = 0.0
        for i in range(n):
            yv = ys[(n + i - d) % n]
            num += (xs[i] - meanx) * (yv - meany)
            denx += (xs[i] - meanx) ** 2
            deny += (yv - meany) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.float64(num) / np.sqrt(np.float64(denx * deny))
        if r > best:  # NaN (constant digest) never wins, as in C
            best = float(r)
    return best


def _check_rv_peak(a: np.ndarray, b: np.ndarray) -> None:
    peaks = phash.rv_peak(a, b)
    assert peaks.shape == (len(a), len(b))
    assert peaks.dtype == np.float64
    for i in range(len(a)):
        for j in range(len(b)):
            assert abs(peaks[i, j] - _crosscorr(a[i], b[j])) <= 1e-9


def test_rv_peak_matches_scalar_loop_seeded():
    rng = np.random.default_rng(20180101)
    a = rng.integers(0, 256, (7, 40), dtype=np.uint8)
    b = rng.integers(0, 256, (9, 40), dtype=np.uint8)
    b[0] = 17  # constant digest: peak 0
    b[1] = 255 - a[0]  # anti-correlated with a[0] at shift 0
    b[2] = np.roll(a[1], 5)  # a shifted copy: peak 1
    _check_rv_peak(a, b)
    assert phash.rv_peak(a[1:2], b[2:3])[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert (phash.rv_peak(a, b[:1]) == 0).all()


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(40))),
    arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(40))),
)
def test_rv_peak_matches_scalar_loop_hypothesis(a, b):
    _check_rv_peak(a, b)


# --------------------------------------------------------------------------------------------
# image modes


def _all_hashes(image: Image.Image) -> tuple[bytes, bytes, bytes]:
    return phash.dct_hash(image), phash.mh_hash(image), phash.rv_digest(image)


def _alpha(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    alpha = ((np.arange(w)[None, :] * 255) // max(w - 1, 1)).repeat(h, axis=0).astype(np.uint8)
    alpha[: h // 4] = 0  # fully transparent band
    alpha[-h // 4 :] = 255  # fully opaque band
    return alpha


def _flatten_by_hand(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    c = colour.astype(np.int64)
    a = alpha.astype(np.int64)
    if c.ndim == 3:
        a = a[..., None]
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def test_rgba_hashes_like_flattened_on_white():
    rgb = np.asarray(_open("images/skimage_astronaut.png").convert("RGB")).copy()
    alpha = _alpha(rgb.shape[:2])
    rgb[alpha == 0] = (0, 255, 0)  # garbage under transparent pixels must not matter
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    flat = Image.fromarray(_flatten_by_hand(rgb, alpha), "RGB")
    assert _all_hashes(rgba) == _all_hashes(flat)
    assert _all_hashes(rgba) != _all_hashes(Image.fromarray(rgb, "RGB"))


def test_la_hashes_like_flattened_on_white():
    gray = np.asarray(_open("images/skimage_camera.png")).copy()
    assert gray.ndim == 2
    alpha = _alpha(gray.shape)
    gray[alpha == 0] = 3
    la = Image.fromarray(np.dstack([gray, alpha]), "LA")
    flat = Image.fromarray(_flatten_by_hand(gray, alpha), "L")
    assert _all_hashes(la) == _all_hashes(flat)


def test_palette_and_16bit_modes():
    image = _open("images/skimage_coffee.png")
    pal = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert _all_hashes(pal) == _all_hashes(pal.convert("RGB"))
    rgb = np.asarray(image.convert("RGB")).copy()
    rgb[:40] = (0, 255, 0)
    keyed = Image.fromarray(rgb, "RGB")
    keyed.info["transparency"] = (0, 255, 0)  # a PNG tRNS colour key: transparent -> white
    rgb[:40] = 255
    assert _all_hashes(keyed) == _all_hashes(Image.fromarray(rgb, "RGB"))
    gray = np.asarray(_open("images/skimage_coins.png"))
    wide = Image.fromarray(gray.astype(np.uint16) * 256 + 100)  # I;16, >> 8 gives gray
    assert wide.mode.startswith("I")
    assert _all_hashes(wide) == _all_hashes(Image.fromarray(gray, "L"))


@pytest.mark.parametrize("path", ["pillow memory", "matrix conversion"])
def test_studio_luma_exact_for_all_colours(monkeypatch, path):
    """Both ways to the luma equal CImg's integer formula on all 2^24 colours: the integer
    kernel on Pillow's exported memory (whole 1024x1024 images, and the 64-row strips of a
    4096x4096 image too large to export whole) and Pillow's matrix conversion."""
    if path == "matrix conversion":
        monkeypatch.setattr(phash, "_rgbx_view", lambda image: None)
    elif not hasattr(Image.Image, "__arrow_c_array__"):
        pytest.skip("Pillow < 11.2 exports no pixel memory: the matrix conversion is used")
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)
    r, g, b = (rgb[:, i].astype(np.int32) for i in range(3))
    expected = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16).reshape(4096, 4096)
    big = Image.fromarray(rgb.reshape(4096, 4096, 3), "RGB")
    if path == "pillow memory":
        assert phash._rgbx_view(big) is None  # several blocks: converted in strips
    gray, colour = phash.gray_array(big)
    assert colour
    np.testing.assert_array_equal(gray, expected)
    for k in range(0, 4096, 1024):
        part = Image.fromarray(rgb.reshape(4096, 4096, 3)[k : k + 1024], "RGB").crop(
            (0, 0, 1024, 1024)
        )
        if path == "pillow memory":
            assert phash._rgbx_view(part) is not None
        np.testing.assert_array_equal(phash.gray_array(part)[0], expected[k : k + 1024, :1024])


# --------------------------------------------------------------------------------------------
# the vectorised recursive blur against a plain transcription of the README's description


def _vanvliet_reference(x: np.ndarray) -> np.ndarray:
    b0, a1, a2, a3, m = phash._VV
    d = x.astype(np.float64)
    n = d.shape[0]
    fwd = np.empty(d.shape, np.float32)
    v1 = v2 = v3 = d[0] / b0
    for i in range(n):
        v0 = ((d[i] + a1 * v1) + a2 * v2) + a3 * v3
        fwd[i] = v0
        v3, v2, v1 = v2, v1, v0
    u = d[n - 1] / (1 - a1 - a2 - a3)
    w = u / (1 - a1 - a2 - a3)
    e1, e2, e3 = v1 - u, v2 - u, v3 - u
    sq = b0 * b0
    z0 = (m[0] * e1 + m[1] * e2 + m[2] * e3 + w) * sq
    z1 = (m[3] * e1 + m[4] * e2 + m[5] * e3 + w) * sq
    z2 = (m[6] * e1 + m[7] * e2 + m[8] * e3 + w) * sq
    out = np.empty(d.shape, np.float32)
    out[n - 1] = z0
    v1, v2, v3 = z0, z1, z2
    for i in range(n - 2, -1, -1):
        v0 = ((fwd[i].astype(np.float64) * sq + a1 * v1) + a2 * v2) + a3 * v3
        out[i] = v0
        v3, v2, v1 = v2, v1, v0
    return out


@pytest.mark.parametrize("shape", [(2, 3), (3, 1), (5, 7), (64, 33), (301, 5)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_blur_pass_matches_reference(shape, dtype):
    rng = np.random.default_rng(math.prod(shape))
    x = rng.integers(0, 256, shape).astype(dtype)
    if dtype == np.float32:
        x += rng.random(shape, dtype=np.float32)
    np.testing.assert_array_equal(phash._vanvliet_lines(x), _vanvliet_reference(x))


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("shape", [(2, 3), (3, 2), (4, 5), (5, 1), (9, 4), (40, 6)])
def test_blur_in_chunks_of_lines_matches_reference(monkeypatch, chunk, shape):
    """The compiled passes run a chunk of lines at a time (columns directly, rows through
    transposed tiles): any chunk length, a last partial chunk included, gives the same
    bits along either axis, also with the uint8 cast."""
    monkeypatch.setattr(phash, "_BLUR_CHUNK", chunk)
    monkeypatch.setattr(phash, "_BLUR_TILE_ROWS", chunk)
    rng = np.random.default_rng(chunk * 100 + shape[0])
    x = rng.integers(0, 256, shape).astype(np.uint8)
    y = x.astype(np.float32) + rng.random(shape, dtype=np.float32)
    np.testing.assert_array_equal(phash._vanvliet_lines(y), _vanvliet_reference(y))
    np.testing.assert_array_equal(phash._vanvliet_lines(y.T, axis=1), _vanvliet_reference(y).T)
    expected = phash._u8_cast(_vanvliet_reference(x))
    np.testing.assert_array_equal(phash._vanvliet_lines(x, u8=True), expected)
    np.testing.assert_array_equal(phash._vanvliet_lines(x.T, u8=True, axis=1), expected.T)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (37, 70), (300, 41)])
def test_blur_is_x_pass_then_y_pass(shape):
    """CImg's blur(1): the x pass (along rows), cast to uint8 for uint8 images, then the y
    pass; in float without the casts for the float copy."""
    x = np.random.default_rng(shape[0]).integers(0, 256, shape).astype(np.uint8)

    def ref(a, u8):
        if a.shape[0] < 2:  # a one-pixel line is left as it is
            return a.astype(np.float32)
        out = _vanvliet_reference(a)
        return phash._u8_cast(out) if u8 else out

    expected = ref(ref(x.T, True).T, True)
    np.testing.assert_array_equal(phash._blur_u8(x), expected)
    np.testing.assert_array_equal(phash._blur_f32(x), ref(ref(x.T, False).T, False))


def test_mh_correlation_matches_tap_by_tap_numpy():
    """The compiled 17x17 correlation against NumPy float32 operations, one whole-image
    multiply and add per tap in pHash's order (products rounded to float first)."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 512)).astype(np.uint8)
    img[:, 100:140] = 7  # flat areas and edges
    pad = np.pad(img, 8, mode="edge").astype(np.float32)
    h, w = img.shape
    expected = None
    for q in range(17):
        for p in range(17):
            term = phash._MH_KERNEL[q, p] * pad[q : q + h, p : p + w]
            expected = term if expected is None else expected + term
    np.testing.assert_array_equal(phash._mh_correlate(img), expected)


@pytest.mark.parametrize("n, size", [(513, 512), (700, 512), (1100, 512), (2049, 512), (9, 4)])
def test_area_resize_matches_numpy(n, size):
    """The compiled moving-average resize against the same float accumulation in NumPy:
    piece by piece in input order, then the division by n, then the truncating cast."""
    rng = np.random.default_rng(n)
    a8 = rng.integers(0, 256, (n, 6)).astype(np.uint8)
    af = a8.astype(np.float32) - rng.random((n, 6), dtype=np.float32)  # negatives too
    src, weight = phash._area_plan(n, size)
    for a, clamp in ((a8, True), (af, False)):
        acc = np.zeros((size, 6), dtype=np.float32)
        for k in range(src.shape[1]):
            acc += a[src[:, k]].astype(np.float32) * weight[:, k, None]
        acc /= np.float32(n)
        expected = phash._u8_cast(acc) if clamp else acc
        np.testing.assert_array_equal(phash._area_axis0(a, size, clamp), expected)
        np.testing.assert_array_equal(phash._area_axis0(a.T.copy().T, size, clamp), expected)
        for rows in (1, 4, 6):  # along axis 1: four rows at a time, then the rest
            along_x = np.empty((rows, size), dtype=expected.dtype)
            phash._kern.area_axis1(a.T[:rows].copy(), src, weight, along_x, clamp)
            np.testing.assert_array_equal(along_x, expected.T[:rows])


@pytest.mark.parametrize(
    "n, size", [(2, 512), (3, 512), (255, 512), (384, 512), (511, 512), (4, 9)]
)
def test_cubic_resize_matches_numpy(n, size):
    """The compiled cubic resize against NumPy evaluating C's double expressions on whole
    arrays: neighbour combinations per source row, then ((t a + t^2 b) + t^3 c) / 2 + p1;
    uint8 clamped and truncated, float rounded to float32."""
    rng = np.random.default_rng(n)
    a8 = rng.integers(0, 256, (n, 5)).astype(np.uint8)
    af = a8.astype(np.float32) * np.float32(0.37) - rng.random((n, 5), dtype=np.float32)
    idx, t, i0, i2, i3 = phash._cubic_plan(n, size)
    t = t[:, None]
    for a, clamp in ((a8, True), (af, False)):
        p1 = a.astype(np.float64)
        p0, p2, p3 = p1[i0], p1[i2], p1[i3]
        ca, cb, cc = -p0 + p2, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
        val = ((t * ca[idx] + (t * t) * cb[idx]) + (t * t * t) * cc[idx]) * 0.5 + p1[idx]
        expected = np.clip(val, 0, 255).astype(np.uint8) if clamp else val.astype(np.float32)
        np.testing.assert_array_equal(phash._cubic_axis0(a, size, clamp), expected)
        np.testing.assert_array_equal(phash._cubic_axis0(a.T.copy().T, size, clamp), expected)


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (300, 7), (384, 255), (600, 800)])
def test_radon_sums_match_bincount(shape):
    """Per-line sums of the sampled pixels and their squares, in sample order, as
    np.bincount with weights adds them."""
    img = np.random.default_rng(shape[1]).integers(0, 256, shape).astype(np.uint8)
    flat, line, _ = phash._radon_plan(*shape)
    vals = img.ravel()[flat].astype(np.float64)
    s1, s2 = np.zeros(phash._RV_N), np.zeros(phash._RV_N)
    phash._kern.radon_sums(img.ravel(), flat, line, s1, s2)
    np.testing.assert_array_equal(s1, np.bincount(line, weights=vals, minlength=phash._RV_N))
    np.testing.assert_array_equal(s2, np.bincount(line, weights=vals * vals, minlength=180))


def test_small_and_large_images_do_not_fail():
    rng = np.random.default_rng(5)
    for shape in [(1, 1), (3, 2), (20, 31), (600, 700)]:
        for mode in ("L", "RGB"):
            size = shape if mode == "L" else (*shape, 3)
            image = Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode)
            dct, mh, rv = _all_hashes(image)
            assert (len(dct), len(mh), len(rv)) == (8, 72, 40)


# --------------------------------------------------------------------------------------------
# bounded memory: strips and chunks give the same bits; peak memory per input pixel


def _mode_zoo(h: int, w: int) -> dict[str, Image.Image]:
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a = rng.integers(0, 256, (h, w), dtype=np.uint8)
    keyed = Image.fromarray(rgb, "RGB")
    keyed.info["transparency"] = tuple(int(v) for v in rgb[1, 2])
    return {
        "RGB": Image.fromarray(rgb, "RGB"),
        "RGBA": Image.fromarray(np.dstack([rgb, a]), "RGBA"),
        "LA": Image.fromarray(np.dstack([a, a[::-1]]), "LA"),
        "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=40),
        "RGB+tRNS": keyed,
        "I;16": Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)),
        "F": Image.fromarray((rng.random((h, w)) * 400 - 50).astype(np.float32)),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
    }


@pytest.mark.parametrize("strip_pixels", [1, 40, 97])
def test_gray_array_in_strips_equals_whole_image(monkeypatch, strip_pixels):
    """Every mode conversion is per pixel, so strips of rows give the whole-image result
    (the whole-image path is checked against hand computations above)."""
    images = _mode_zoo(23, 19)
    whole = {name: phash.gray_array(image) for name, image in images.items()}
    monkeypatch.setattr(phash, "_STRIP_PIXELS", strip_pixels)
    for name, image in images.items():
        gray, colour = phash.gray_array(image)
        assert colour == whole[name][1], name
        np.testing.assert_array_equal(gray, whole[name][0], err_msg=name)


@pytest.mark.parametrize("size", [(700, 90), (90, 700), (1100, 600)])
def test_resize_in_column_chunks_equals_one_chunk(monkeypatch, size):
    """Long thin images take the cubic branch along the short side and the moving average
    along the long one; resizing in column chunks changes no bit of either."""
    image = _open("images/skimage_astronaut.png").resize(size)
    gray, colour = phash.gray_array(image)
    whole = phash._mh_preprocess(gray, colour), phash._mh_preprocess(gray, False)
    monkeypatch.setattr(phash, "_RESIZE_CHUNK", 1000)
    assert np.array_equal(phash._mh_preprocess(gray, colour), whole[0])
    assert np.array_equal(phash._mh_preprocess(gray, False), whole[1])


_PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    from PIL import Image
    from risbench import phash

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident set
    base = status("VmRSS")
    image = Image.open(sys.argv[1])
    image.load()
    getattr(phash, sys.argv[2])(image)
    print((status("VmHWM") - base) / (image.width * image.height))
    """
)


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.parametrize(
    "function, mode",
    [("dct_hash", "RGB"), ("mh_hash", "RGB"), ("rv_digest", "RGB"), ("mh_hash", "L")],
)
def test_peak_memory_at_most_40_bytes_per_pixel(tmp_path, function, mode):
    """Issue 14: decoding a 3 MP photo and hashing it peaks at most 40 bytes per input
    pixel above the interpreter with its imports (pHash 0.9.6-exact code once took 58)."""
    source = _open("images/skimage_astronaut.png").convert(mode)
    path = tmp_path / "photo.bmp"  # uncompressed: quick to write and to decode
    source.resize((2048, 1536), Image.Resampling.BILINEAR).save(path)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), function],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(done.stdout) <= 40, done.stdout


# --------------------------------------------------------------------------------------------
# degenerate RV digests


def _digest(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    return np.frombuffer(phash.rv_digest(image), dtype=np.uint8)


def test_rv_degenerate_digests():
    """pHash's all-zero digest (a radon line samples no pixel: images over ~2.02x taller
    than wide or ~3.04x wider than tall; or an image still constant after the blur) and
    any other constant row are degenerate; real digests, one differing byte included, are
    not. (A white RGB image is not degenerate: the blur turns its luma 235 into 234/235.)"""
    zero = [_digest(1, 5), _digest(10, 100), _digest(1000, 2030), _digest(3050, 1000)]
    blank = np.frombuffer(phash.rv_digest(Image.new("L", (64, 48), 128)), np.uint8)
    for digest in [*zero, blank]:
        assert not digest.any()
    white = np.frombuffer(phash.rv_digest(Image.new("RGB", (64, 48), "white")), np.uint8)
    normal = [_digest(1000, 2000), _digest(3000, 1000), white]
    almost = np.full(40, 17, dtype=np.uint8)
    almost[5] = 18
    rows = np.array([*zero, blank, np.full(40, 17), *normal, almost], dtype=np.uint8)
    flags = phash.rv_degenerate(rows)
    assert flags.dtype == bool
    assert flags.tolist() == [True] * 6 + [False] * 4
    golden = np.array([REFERENCE["files"][name]["rv"] for name in FILES], dtype=np.uint8)
    assert not phash.rv_degenerate(golden).any()
    assert phash.rv_degenerate(np.zeros((0, 40), np.uint8)).shape == (0,)


def test_rv_degenerate_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(rows, 40\) uint8.*\(40,\)"):
        phash.rv_degenerate(np.zeros(40, np.uint8))
    with pytest.raises(ValueError, match="int64"):
        phash.rv_degenerate(np.zeros((2, 40), np.int64))


def test_degenerate_digests_have_peak_zero_with_everything():
    """ph_crosscorr divides 0 by 0 at every shift for a constant digest: the peak stays 0
    against any digest, the same constant one included (the scalar transcription agrees)."""
    rows = np.array([_digest(1, 5), _digest(10, 100), np.full(40, 200), _digest(64, 64)])
    rows = rows.astype(np.uint8)
    peaks = phash.rv_peak(rows, rows)
    for i in range(3):
        for j in range(4):
            assert peaks[i, j] == peaks[j, i] == _crosscorr(rows[i], rows[j]) == 0.0
    assert peaks[3, 3] == pytest.approx(1.0, abs=1e-12)
