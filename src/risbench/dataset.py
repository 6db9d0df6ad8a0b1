"""The dataset stage: safe decoding, duplicate checks, the split, the manifest and reports.

``risbench.sources`` finds the files; every one of them ends up either in the
manifest or in a report with the reason (``skipped.csv``: not read or not
decodable; ``duplicates.csv``; ``near_duplicates.csv`` when dropped). Paths in
reports and the manifest are UTF-8 text (``sources.display_path``).

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
import logging
import os
import shutil
import stat
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from risbench import catalog
from risbench.files import sha256_file
from risbench.sources import (
    DEFAULT_EXTENSIONS,
    Found,
    Source,
    demo_sources,
    display_path,
    file_kind,
    find_folder,
    find_mirflickr,
    split_name,
)

log = logging.getLogger("risbench")

# Pillow's own decompression-bomb limit (it warns above it and refuses twice it).
DEFAULT_MAX_PIXELS = 89_478_485
# Perceptual-hash (imagehash phash, 64 bits) distance at or below which two images
# are near-duplicates; the closest pair of the demo photos is at 20.
DEFAULT_NEAR_DUPLICATE_DISTANCE = 4


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
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # e.g. replaced by a FIFO since it was found
            raise BadImage(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_size == 0:
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
    # files looked at (sources and unused ones), and the usable ones among them
    files: int = 0
    usable: int = 0


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


def _check(sources: list[Source], max_pixels: int, progress: bool, drop_duplicates: bool = True):
    """The first pass: (usable images, skipped rows, duplicate rows), in id order; an
    exact duplicate is left out of the usable images unless not ``drop_duplicates``."""
    from tqdm import tqdm

    usable: list[_Decoded] = []
    skipped, duplicates, first_with_pixels = [], [], {}
    for source in tqdm(sources, desc="check", unit="img", disable=not progress):
        shown = display_path(source.path)
        try:
            image, mode = decode(source.path, max_pixels)
            digest = pixel_digest(image)
            phash = perceptual_hash(image)
        except BadImage as error:
            skipped.append({"path": shown, "reason": str(error)})
            continue
        except Exception as error:  # e.g. hashing an odd image: skip it, never the run
            skipped.append(
                {"path": shown, "reason": f"cannot use: {type(error).__name__}: {error}"}
            )
            continue
        if digest in first_with_pixels:
            first = display_path(first_with_pixels[digest].path)
            duplicates.append({"path": shown, "duplicate_of": first})
            if drop_duplicates:
                continue
        first_with_pixels.setdefault(digest, source)
        usable.append(_Decoded(source, mode, image.width, image.height, phash))
        del image
    return usable, skipped, duplicates


def _near_duplicates(usable: list[_Decoded], distance: int | None, drop: bool):
    """(near-duplicate rows, the usable images left) for phash distance <= ``distance``."""
    if distance is None:
        return [], usable
    pairs, dropped = near_duplicate_pairs([u.phash for u in usable], distance, drop)
    near = [
        {
            "path": display_path(usable[j].source.path),
            "near_duplicate_of": display_path(usable[i].source.path),
            "distance": d,
            "dropped": j in dropped,
        }
        for j, i, d in pairs
    ]
    return near, [u for k, u in enumerate(usable) if k not in dropped]


def keep_exact(source: Path, folder: Path, image_id: str) -> Path:
    """``source``'s bytes as ``folder/{image_id}.{suffix}``: a hard link when both lie on
    one file system (no copy of a large data set), else a copy; never re-encoded."""
    out = folder / f"{image_id}.{split_name(source.name)[1]}"
    out.unlink(missing_ok=True)
    target = os.path.realpath(source)  # a link's target: a relative link would dangle here
    try:
        os.link(target, out)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(target, out)
    return out


def _write(chosen, images_dir: Path, max_pixels: int, progress: bool, keep_bytes: bool = False):
    """The second pass: writes the chosen images (as PNG, or their own bytes with
    ``keep_bytes``); returns (manifest rows, skipped rows)."""
    from tqdm import tqdm

    rows, skipped = [], []
    for entry, role in tqdm(chosen, desc="write", unit="img", disable=not progress):
        source = entry.source
        try:  # decoded again: the first pass keeps no pixels
            image, _ = decode(source.path, max_pixels)
        except BadImage as error:  # changed on disk since the first pass
            skipped.append({"path": display_path(source.path), "reason": str(error)})
            continue
        if keep_bytes:
            out = keep_exact(source.path, images_dir, source.image_id)
        else:
            out = images_dir / f"{source.image_id}.png"
            image.save(out, format="PNG")
        rows.append(
            {
                "image_id": source.image_id,
                "source_path": display_path(source.path),
                "sha256": sha256_file(source.path),
                "file_size": source.path.stat().st_size,
                "width": image.width,
                "height": image.height,
                "source_mode": entry.mode,
                "phash": f"{entry.phash:016x}",
                "role": role,
                "path": str(out),
            }
        )
    return rows, skipped


def build(
    sources: list[Source],
    images_dir: str | Path,
    *,
    unused: Sequence[dict] = (),
    bases: int | None = None,
    distractors: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    sample: bool = False,
    seed: int = 0,
    near_duplicate_distance: int | None = DEFAULT_NEAR_DUPLICATE_DISTANCE,
    drop_near_duplicates: bool = False,
    progress: bool = True,
    keep_bytes: bool = False,
    drop_duplicates: bool = True,
) -> Built:
    """Decodes the sources, skips bad files, drops duplicates, splits, writes the originals.

    Returns the manifest (one row per written image: id, source path, sha256,
    file size, decoded width and height, source mode, phash, role, path) and
    the reports: ``skipped`` (path, reason; ``unused``, the files that were
    not sources, first), ``duplicates`` (same decoded pixels as an earlier image
    in name order: path, duplicate_of) and ``near_duplicates`` (phash distance
    <= ``near_duplicate_distance``: path, near_duplicate_of, distance, dropped;
    the later image in name order is dropped when ``drop_near_duplicates``).
    ``near_duplicate_distance=None`` turns the near-duplicate check off.
    ``keep_bytes``: the images keep their exact bytes (:func:`keep_exact`) instead
    of being written as PNG; ``drop_duplicates=False``: exact duplicates are
    reported and kept (a pairs data set's references: its ground truth names them).
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(sources, key=lambda s: s.image_id)
    usable, skipped, duplicates = _check(sources, max_pixels, progress, drop_duplicates)
    near, usable = _near_duplicates(usable, near_duplicate_distance, drop_near_duplicates)
    problem = None
    try:
        roles = split_roles(
            [u.source.image_id for u in usable], bases, distractors, sample=sample, seed=seed
        )
    except ValueError as error:  # too few usable images: the reports still say why
        problem, roles = str(error), [None] * len(usable)
    chosen = [(u, role) for u, role in zip(usable, roles, strict=True) if role is not None]
    rows, changed = _write(chosen, images_dir, max_pixels, progress, keep_bytes)
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest = manifest.sort_values("image_id", ignore_index=True)
    closest = None
    if len(manifest) >= 2:
        i, j, distance = closest_pair([int(h, 16) for h in manifest["phash"]])
        closest = (manifest["image_id"][i], manifest["image_id"][j], distance)
    return Built(
        manifest=manifest,
        skipped=pd.DataFrame([*unused, *skipped, *changed], columns=SKIPPED_COLUMNS),
        duplicates=pd.DataFrame(duplicates, columns=DUPLICATES_COLUMNS),
        near_duplicates=pd.DataFrame(near, columns=NEAR_DUPLICATES_COLUMNS),
        closest=closest,
        problem=problem,
        files=len(unused) + len(sources),
        usable=len(usable) - len(changed),
    )


# ---------------------------------------------------------------- the dataset stage

REPORTS = ("skipped", "duplicates", "near_duplicates")


class DatasetError(Exception):
    """The dataset stage cannot make a benchmark set; the message says why and where to look."""


def find_sources(spec: dict, source_dir: str | Path | None = None) -> Found:
    """The files of the config's dataset section (``source_dir``: the unpacked MIRFLICKR)."""
    source = spec.get("source", "demo")
    extensions = spec.get("extensions", DEFAULT_EXTENSIONS)
    try:
        if source == "demo":
            return Found(demo_sources())
        if source == "mirflickr":
            return find_mirflickr(source_dir, extensions)
        if source == "folder":
            if not spec.get("folder"):
                raise DatasetError("dataset.folder: required when dataset.source is 'folder'")
            return find_folder(spec["folder"], extensions, spec.get("recursive", True))
    except FileNotFoundError as error:
        raise DatasetError(str(error)) from None
    raise DatasetError(f"dataset.source: '{source}' is not one of demo, folder, mirflickr")


def log_build(built: Built, distance: int | None, duplicates_kept: bool = False) -> None:
    for row in built.skipped.itertuples():
        log.warning("skipped %s: %s", row.path, row.reason)
    for row in built.duplicates.itertuples():
        verb = "kept" if duplicates_kept else "dropped"
        log.warning("%s %s: same pixels as %s", verb, row.path, row.duplicate_of)
    for row in built.near_duplicates.itertuples():
        dropped = " (dropped)" if row.dropped else ""
        log.warning(
            "near-duplicate: %s is within phash distance %d of %s%s",
            row.path,
            row.distance,
            row.near_duplicate_of,
            dropped,
        )
    if distance is None:
        log.info("near-duplicate check off (dataset.near_duplicate_distance: null)")
    else:
        closest = ""
        if built.closest is not None:
            closest = " closest pair {}, {} at {}".format(*built.closest)
        log.info(
            "near-duplicate check (phash distance <= %d of 64): %d pair(s);%s",
            distance,
            len(built.near_duplicates),
            closest,
        )
    log.info(
        "kept %d images: %s; %d of %d files skipped, %d duplicates, %d usable images not "
        "chosen (dataset.bases)",
        len(built.manifest),
        built.manifest["role"].value_counts().to_dict(),
        len(built.skipped),
        built.files,
        len(built.duplicates),
        built.usable - len(built.manifest) if built.problem is None else 0,
    )


def write_reports(built: Built, paths: dict, reports_dir: str | Path | None) -> str:
    """Writes the reports (``REPORTS``) to ``paths`` (name -> path, or None for not
    wanted) and, all three, into ``reports_dir``; returns where to read them."""
    tables = {
        "skipped": built.skipped,
        "duplicates": built.duplicates,
        "near_duplicates": built.near_duplicates,
    }
    targets = [(tables[name], Path(path)) for name, path in paths.items() if path]
    if reports_dir is not None:
        # A log folder: Snakemake deletes the outputs of a failed job, never its logs.
        targets = [(tables[name], Path(reports_dir) / f"{name}.csv") for name in REPORTS] + targets
    for table, path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
    return ", ".join(str(path) for _, path in targets[:3])


def too_few(built: Built, needed: int = 2) -> str | None:
    """Why ``built`` cannot be benchmarked (fewer than ``needed`` bases), or None."""
    bases = int((built.manifest["role"] == "base").sum())
    if built.problem is None and bases >= needed:
        return None
    dropped = int(built.near_duplicates["dropped"].sum()) if len(built.near_duplicates) else 0
    counts = (
        f"{built.usable} usable image{'' if built.usable == 1 else 's'} of {built.files} files "
        f"({len(built.skipped)} skipped, {len(built.duplicates)} exact duplicates, "
        f"{dropped} near-duplicates dropped)"
    )
    if built.problem is not None:
        return f"{built.problem}: {counts}"
    among = f"{bases} base image{'' if bases == 1 else 's'} among them"
    return f"{counts}, {among}; a benchmark needs {needed} or more base images"


def run_stage(
    spec: dict,
    *,
    images_dir: str | Path,
    manifest: str | Path,
    image_list: str | Path,
    reports: dict,
    reports_dir: str | Path | None = None,
    source_dir: str | Path | None = None,
    variants_root: str | Path | None = None,
) -> Built:
    """The ``dataset`` job: finds the config's (``spec``) files, builds the set, logs and
    writes the reports (``write_reports``), then the manifest and the original list.
    A variants or pairs data set (:mod:`risbench.layouts`) also writes its own
    variants' folders and lists, ``{variants_root}/{variant}/`` and ``.parquet``.

    Raises DatasetError, after writing the reports, when no benchmark can be made.
    """
    if spec.get("source") in ("variants", "pairs"):
        from risbench import layouts

        paths = {"images_dir": images_dir, "manifest": manifest, "image_list": image_list}
        paths.update(reports=reports, reports_dir=reports_dir, variants_root=variants_root)
        return layouts.run_stage(spec, **paths)
    found = find_sources(spec, source_dir)
    log.info(
        "%d files (%s): %d to decode, %d not read",
        len(found.sources) + len(found.unused),
        spec.get("source", "demo"),
        len(found.sources),
        len(found.unused),
    )
    distance = spec.get("near_duplicate_distance", DEFAULT_NEAR_DUPLICATE_DISTANCE)
    built = build(
        found.sources,
        images_dir,
        unused=found.unused,
        bases=spec.get("bases"),
        distractors=spec.get("distractors", 0),
        max_pixels=spec.get("max_pixels", DEFAULT_MAX_PIXELS),
        sample=spec.get("sample", False),
        seed=spec.get("seed", 0),
        near_duplicate_distance=distance,
        drop_near_duplicates=spec.get("drop_near_duplicates", False),
    )
    log_build(built, distance)
    where = write_reports(built, reports, reports_dir)  # first: they say why a run fails
    problem = too_few(built)
    if problem:
        raise DatasetError(f"{problem}. Why each file was not used: {where}")
    built.manifest.to_parquet(manifest, index=False)
    catalog.original_list(built.manifest).to_parquet(image_list, index=False)
    return built
