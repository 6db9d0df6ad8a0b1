"""Compact descriptors learned from float ones (config ``compress``).

Each compact descriptor ``{source}__{method}{size}`` is a normal descriptor
with its own stores, benchmarked under every protocol:

- ``pca-k``: PCA to k dimensions (scikit-learn), float32; ``pcaw-k`` whitened;
- ``lsh-b``: random-hyperplane LSH (Charikar 2002), the paper's named method:
  b seeded Gaussian hyperplanes through the training mean, one sign bit each;
- ``itq-b``: ITQ (Gong & Lazebnik 2011): PCA to b dimensions, then 50
  iterations of the orthogonal Procrustes rotation, one sign bit each;
- ``pq-m``: FAISS product quantisation to m bytes a code (``compress.pq_nbits``
  bits a sub-quantiser, 8 by default: m sub-quantisers). The stores hold the
  codes decoded to float (each sub-vector its nearest centroid), so PQ is
  scored by the one sweep engine with the float distances (euclidean is
  FAISS's symmetric distance between decoded codes, not its asymmetric one);
  its bytes per image in the bytes-against-F1 table are the m code bytes.

Binary codes are packed as the hash stores pack bits (first bit in the most
significant position), so the Hamming sweep reads them unchanged.

Every method fits once per source descriptor on the training rows of
:mod:`risbench.split` (never a benchmark query) and encodes every variant.
A fit gives an :class:`Encoder` (plain arrays), which the job keeps in
``results/descriptors/{name}/encoder.npz`` (:func:`encoder_path`) and encodes
through; ``risbench index`` rebuilds it from that file (:mod:`risbench.imageindex`)
and gets the same codes bit for bit. This module owns that file format.
This module's top level is cheap (the config check reads the names); NumPy,
scikit-learn and FAISS are imported when a job fits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger("risbench")

SEPARATOR = "__"
ITQ_ITERATIONS = 50
SPEC = re.compile(r"([a-z]+)-([0-9]+)")
# The keys of config `compress` that are options, not source descriptors.
OPTIONS = ("split", "pq_nbits")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # the store's kind: "float" or "binary"
    unit: str  # what the size counts
    description: str


METHODS = {
    m.name: m
    for m in (
        Method("pca", "float", "dimensions", "PCA to k dimensions (scikit-learn), float32"),
        Method("pcaw", "float", "dimensions", "whitened PCA to k dimensions, float32"),
        Method("lsh", "binary", "bits", "random-hyperplane LSH on centred data, sign bits"),
        Method(
            "itq",
            "binary",
            "bits",
            f"ITQ: PCA to b dimensions, {ITQ_ITERATIONS} rotation steps, sign bits",
        ),
        Method("pq", "float", "bytes", "FAISS product quantiser, codes decoded to float"),
    )
}


def parse_spec(spec: str) -> tuple[str, int]:
    """``itq-64`` → ("itq", 64); ValueError saying what is wrong."""
    match = SPEC.fullmatch(str(spec))
    if not match:
        raise ValueError(f"{spec!r} is not METHOD-SIZE, e.g. itq-64")
    method, size = match.group(1), int(match.group(2))
    if method not in METHODS:
        raise ValueError(f"{spec!r}: unknown method {method!r}; methods: {', '.join(METHODS)}")
    if size < 1:
        raise ValueError(f"{spec!r}: the size must be at least 1")
    if METHODS[method].unit == "bits" and size % 8:
        raise ValueError(f"{spec!r}: {method} codes are whole bytes, give a multiple of 8 bits")
    return method, size


def descriptor_name(source: str, spec: str) -> str:
    method, size = parse_spec(spec)
    return f"{source}{SEPARATOR}{method}{size}"


def compact_descriptors(config: dict) -> dict[str, dict]:
    """Compact descriptor name → {source, method, size, kind}, in config order."""
    table = {}
    for source, specs in sources(config).items():
        for spec in specs:
            method, size = parse_spec(spec)
            table[descriptor_name(source, spec)] = {
                "source": source,
                "method": method,
                "size": size,
                "kind": METHODS[method].kind,
            }
    return table


def sources(config: dict) -> dict[str, list[str]]:
    """Source descriptor → its method specs (``compress`` without its options)."""
    return {k: v for k, v in (config.get("compress") or {}).items() if k not in OPTIONS}


def parse_name(name: str) -> tuple[str, str, int] | None:
    """(source, method, size) of a compact descriptor name; None for others."""
    source, sep, tail = name.rpartition(SEPARATOR)
    match = re.fullmatch(r"([a-z]+?)([0-9]+)", tail)
    if not sep or not match or match.group(1) not in METHODS:
        return None
    return source, match.group(1), int(match.group(2))


def code_bytes(name: str) -> int | None:
    """Bytes of one image's code for a compact descriptor (PCA: 4 a float32
    value; LSH, ITQ: bits / 8; PQ: m); None for other descriptors."""
    parsed = parse_name(name)
    if parsed is None:
        return None
    _, method, size = parsed
    return {"dimensions": 4 * size, "bits": size // 8, "bytes": size}[METHODS[method].unit]


def min_training(method: str, size: int, pq_nbits: int) -> int:
    """Training vectors a method needs: k for PCA-k and ITQ-b (scikit-learn's
    PCA keeps at most as many components as samples), 2**nbits for PQ (one
    per centroid of each sub-quantiser), 2 for LSH (a mean)."""
    if method in ("pca", "pcaw", "itq"):
        return size
    if method == "pq":
        return 2**pq_nbits
    return 2


def pq_sub_quantizers(size: int, pq_nbits: int) -> int:
    """Sub-quantisers of a ``pq-size`` code: size bytes of pq_nbits-bit codes."""
    if (8 * size) % pq_nbits:
        raise ValueError(f"pq-{size}: {8 * size} bits are not a multiple of pq_nbits {pq_nbits}")
    return 8 * size // pq_nbits


# --------------------------------------------------------------------------------------
# encoders: fitted once, kept as plain arrays (an Encoder), encoded by this module alone

ENCODER_FORMAT = "risbench encoder"
ENCODER_FORMAT_VERSION = 1
ENCODER_FILE = "encoder.npz"
# Rows encoded at a time: the float64 copy of a tile is ENCODE_TILE × d × 8 bytes
# (1280-d features: 42 MB), whatever the matrix.
ENCODE_TILE = 4096
# The arrays each method keeps (the file holds exactly these, plus `meta`).
ENCODER_ARRAYS = {
    "pca": ("mean", "components", "explained_variance"),
    "pcaw": ("mean", "components", "explained_variance"),
    "lsh": ("mean", "planes"),
    "itq": ("mean", "components", "explained_variance", "rotation"),
    "pq": ("centroids",),
}


class EncoderError(ValueError):
    """An encoder file that cannot be used; the message names the file and why."""


def encoder_path(name: str, results_dir: str = "results") -> str:
    """Where the compress job keeps the encoder of compact descriptor ``name``
    (beside its stores ``{results}/descriptors/{name}/{variant}.zarr``)."""
    return f"{results_dir}/descriptors/{name}/{ENCODER_FILE}"


@dataclass
class Encoder:
    """A fitted encoder as plain arrays (float64, except PQ's float32 centroids)
    and ``meta`` (method, size, ... and, once the job adds them, the descriptor,
    source, split and versions). ``encode`` (or calling it) maps a float matrix
    to the compact codes; it is the one encoding of the job and of the index."""

    method: str
    size: int
    arrays: dict
    meta: dict

    def __call__(self, x):
        return self.encode(x)

    def encode(self, x):
        """Codes of the rows of ``x`` (n × source dim), a tile of rows at a time."""
        import numpy as np

        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.source_dim:
            raise ValueError(
                f"{self.meta.get('descriptor', self.method)}: the encoder takes rows of "
                f"{self.source_dim} values, not {x.shape[1] if x.ndim == 2 else x.shape}"
            )
        tiles = [self._encode_tile(x[a : a + ENCODE_TILE]) for a in range(0, len(x), ENCODE_TILE)]
        return np.concatenate(tiles) if tiles else self._encode_tile(x[:0])

    @property
    def source_dim(self) -> int:
        if self.method == "pq":  # M sub-quantisers × 2^nbits centroids × d/M values
            m, _, dsub = self.arrays["centroids"].shape
            return int(m * dsub)
        return int(self.arrays["mean"].size)

    @property
    def nbits(self) -> int:
        """PQ: bits a sub-quantiser code (2^nbits centroids each)."""
        return int(self.arrays["centroids"].shape[1]).bit_length() - 1

    def _encode_tile(self, x):
        import numpy as np

        if self.method == "pq":
            x = np.ascontiguousarray(x, dtype=np.float32)
            pq = self._pq()
            return pq.decode(pq.compute_codes(x))
        centred = np.asarray(x, dtype=np.float64) - self.arrays["mean"]
        if self.method == "lsh":
            return pack_signs(centred @ self.arrays["planes"])
        projected = centred @ self.arrays["components"].T
        if self.method == "itq":
            return pack_signs(projected @ self.arrays["rotation"])
        if self.method == "pcaw":
            projected /= whitening_scale(self.arrays["explained_variance"])
        return projected.astype(np.float32)

    def _pq(self):
        """FAISS's ProductQuantizer rebuilt from the centroids (built once)."""
        if getattr(self, "_faiss_pq", None) is None:
            import faiss

            d, nbits = self.source_dim, self.nbits
            pq = faiss.ProductQuantizer(d, pq_sub_quantizers(self.size, nbits), nbits)
            faiss.copy_array_to_vector(self.arrays["centroids"].ravel(), pq.centroids)
            self._faiss_pq = pq
        return self._faiss_pq

    # -- the file: an .npz of plain arrays (read without pickle) and a JSON `meta`
    def save(self, path) -> None:
        """Writes the encoder file atomically (a temporary file renamed into place)."""
        import json
        import os
        from pathlib import Path

        import numpy as np

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": ENCODER_FORMAT,
            "format_version": ENCODER_FORMAT_VERSION,
            **self.meta,
            "method": self.method,
            "size": self.size,
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as out:
            np.savez(out, meta=np.array(json.dumps(meta, sort_keys=True)), **self.arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> Encoder:
        """Reads an encoder file; :class:`EncoderError` naming the file and why."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise EncoderError(f"{path}: no such encoder file") from None
        return cls.from_bytes(data, path)

    @classmethod
    def from_bytes(cls, data: bytes, path="encoder") -> Encoder:
        import io
        import json

        import numpy as np

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                arrays = {key: npz[key] for key in npz.files if key != "meta"}
        except Exception as error:  # zip, npy or JSON errors all mean: not an encoder file
            raise EncoderError(f"{path}: not a risbench encoder file ({error})") from None
        if meta.get("format") != ENCODER_FORMAT:
            raise EncoderError(f"{path}: not a risbench encoder file")
        if meta.get("format_version") != ENCODER_FORMAT_VERSION:
            raise EncoderError(
                f"{path}: encoder format version {meta.get('format_version')}, this risbench "
                f"reads version {ENCODER_FORMAT_VERSION}; rerun the compress stage"
            )
        method, size = meta["method"], int(meta["size"])
        if method not in ENCODER_ARRAYS or set(arrays) != set(ENCODER_ARRAYS[method]):
            raise EncoderError(f"{path}: {method} encoder with arrays {sorted(arrays)}")
        return cls(method, size, arrays, meta)


def encoder_sha256(data: bytes) -> str:
    """The identity of an encoder file: the SHA-256 of its bytes."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# fitting: each fit returns an Encoder


def whitening_scale(explained_variance):
    """√variance per component, floored at float eps as scikit-learn's PCA does."""
    import numpy as np

    scale = np.sqrt(explained_variance)
    return np.maximum(scale, np.finfo(scale.dtype).eps)


def pca_arrays(train, k: int, *, whiten: bool = False, seed: int = 0) -> dict:
    """scikit-learn's PCA fit, kept as float64 arrays (mean, components k × d,
    explained variance)."""
    import numpy as np
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, whiten=whiten, svd_solver="full", random_state=seed).fit(train)
    return {
        "mean": pca.mean_.astype(np.float64),
        "components": pca.components_.astype(np.float64),
        "explained_variance": pca.explained_variance_.astype(np.float64),
    }


def fit_pca(train, k: int, *, whiten: bool = False, seed: int = 0) -> Encoder:
    method = "pcaw" if whiten else "pca"
    return Encoder(method, k, pca_arrays(train, k, whiten=whiten, seed=seed), {"seed": seed})


def pack_signs(projected):
    """One bit per column, 1 where the value is > 0, packed 8 a byte."""
    import numpy as np

    return np.packbits(np.asarray(projected) > 0, axis=1)


def lsh_planes(dim: int, bits: int, seed: int):
    """``bits`` Gaussian hyperplane normals (columns), seeded."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((dim, bits))


def fit_lsh(train, bits: int, *, seed: int = 0) -> Encoder:
    import numpy as np

    mean = np.asarray(train, dtype=np.float64).mean(axis=0)
    planes = np.asarray(lsh_planes(mean.size, bits, seed), dtype=np.float64)
    return Encoder("lsh", bits, {"mean": mean, "planes": planes}, {"seed": seed})


def itq_rotation(v, *, seed: int = 0, iterations: int = ITQ_ITERATIONS):
    """ITQ's rotation R of centred, PCA-projected data ``v`` (n × b): from a
    seeded random orthogonal matrix, alternate B = sign(vR) and the
    orthogonal Procrustes solution R = U Wᵀ of vᵀB = U S Wᵀ."""
    import numpy as np

    b = v.shape[1]
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((b, b)))
    for _ in range(iterations):
        codes = np.where(v @ rotation > 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ codes)
        rotation = u @ wt
    return rotation


def fit_itq(train, bits: int, *, seed: int = 0) -> Encoder:
    import numpy as np

    arrays = pca_arrays(train, bits, seed=seed)
    # the rotation is fitted on the projection the encoder computes
    v = (np.asarray(train, dtype=np.float64) - arrays["mean"]) @ arrays["components"].T
    arrays["rotation"] = itq_rotation(v, seed=seed)
    return Encoder("itq", bits, arrays, {"seed": seed})


def train_pq(train, size: int, *, pq_nbits: int = 8, seed: int = 0):
    """FAISS's ProductQuantizer of ``size``-byte codes, trained (seeded k-means)."""
    import faiss
    import numpy as np

    train = np.ascontiguousarray(train, dtype=np.float32)
    m = pq_sub_quantizers(size, pq_nbits)
    if train.shape[1] % m:
        raise ValueError(
            f"pq-{size}: {m} sub-quantisers do not divide the {train.shape[1]} dimensions"
        )
    pq = faiss.ProductQuantizer(train.shape[1], m, pq_nbits)
    pq.cp.seed = seed
    pq.train(train)
    return pq


def fit_pq(train, size: int, *, pq_nbits: int = 8, seed: int = 0) -> Encoder:
    """Encodes to PQ codes decoded to floats (each sub-vector its centroid); keeps
    the centroids (M × 2^nbits × d/M, float32)."""
    import faiss

    pq = train_pq(train, size, pq_nbits=pq_nbits, seed=seed)
    centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    meta = {"seed": seed, "pq_nbits": pq_nbits, "pq_m": pq.M}
    return Encoder("pq", size, {"centroids": centroids}, meta)


def fit(method: str, size: int, train, *, seed: int = 0, pq_nbits: int = 8) -> Encoder:
    """The encoder of ``method-size`` fitted on ``train`` (n × d float)."""
    if method in ("pca", "pcaw"):
        return fit_pca(train, size, whiten=method == "pcaw", seed=seed)
    if method == "lsh":
        return fit_lsh(train, size, seed=seed)
    if method == "itq":
        return fit_itq(train, size, seed=seed)
    if method == "pq":
        return fit_pq(train, size, pq_nbits=pq_nbits, seed=seed)
    raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")


def store_dim(method: str, size: int, source_dim: int) -> int:
    """The compact store's ``dim``: values (PCA), bits (LSH, ITQ), or the
    source's dimensions (PQ, decoded)."""
    return source_dim if method == "pq" else size


# --------------------------------------------------------------------------------------
# the compress job: one source descriptor, every method, every variant


def training_matrix(images, stores: dict[str, str], source: str, split: dict):
    """The source descriptor's rows of the training images (:mod:`risbench.split`),
    read from every variant's store, and the source stores' attributes.
    Memory: the training rows only."""
    import numpy as np

    from risbench import split as training_split
    from risbench import store

    mask = training_split.training_mask(images, split)
    variants = images["variant"].to_numpy()
    rank = images.groupby("variant", sort=False).cumcount().to_numpy()
    parts, attrs = [], None
    for variant, path in stores.items():
        rows = rank[(variants == variant) & mask]
        count = int((variants == variant).sum())
        block, attrs = store.read_rows(
            path, rows, descriptor=source, kind="float", variant=variant, rows=count
        )
        parts.append(block)
    return np.concatenate(parts), attrs


def check_training(methods: dict[str, str], train_rows: int, dim: int, pq_nbits: int) -> None:
    """Every method can be fitted on ``train_rows`` vectors of ``dim`` values;
    else a ValueError naming the config keys to change."""
    for name, spec in methods.items():
        method, size = parse_spec(spec)
        needed = min_training(method, size, pq_nbits)
        if train_rows < needed:
            raise ValueError(
                f"compress: {name} ({spec}) needs at least {needed} training vectors, the "
                f"split gives {train_rows}: raise compress.split.share, add images or "
                "choose a smaller size"
            )
        if method in ("pca", "pcaw", "itq") and size > dim:
            raise ValueError(f"compress: {name} ({spec}): the source has only {dim} dimensions")


def fit_methods(methods: dict[str, str], train, spec: dict) -> dict:
    """name → encoder, each fitted on ``train`` (seeded by the split's seed)."""
    encoders = {}
    for name, method_spec in methods.items():
        method, size = parse_spec(method_spec)
        seed, nbits = spec["split"]["seed"], spec["pq_nbits"]
        encoders[name] = fit(method, size, train, seed=seed, pq_nbits=nbits)
        log.info("%s: %s fitted on %d vectors", name, method_spec, len(train))
    return encoders


def compact_attrs(name: str, method_spec: str, variant: str, source_attrs: dict, spec) -> dict:
    from risbench import store

    method, size = parse_spec(method_spec)
    return {
        "descriptor": name,
        "kind": METHODS[method].kind,
        "dim": store_dim(method, size, source_attrs["dim"]),
        "variant": variant,
        "method": METHODS[method].description,
        "source": source_attrs["descriptor"],
        "spec": method_spec,
        "code_bytes": code_bytes(name),
        "pq_nbits": spec["pq_nbits"] if method == "pq" else None,
        "split": dict(spec["split"]),
        "training_vectors": spec["training_vectors"],
        "held_out_groups": spec["held_out_groups"],
        "versions": store.package_versions("numpy", "scikit-learn", "faiss-cpu"),
    }


def encoder_meta(name: str, method_spec: str, source_attrs: dict, spec: dict) -> dict:
    """What an encoder file records beside its arrays: the descriptor, its source and
    the source store's attributes (minus the variant and the integrity record: what
    computes the source, so an index can check its features), the split, the
    training count and the library versions."""
    from risbench import store

    method, size = parse_spec(method_spec)
    kept = {k: v for k, v in source_attrs.items() if k not in ("variant", store.INTEGRITY)}
    return {
        "descriptor": name,
        "source": source_attrs["descriptor"],
        "source_attrs": kept,
        "spec": method_spec,
        "kind": METHODS[method].kind,
        "dim": store_dim(method, size, source_attrs["dim"]),
        "pq_nbits": spec["pq_nbits"] if method == "pq" else None,
        "split": dict(spec["split"]),
        "training_vectors": spec["training_vectors"],
        "held_out_groups": spec["held_out_groups"],
        "versions": store.package_versions("numpy", "scikit-learn", "faiss-cpu"),
    }


def write_encoders(encoders: dict, paths: dict[str, str], source_attrs: dict, spec) -> dict:
    """Writes each fitted encoder to its file (``paths``: name → path) before any code
    is written; returns name → the file's SHA-256."""
    digests = {}
    for name, encoder in encoders.items():
        encoder.meta.update(encoder_meta(name, spec["methods"][name], source_attrs, spec))
        encoder.save(paths[name])
        with open(paths[name], "rb") as f:
            digests[name] = encoder_sha256(f.read())
    return digests


def run(
    source: str,
    lists: dict[str, str],
    stores: dict[str, str],
    outputs: dict[str, dict[str, str]],
    spec: dict,
    encoder_paths: dict[str, str],
) -> None:
    """The compress job: fits every method of ``spec["methods"]`` (name → spec)
    on the training rows of ``source``, keeps each fitted encoder in its file
    (``encoder_paths``: name → path) and writes, for every variant, each
    compact descriptor's store (``outputs``: name → variant → path).
    Memory: the training rows, then one variant's source matrix and its codes."""
    import pandas as pd

    missing = sorted(set(spec["methods"]) - set(encoder_paths))
    if missing:
        raise ValueError(f"no encoder file given for {', '.join(missing)} (--encoder NAME=PATH)")

    from risbench import catalog, store
    from risbench import split as training_split
    from risbench.jobtime import compute

    with compute("read, fit, encode, write"):
        images = catalog.assemble([pd.read_parquet(path) for path in lists.values()])
        train, source_attrs = training_matrix(images, stores, source, spec["split"])
        held = training_split.held_out_groups(
            images.loc[images["role"] == "base", "group"], spec["split"]
        )
        log.info("%s: %d training vectors (%d held-out base groups)", source, len(train), len(held))
        check_training(spec["methods"], len(train), source_attrs["dim"], spec["pq_nbits"])
        encoders = fit_methods(spec["methods"], train, spec)
        spec = {**spec, "training_vectors": len(train), "held_out_groups": len(held)}
        digests = write_encoders(encoders, encoder_paths, source_attrs, spec)
        counts = images["variant"].value_counts()
        for variant, path in stores.items():
            matrix, _ = store.read_store(path, descriptor=source, rows=int(counts[variant]))
            for name, encoder in encoders.items():
                attrs = compact_attrs(name, spec["methods"][name], variant, source_attrs, spec)
                attrs["encoder_sha256"] = digests[name]
                store.write_store(outputs[name][variant], encoder.encode(matrix), attrs)
