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
:mod:`risbench.split` (never a benchmark query) and encodes every variant
through the fitted :class:`risbench.encoders.Encoder`, which the job keeps
beside the code's stores (:mod:`risbench.encoders` owns that file). This
module holds the codes' names (the config check reads them: its top level is
cheap) and the compress job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from risbench import encoders, files

log = logging.getLogger("risbench")

SEPARATOR = "__"
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
            f"ITQ: PCA to b dimensions, {encoders.ITQ_ITERATIONS} rotation steps, sign bits",
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
    fitted = {}
    for name, method_spec in methods.items():
        method, size = parse_spec(method_spec)
        seed, nbits = spec["split"]["seed"], spec["pq_nbits"]
        fitted[name] = encoders.fit(method, size, train, seed=seed, pq_nbits=nbits)
        log.info("%s: %s fitted on %d vectors", name, method_spec, len(train))
    return fitted


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


def write_encoders(fitted: dict, paths: dict[str, str], source_attrs: dict, spec) -> dict:
    """Writes each fitted encoder to its file (``paths``: name → path) before any code
    is written; returns name → the file's SHA-256."""
    digests = {}
    for name, encoder in fitted.items():
        encoder.meta.update(encoder_meta(name, spec["methods"][name], source_attrs, spec))
        encoder.save(paths[name])
        digests[name] = files.sha256_file(paths[name])  # (encoders.encoder_sha256's value)
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
        fitted = fit_methods(spec["methods"], train, spec)
        spec = {**spec, "training_vectors": len(train), "held_out_groups": len(held)}
        digests = write_encoders(fitted, encoder_paths, source_attrs, spec)
        counts = images["variant"].value_counts()
        for variant, path in stores.items():
            matrix, _ = store.read_store(path, descriptor=source, rows=int(counts[variant]))
            for name, encoder in fitted.items():
                attrs = compact_attrs(name, spec["methods"][name], variant, source_attrs, spec)
                attrs["encoder_sha256"] = digests[name]
                store.write_store(outputs[name][variant], encoder.encode(matrix), attrs)
