"""An index of images for reverse image search: ``risbench index`` and ``risbench query``.

An :class:`ImageIndex` holds one descriptor of every indexed image and answers,
for a photo, every indexed image within a radius, nearest first. Every hash, every
CNN descriptor and every compact code of one (``{source}__{method}{size}``: the
source CNN descriptor computed here, then encoded by the encoder the compress job
kept, :class:`risbench.encoders.Encoder`) works: binary codes and float vectors are
searched with an exact FAISS flat range search (:mod:`risbench.search`, risbench's
units and its ``d ≤ radius``), rv digests with an exact scan of
``distance.pairwise`` (FAISS has no peak cross-correlation). torch is imported only
for a CNN descriptor or a compact code.

The file (this module is its one owner; :data:`FORMAT_VERSION`) is a zip archive:
``header.json`` (format, version, descriptor, its kind and bits, distance, radius,
the model entry of a CNN descriptor, the descriptor's attributes, the risbench and
FAISS versions, the image paths, absolute, in row order) and the rows:
``faiss.index`` (``faiss.serialize_index``) or, for rv, ``vectors.npy``; a compact
code's index also keeps its encoder file whole (``encoder.npz``), its SHA-256,
descriptor, source and path in the header's ``encoder``, so queries encode with
the very encoder the index was built with. Adding images appends rows to the FAISS
index as it is (no rebuild). An index is refused (:class:`IndexError_`, the message
saying which) when its format version, the risbench or FAISS version, or the
descriptor's library versions or weights differ from this installation's, when a
caller expects another descriptor or another encoder file, or when its kept
encoder does not have the recorded SHA-256. A new compact-code index refuses an
encoder of another code, or one fitted on source features computed otherwise
(:data:`ENCODER_SOURCE_ATTRS`: input size, weights, layer, pooling ...).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from risbench import distance as dist
from risbench import encoders, files, results, search

FORMAT = "risbench image index"
FORMAT_VERSION = 1
# Descriptor attributes that must match between the index and the query side:
# the libraries that compute it and, for CNN features, the weights file.
COMPARED_ATTRS = ("versions", "weights_sha256", "method", "layer", "pooling", "normalize")
# What computes a compact code's source features: these must match between the
# features its encoder was fitted on (the encoder file's source_attrs) and the
# features this index computes (the library versions are not compared: the same
# features from another torch release would refuse every index of a moved run).
ENCODER_SOURCE_ATTRS = (
    "model", "arch", "weights_sha256", "layer", "pooling", "normalize", "input_size",
    "keep_aspect", "interpolation", "mean", "std",
)  # fmt: skip
ENCODER_MEMBER = "encoder.npz"
CNN_BATCH = 16


class IndexError_(ValueError):  # noqa: N801 - IndexError is Python's
    """An index file that cannot be used; the message names the file and why."""


class UnreadableImage(ValueError):
    """An image that cannot be decoded; the message names the file."""


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class Descriptor:
    """A descriptor by name: a hash, a CNN descriptor of model ``model`` (config entry
    ``spec``), or a compact code of the CNN descriptor ``source`` (model ``model``)."""

    name: str
    kind: str  # binary, rv or float
    bits: int | None = None  # binary: meaningful bits
    model: str | None = None
    spec: dict | None = None
    source: str | None = None  # a compact code: the CNN descriptor it encodes


def _builtin_models() -> dict[str, dict]:
    """Every built-in model key with every pooling and normalisation (so that every
    descriptor name of the default config resolves without a config file)."""
    from risbench import models

    every = {"pooling": list(models.POOLINGS), "normalize": list(models.NORMALIZATIONS)}
    return {key: dict(every) for key in models.MODELS}


def resolve(name: str, models: dict | None = None) -> Descriptor:
    """The descriptor called ``name``: a hash, else a descriptor of one of ``models``
    (a config's ``models`` section; default: the built-in models), or a compact code
    ``{source}__{method}{size}`` of such a descriptor."""
    from risbench import compress, hashing
    from risbench import models as model_table

    if name in hashing.HASHES:
        method = hashing.get(name)
        return Descriptor(name, method.kind, method.bits if method.kind == "binary" else None)
    compact = compress.parse_name(name)
    if compact is not None:
        source, method, size = compact
        cnn = resolve(source, models)
        if cnn.kind != "float":
            raise ValueError(f"{name}: compact codes encode CNN descriptors, {source} is a hash")
        kind = compress.METHODS[method].kind
        bits = size if kind == "binary" else None
        return Descriptor(name, kind, bits, cnn.model, cnn.spec, source)
    for key, spec in (models if models is not None else _builtin_models()).items():
        if name in model_table.descriptor_names(key, spec):
            return Descriptor(name, "float", None, key, dict(spec))
    raise ValueError(
        f"unknown descriptor {name!r}: not a hash ({', '.join(hashing.HASHES)}) nor a "
        "descriptor of the models (names like mobilenet_v2_features_max_norm_l2)"
    )


class _Describer:
    """Computes one descriptor of image files; ``attrs`` as its stores record them (a
    compact code: its source CNN descriptor's, which ``encoder`` then encodes)."""

    def __init__(self, d: Descriptor, encoder=None):
        self.d = d
        self.extractor = None
        self.encoder = encoder
        if (d.source is None) != (encoder is None):
            raise ValueError(f"{d.name}: an encoder is needed for, and only for, a compact code")
        if d.kind == "float" or d.source is not None:
            from risbench import features

            self.cnn = d.source or d.name  # the CNN descriptor the extractor computes
            self.extractor = features.Extractor(d.model, d.spec, [self.cnn], device="cpu")
            self.attrs = self.extractor.attrs()[self.cnn]
        else:
            from risbench import hashing

            self.attrs = hashing.store_attrs(hashing.get(d.name), None)

    def rows(self, paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        """(matrix of the readable images, their paths, {unreadable path: why})."""
        if self.extractor is None:
            return self._hash_rows(paths)
        if self.encoder is not None:
            matrix, kept, failed = self._cnn_rows(paths)
            return self.encoder.encode(matrix), kept, failed
        return self._cnn_rows(paths)

    def _hash_rows(self, paths):
        from risbench import hashing

        rows, kept, failed = [], [], {}
        for path in paths:
            try:
                rows.append(np.frombuffer(hashing.hash_file(self.d.name, path), dtype=np.uint8))
                kept.append(path)
            except Exception as error:  # any decoder error: report it, answer the others
                failed[path] = f"{type(error).__name__}: {error}"
        width = hashing.get(self.d.name).width
        return np.array(rows, dtype=np.uint8).reshape(len(rows), width), kept, failed

    def _cnn_rows(self, paths):
        import torch

        from risbench import features

        tensors, kept, failed = [], [], {}
        for path in paths:
            try:
                tensors.append(features.load_image(path, self.extractor.prep))
                kept.append(path)
            except features.ImageDecodeError as error:
                failed[path] = str(error)
        width = self.extractor.widths()[self.cnn]
        out = [np.zeros((0, width), dtype=np.float32)]
        with torch.inference_mode():
            for a in range(0, len(tensors), CNN_BATCH):
                batch = torch.stack(tensors[a : a + CNN_BATCH])
                out.append(self.extractor.forward(batch)[self.cnn].float().numpy())
        return np.concatenate(out), kept, failed


# --------------------------------------------------------------------------- encoders


def encoder_identity(data: bytes, encoder, origin) -> dict:
    """What an index records of its encoder: SHA-256, descriptor, source, file read."""
    meta = encoder.meta
    return {
        "sha256": encoders.encoder_sha256(data),
        "descriptor": meta.get("descriptor"),
        "source": meta.get("source"),
        "file": os.path.abspath(origin),
    }


def check_encoder(d: Descriptor, encoder, origin, attrs: dict) -> None:
    """Refuses (ValueError saying which) an encoder of another compact code, or one
    fitted on features computed otherwise than ``attrs`` (the source's, here)."""
    meta = encoder.meta
    if meta.get("descriptor") != d.name:
        raise ValueError(
            f"{origin}: the encoder of {meta.get('descriptor')} (source {meta.get('source')}), "
            f"not of {d.name}"
        )
    fitted = meta.get("source_attrs") or {}
    changed = [key for key in ENCODER_SOURCE_ATTRS if fitted.get(key) != attrs.get(key)]
    if changed:
        raise ValueError(
            f"{origin}: fitted on {d.source} features computed with other "
            + ", ".join(f"{k} ({fitted.get(k)} there, {attrs.get(k)} here)" for k in changed)
            + "; give --config with the run's models"
        )


# --------------------------------------------------------------------------- the index


def _versions() -> dict[str, str]:
    from risbench import __version__

    return {"risbench": __version__, "faiss": search._faiss().__version__}


def _compared(attrs: dict) -> dict:
    return {key: attrs.get(key) for key in COMPARED_ATTRS}


class ImageIndex:
    """Indexed images and their descriptor rows; see the module notes for the file."""

    def __init__(self, header: dict, rows, encoder_bytes: bytes | None = None):
        self.header = header
        self.rows = rows  # a FAISS index, or the rv digest matrix
        self.encoder_bytes = encoder_bytes  # a compact code's encoder file, kept whole
        self._describer = None

    # -- header fields
    @property
    def descriptor(self) -> Descriptor:
        h = self.header
        return Descriptor(
            h["descriptor"], h["kind"], h["bits"], h["model"], h["spec"], h.get("source")
        )

    @property
    def distance(self) -> str:
        return self.header["distance"]

    @property
    def radius(self) -> float:
        return float(self.header["radius"])

    @property
    def images(self) -> list[str]:
        return self.header["images"]

    # -- building
    @classmethod
    def build(cls, d: Descriptor, distance: str, radius: float, paths, encoder=None) -> tuple:
        """A new index of ``paths``: (index, {unreadable path: why}); a compact code
        needs ``encoder``, the path of its encoder file (kept whole in the index)."""
        if distance not in dist.DISTANCES_BY_KIND[d.kind]:
            raise ValueError(
                f"descriptor {d.name} ({d.kind}) is compared with "
                f"{' or '.join(dist.DISTANCES_BY_KIND[d.kind])}, not {distance}"
            )
        if not (radius >= 0 and np.isfinite(radius)):
            raise ValueError(f"the radius must be a finite number >= 0, not {radius}")
        if (d.source is None) != (encoder is None):
            raise ValueError(f"{d.name}: --encoder is for, and needed by, a compact code")
        data, fitted = encoders.read_file(encoder) if encoder is not None else (None, None)
        describer = _Describer(d, fitted)
        if fitted is not None:
            check_encoder(d, fitted, encoder, describer.attrs)
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "descriptor": d.name,
            "kind": d.kind,
            "bits": d.bits,
            "distance": distance,
            "radius": float(radius),
            "model": d.model,
            "spec": d.spec,
            "source": d.source,
            "encoder": encoder_identity(data, fitted, encoder) if fitted is not None else None,
            "descriptor_attrs": _compared(describer.attrs),
            "versions": _versions(),
            "images": [],
        }
        width = describer.rows([])[0].shape[1]
        empty = np.zeros((0, width), dtype=np.float32 if d.kind == "float" else np.uint8)
        rows = empty if d.kind == "rv" else search.build(empty, distance, "flat")
        index = cls(header, rows, data)
        index._describer = describer
        return index, index.add(paths)

    def add(self, paths) -> dict[str, str]:
        """Appends the images of ``paths`` not yet indexed (no rebuild); returns the
        unreadable ones with the reason."""
        known = set(self.images)
        fresh = [p for p in dict.fromkeys(os.path.abspath(p) for p in paths) if p not in known]
        matrix, kept, failed = self.describer().rows(fresh)
        if self.descriptor.kind == "rv":
            self.rows = np.concatenate([self.rows, matrix])
        else:
            search.add(self.rows, matrix, self.distance)
        self.images.extend(kept)
        return failed

    def describer(self) -> _Describer:
        """The descriptor's computer, checked against the one the index was built with."""
        if self._describer is None:
            describer = _Describer(self.descriptor, self.encoder())
            built, now = self.header["descriptor_attrs"], _compared(describer.attrs)
            changed = [key for key in COMPARED_ATTRS if built.get(key) != now.get(key)]
            if changed:
                raise IndexError_(
                    f"index of {self.descriptor.name} built with other "
                    + ", ".join(
                        f"{key} ({built.get(key)} there, {now.get(key)} here)" for key in changed
                    )
                    + "; rebuild it with risbench index"
                )
            self._describer = describer
        return self._describer

    def encoder(self):
        """A compact code's kept encoder (None for other descriptors)."""
        if self.encoder_bytes is None:
            return None
        return encoders.Encoder.from_bytes(self.encoder_bytes, ENCODER_MEMBER)

    def check_encoder_file(self, path) -> None:
        """Refuses (IndexError_ saying which) an encoder file other than the index's."""
        built = self.header.get("encoder")
        if built is None:
            raise IndexError_(
                f"an index of {self.descriptor.name}, not of a compact code: it has no encoder"
            )
        data, fitted = encoders.read_file(path)
        given = encoder_identity(data, fitted, path)
        if given["sha256"] != built["sha256"]:
            raise IndexError_(
                f"index of {self.descriptor.name} built with encoder sha256 "
                f"{built['sha256'][:12]} ({built['descriptor']}, {built['file']}); {path} is "
                f"{given['sha256'][:12]} ({given['descriptor']}): another encoder"
            )

    # -- searching
    def search_rows(self, matrix: np.ndarray) -> list[list[tuple[str, float]]]:
        """For each descriptor row: [(image, distance)] within the radius, nearest first."""
        d = self.descriptor
        if d.kind == "rv":
            return [self._scan_rv(row) for row in matrix]
        hits = search.range_search(self.rows, matrix, self.distance, self.radius, d.bits)
        out = []
        for i in range(len(matrix)):
            ids, distances = hits.of(i)
            out.append([(self.images[j], float(v)) for j, v in zip(ids, distances, strict=True)])
        return out

    def _scan_rv(self, row: np.ndarray) -> list[tuple[str, float]]:
        if not len(self.rows):
            return []
        d = dist.pairwise(row[None], self.rows, "rv", device="cpu")[0]
        ids = np.flatnonzero(d <= self.radius)
        ids = ids[np.lexsort((ids, d[ids]))]
        return [(self.images[j], float(d[j])) for j in ids]

    def query(self, photo) -> list[tuple[str, float]]:
        """The indexed images within the radius of one photo file, nearest first
        (:class:`UnreadableImage` when it cannot be decoded)."""
        return self.query_many([photo])[0]

    def query_many(self, photos) -> list:
        """One answer per photo: a list of (image, distance), or an
        :class:`UnreadableImage` for a photo that cannot be decoded."""
        photos = [str(p) for p in photos]
        matrix, kept, failed = self.describer().rows(photos)
        found = dict(zip(kept, self.search_rows(matrix), strict=True))
        return [found[p] if p in found else UnreadableImage(f"{p}: {failed[p]}") for p in photos]

    # -- the file
    def save(self, path: str | os.PathLike) -> None:
        """Writes the index file atomically (:func:`risbench.files.write_atomic`)."""
        files.write_atomic(path, self._write_archive)

    def _write_archive(self, out) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("header.json", json.dumps(self.header, indent=1))
            if self.descriptor.kind == "rv":
                buffer = io.BytesIO()
                np.save(buffer, self.rows, allow_pickle=False)
                archive.writestr("vectors.npy", buffer.getvalue())
            else:
                archive.writestr("faiss.index", search.serialize(self.rows))
            if self.encoder_bytes is not None:
                archive.writestr(ENCODER_MEMBER, self.encoder_bytes)

    @classmethod
    def load(cls, path: str | os.PathLike, descriptor: str | None = None, encoder=None):
        """Reads an index file; refused when it is not one, is of another format,
        risbench or FAISS version, (given ``descriptor``) of another descriptor, or
        (given ``encoder``, an encoder file) built with another encoder."""
        header, payload, encoder_bytes = _read(path)
        _check_header(path, header, descriptor)
        _check_kept_encoder(path, header, encoder_bytes)
        if header["kind"] == "rv":
            rows = np.load(io.BytesIO(payload), allow_pickle=False)
        else:
            rows = search.deserialize(payload, binary=header["kind"] == "binary")
        if (len(rows) if header["kind"] == "rv" else rows.ntotal) != len(header["images"]):
            raise IndexError_(f"{path}: the index holds a different number of rows than images")
        index = cls(header, rows, encoder_bytes)
        if encoder is not None:
            try:
                index.check_encoder_file(encoder)
            except IndexError_ as error:
                raise IndexError_(f"{path}: {error}") from None
        return index


def _read(path) -> tuple[dict, bytes, bytes | None]:
    try:
        with zipfile.ZipFile(path) as archive:
            header = json.loads(archive.read("header.json"))
            name = "vectors.npy" if header.get("kind") == "rv" else "faiss.index"
            kept = archive.read(ENCODER_MEMBER) if header.get("encoder") else None
            return header, archive.read(name), kept
    except FileNotFoundError:
        raise IndexError_(f"{path}: no such index file") from None
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise IndexError_(f"{path}: not a risbench index file ({error})") from None


def _check_kept_encoder(path, header: dict, data: bytes | None) -> None:
    """The encoder kept in a compact-code index is the one it was built with."""
    built = header.get("encoder")
    if built is None:
        return
    digest = encoders.encoder_sha256(data)
    if digest != built.get("sha256"):
        raise IndexError_(
            f"{path}: its {ENCODER_MEMBER} is not the encoder it was built with (SHA-256 "
            f"{digest[:12]}, recorded {str(built.get('sha256'))[:12]})"
        )


def _check_header(path, header: dict, descriptor: str | None) -> None:
    advice = "rebuild it with risbench index"
    files.check_format(
        header, FORMAT, FORMAT_VERSION, path=path, kind="index", advice=advice, error=IndexError_
    )
    here = _versions()
    for library, version in here.items():
        built = header.get("versions", {}).get(library)
        if built != version:
            raise IndexError_(
                f"{path}: built with {library} {built}, this is {library} {version}; "
                "rebuild it with risbench index"
            )
    if descriptor is not None and descriptor != header["descriptor"]:
        raise IndexError_(
            f"{path}: an index of descriptor {header['descriptor']}, not {descriptor}"
        )


# --------------------------------------------------------------------------- inputs


def expand(paths) -> list[str]:
    """Files as given, folders replaced by their images (``sources.find_folder``)."""
    from risbench import sources

    out = []
    for path in paths:
        if Path(path).is_dir():
            out += [str(s.path) for s in sources.find_folder(path).sources]
        else:
            out.append(str(path))
    return out


def best_radius(results_dir, descriptor: str, distance: str, protocol: str = "all") -> float:
    """The best radius (mean F1) of a finished benchmark's protocol ``protocol``."""
    path = results.run_index_path(descriptor, distance, results_dir)
    run = results.RunIndex.read(path)
    if protocol not in run.protocols:
        raise results.ResultsError(f"{path}: no protocol {protocol!r}")
    return float(results.BenchmarkStats.read(run.protocols[protocol]["stats"]).best["radius"])


def compact_encoder(d: Descriptor, encoder=None, run=None):
    """The encoder file of a compact code: ``encoder``, else the one the compress job
    kept under the results folder ``run``; None for other descriptors."""

    if d.source is None:
        if encoder is not None:
            raise ValueError(f"--encoder is for compact codes; {d.name} is not one")
        return None
    if encoder is None and run is None:
        raise ValueError(
            f"{d.name} is a compact code: give --encoder FILE or --run RESULTS "
            f"(its {encoders.encoder_path(d.name, 'RESULTS')})"
        )
    return encoder if encoder is not None else encoders.encoder_path(d.name, str(run))


def index_files(output, images, *, descriptor=None, distance=None, radius=None, run=None,
                models=None, append=False, encoder=None) -> tuple:  # fmt: skip
    """``risbench index``: a new index of ``images`` (files and folders) at ``output``,
    or with ``append`` the images added to the index there. The radius: ``radius``,
    else the best radius of protocol ``all`` of the benchmark under the results folder
    ``run``. A compact code's encoder: ``encoder`` (a file), else the run's
    (:func:`compact_encoder`); appending, ``encoder`` must be the index's. Returns the
    index and the unreadable images with the reason."""
    paths = expand(images)
    if append:
        if radius is not None or run is not None or distance is not None:
            raise ValueError(f"{output}: the distance and radius of an existing index are fixed")
        index = ImageIndex.load(output, descriptor, encoder)
        failed = index.add(paths)
    else:
        if Path(output).exists():
            raise ValueError(f"{output} exists: --append adds images to it; remove it to rebuild")
        if descriptor is None:
            raise ValueError("a new index needs --descriptor")
        d = resolve(descriptor, models)
        distance = distance or dist.DISTANCES_BY_KIND[d.kind][0]
        if (radius is None) == (run is None):
            raise ValueError("give one of --radius or --run (a finished results folder)")
        kept = compact_encoder(d, encoder, run)
        if radius is None:
            radius = best_radius(run, d.name, distance)
        index, failed = ImageIndex.build(d, distance, float(radius), paths, kept)
    index.save(output)
    return index, failed


def answer_text(photo: str, matches: list[tuple[str, float]]) -> str:
    """A photo, then one line per match: distance, a tab, the indexed image."""
    lines = [f"{photo}: {len(matches)} within the radius"]
    lines += [f"  {distance:.6f}\t{image}" for image, distance in matches]
    return "\n".join(lines)


def answer_json(photo: str, matches: list[tuple[str, float]]) -> str:
    """One JSON object: {"query": PATH, "results": [{"image": PATH, "distance": D}, ...]}."""
    found = [{"image": image, "distance": distance} for image, distance in matches]
    return json.dumps({"query": photo, "results": found})
