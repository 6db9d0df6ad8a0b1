"""Descriptor stores: one zarr v3 array per descriptor and variant, checked when read.

A store holds a (rows, dim) float32 matrix (CNN features) or a (rows, bytes)
uint8 matrix (bit-packed hash codes, RV digests), in the row order of that
variant in ``images.parquet``. Attributes say what the rows are and how they
were made (``descriptor``, ``kind``, ``dim`` at least), so a store can be read
without the config that produced it.

Writes go to ``<path>.partial`` and are renamed into place only when every row
is written: an interrupted job never leaves a store that looks complete.

Integrity record. When the last row is in, the writer adds the attribute
``integrity``: ``{"format": 1, "rows", "width", "dtype", "chunk_rows", "chunks",
"chunk_sha256"}``, where ``chunk_sha256[i]`` is the SHA-256 of chunk ``i``'s rows
(rows ``i * chunk_rows`` up to the next chunk or the end) as C-order bytes of the
stored dtype. Chunks are whole row blocks (``c/{i}/0`` on disk), and every one is
written, even an all-zero one (zarr skips those by default and would read them
back as the fill value, which a lost file would then look like).

Reading (:func:`read_store`, :func:`read_rows`, :func:`read_stores`) raises
:class:`StoreError`, whose message starts with the store path, when:

- the path holds no zarr array, or one without risbench attributes;
- the store has no integrity record (written before risbench kept one: it must
  be deleted and rebuilt; such stores are refused, not trusted with a warning);
- ``descriptor``, ``kind``, ``dim``, ``variant`` or the row count differ from
  what the caller asked for, or ``dim`` does not fit the row width;
- shape, dtype or chunk shape differ from the record;
- a chunk file is missing (zarr would silently read it as fill values);
- a chunk does not decode (the codec error is re-raised with the chunk key);
- a chunk's rows do not match its digest (a flipped byte that still decodes).

:func:`read_rows` reads only the chunks that hold the rows asked for, and makes
every check above on those chunks (presence, decoding, digest); the others are
not opened. Digests are checked on the decoded rows, so the cost is one SHA-256
pass over what is read (about 1 GB/s), on top of zarr's own decoding.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections import defaultdict, deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

KINDS = ("float", "binary", "rv")
ROW_CHUNK = 1024
INTEGRITY = "integrity"
INTEGRITY_FORMAT = 1
REBUILD = "delete it so that the workflow rebuilds it"


class StoreError(ValueError):
    """A descriptor store that is missing, foreign, incomplete, corrupt, or not the
    one asked for. The message starts with the store path."""


def _error(path, message: str) -> StoreError:
    return StoreError(f"{path}: {message}")


def _check_width(path, kind, dim, width: int) -> None:
    """``dim`` counts values (float) or bits (binary, rv: packed 8 a byte)."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise _error(path, f"attribute 'dim' must be a positive integer, got {dim!r}")
    want = dim if kind == "float" else (dim + 7) // 8
    if width != want:
        unit = "values" if kind == "float" else "bytes"
        raise _error(path, f"rows of {width} {unit}, but dim {dim} ({kind}) makes {want}")


def _check_new_attrs(path, attrs: dict, width: int) -> None:
    if attrs.get("kind") not in KINDS:
        raise _error(path, f"attribute 'kind' must be one of {KINDS}, got {attrs.get('kind')!r}")
    if not isinstance(attrs.get("descriptor"), str) or not attrs["descriptor"]:
        raise _error(
            path, f"attribute 'descriptor' must be a name, got {attrs.get('descriptor')!r}"
        )
    if INTEGRITY in attrs:
        raise _error(path, f"attribute {INTEGRITY!r} is reserved for the store writer")
    _check_width(path, attrs["kind"], attrs.get("dim"), width)


# --------------------------------------------------------------------------------------
# writing


class StoreWriter:
    """Streams row blocks, in order, into a new store; ``close()`` records the
    chunk digests and publishes the store atomically."""

    def __init__(self, path: str | os.PathLike, rows: int, width: int, dtype, attrs: dict):
        self.path = Path(path)
        if rows < 0 or width < 1:
            raise _error(self.path, f"cannot store {rows} rows of width {width}")
        _check_new_attrs(self.path, attrs, int(width))
        self.partial = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.rows, self.width = int(rows), int(width)
        self.chunk_rows = max(1, min(ROW_CHUNK, self.rows))
        self.array = zarr.create_array(
            store=str(self.partial),
            shape=(self.rows, self.width),
            chunks=(self.chunk_rows, self.width),
            dtype=dtype,
            zarr_format=3,
            overwrite=True,
            config={"write_empty_chunks": True},  # a missing chunk file is then always damage
        )
        self.array.attrs.update(attrs)
        self.digests = [hashlib.sha256() for _ in range(math.ceil(self.rows / self.chunk_rows))]
        self.written = 0

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.width:
            raise _error(self.path, f"block of shape {block.shape}, rows of {self.width} expected")
        end = self.written + len(block)
        if end > self.rows:
            raise _error(self.path, f"{end} rows written, {self.rows} declared")
        # cast first, so that the bytes digested are the bytes stored
        block = np.ascontiguousarray(block, dtype=self.array.dtype)
        self.array[self.written : end] = block
        for chunk in range(self.written // self.chunk_rows, math.ceil(end / self.chunk_rows)):
            start = max(self.written, chunk * self.chunk_rows) - self.written
            stop = min(end, (chunk + 1) * self.chunk_rows) - self.written
            self.digests[chunk].update(block[start:stop])
        self.written = end

    def close(self) -> None:
        if self.written != self.rows:
            raise _error(self.path, f"{self.written} of {self.rows} rows written")
        self.array.attrs[INTEGRITY] = {
            "format": INTEGRITY_FORMAT,
            "rows": self.rows,
            "width": self.width,
            "dtype": str(self.array.dtype),
            "chunk_rows": self.chunk_rows,
            "chunks": len(self.digests),
            "chunk_sha256": [digest.hexdigest() for digest in self.digests],
        }
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def write_store(path: str | os.PathLike, matrix: np.ndarray, attrs: dict) -> None:
    """Writes a whole matrix as one store."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise _error(path, f"expected a 2-D matrix, got shape {matrix.shape}")
    writer = StoreWriter(path, matrix.shape[0], matrix.shape[1], matrix.dtype, attrs)
    writer.write(matrix)
    writer.close()


class MultiStoreWriter:
    """Writes several float32 stores of the same rows (one per descriptor) at once:
    buffers rows per descriptor and writes chunk-aligned blocks from a background
    thread, so that compression overlaps the producer (e.g. a network's forward pass).

    ``paths`` and ``attrs`` map descriptor names to store paths and attributes;
    a store's ``dim`` is the width of its first block. ``close()`` publishes every
    store; ``abort()`` leaves none behind.
    """

    def __init__(self, paths: dict[str, str], rows: int, attrs: dict[str, dict]):
        self.paths, self.rows, self.attrs = paths, rows, attrs
        self.chunk = max(1, min(ROW_CHUNK, rows))
        self.writers: dict[str, StoreWriter] = {}
        self.buffers: dict[str, list[np.ndarray]] = defaultdict(list)
        self.buffered = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="risbench-store")
        self.futures: deque[Future] = deque()

    def _writer(self, name: str, width: int) -> StoreWriter:
        if name not in self.writers:
            attrs = {**self.attrs[name], "dim": int(width)}
            self.writers[name] = StoreWriter(
                self.paths[name], self.rows, int(width), np.float32, attrs
            )
        return self.writers[name]

    def write(self, block: dict[str, np.ndarray]) -> None:
        """One block of rows for every descriptor (the same rows for each)."""
        n = None
        for name, rows in block.items():
            self._writer(name, rows.shape[1])
            self.buffers[name].append(np.asarray(rows, dtype=np.float32))
            n = len(rows)
        self.buffered += n or 0
        if self.buffered >= self.chunk:
            self._flush(full_chunks_only=True)

    def _flush(self, full_chunks_only: bool) -> None:
        take = (self.buffered // self.chunk) * self.chunk if full_chunks_only else self.buffered
        if take == 0:
            return
        for name, parts in self.buffers.items():
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            self.buffers[name] = [rows[take:]] if take < len(rows) else []
            self.futures.append(self.pool.submit(self.writers[name].write, rows[:take]))
        self.buffered -= take
        # bounded queue: at most two pending blocks per store in memory
        while len(self.futures) > 2 * max(1, len(self.buffers)):
            self.futures.popleft().result()

    def ensure(self, widths: dict[str, int]) -> None:
        """Creates the stores that no block has created yet (e.g. no rows at all)."""
        for name, width in widths.items():
            self._writer(name, width)

    def close(self) -> None:
        self._flush(full_chunks_only=False)
        while self.futures:
            self.futures.popleft().result()
        self.pool.shutdown()
        for writer in self.writers.values():
            writer.close()

    def abort(self) -> None:
        for future in self.futures:
            future.cancel()
        self.pool.shutdown(wait=True)
        for writer in self.writers.values():
            writer.abort()


# --------------------------------------------------------------------------------------
# reading


def _open(path) -> zarr.Array:
    if not Path(path).exists():
        raise _error(path, "no such descriptor store")
    try:
        return zarr.open_array(str(path), mode="r")
    except Exception as error:  # zarr raises many types here (not found, bad JSON, a group)
        raise _error(
            path, f"not a readable zarr array ({type(error).__name__}: {error})"
        ) from error


def _risbench_attrs(path, array: zarr.Array) -> dict:
    attrs = dict(array.attrs)
    if attrs.get("kind") not in KINDS or "descriptor" not in attrs or "dim" not in attrs:
        raise _error(
            path, "not a risbench descriptor store (no descriptor, kind and dim attributes)"
        )
    return attrs


def _record(path, array: zarr.Array, attrs: dict) -> dict:
    """The integrity record, checked against the array it describes."""
    record = attrs.get(INTEGRITY)
    if record is None:
        raise _error(
            path, f"store predates integrity records (no {INTEGRITY!r} attribute): {REBUILD}"
        )
    if not isinstance(record, dict) or record.get("format") != INTEGRITY_FORMAT:
        raise _error(path, f"unknown integrity record format: {REBUILD}")
    try:
        rows, width, chunk_rows = (int(record[k]) for k in ("rows", "width", "chunk_rows"))
        digests = list(record["chunk_sha256"])
        dtype = np.dtype(record["dtype"])
    except (KeyError, TypeError, ValueError) as error:
        raise _error(path, f"damaged integrity record ({error!r}): {REBUILD}") from error
    layout = (array.shape, array.dtype, array.chunks, len(digests))
    if layout != ((rows, width), dtype, (chunk_rows, width), math.ceil(rows / chunk_rows)):
        raise _error(
            path,
            f"array of shape {array.shape}, {array.dtype}, chunks {array.chunks} does not match "
            f"its integrity record ({rows} rows of {width} {dtype}, {chunk_rows}-row chunks, "
            f"{len(digests)} digests): {REBUILD}",
        )
    _check_width(path, attrs["kind"], attrs["dim"], width)
    return {"rows": rows, "chunk_rows": chunk_rows, "digests": digests}


def _expect(path, attrs: dict, rows: int, asked: dict) -> None:
    for name, want in asked.items():
        if name == "rows":
            if want is not None and rows != want:
                raise _error(path, f"holds {rows} rows, {want} expected: {REBUILD}")
        elif want is not None and attrs.get(name) != want:
            got = f"is {attrs[name]!r}" if name in attrs else "is not recorded"
            raise _error(path, f"attribute {name!r} {got}, {want!r} asked for")


def _chunk_name(array: zarr.Array, chunk: int) -> str:
    return array.metadata.encode_chunk_key((chunk, 0))


def _check_present(path, array: zarr.Array, chunks) -> None:
    for chunk in chunks:
        key = _chunk_name(array, chunk)
        if not Path(path, *key.split("/")).is_file():
            raise _error(path, f"chunk {key} is missing (the store is incomplete): {REBUILD}")


def _decode_error(path, array, record, first: int, last: int, error: Exception) -> StoreError:
    """The error naming the first chunk of ``first..last`` that fails to decode alone."""
    size = record["chunk_rows"]
    for chunk in range(first, last + 1):
        try:
            array[chunk * size : min((chunk + 1) * size, record["rows"])]
        except Exception as alone:
            key = _chunk_name(array, chunk)
            return _error(path, f"chunk {key} does not decode ({alone}): {REBUILD}")
    return _error(path, f"chunks {first}..{last} do not decode ({error}): {REBUILD}")


def _read_chunks(path, array: zarr.Array, record: dict, first: int, last: int) -> np.ndarray:
    """Rows of chunks ``first`` to ``last`` (inclusive), decoded and digest-checked."""
    size = record["chunk_rows"]
    start, stop = first * size, min((last + 1) * size, record["rows"])
    try:
        block = np.ascontiguousarray(array[start:stop])
    except Exception as error:  # codecs raise RuntimeError, ValueError, OSError...
        raise _decode_error(path, array, record, first, last, error) from error
    # chunk block[0:size] is chunk `first`; the last one may be shorter
    got = _sha256_rows(block, size)
    for chunk, digest in zip(range(first, last + 1), got, strict=True):
        if digest != record["digests"][chunk]:
            key = _chunk_name(array, chunk)
            raise _error(path, f"chunk {key} does not match its SHA-256 digest: {REBUILD}")
    return block


def _sha256_rows(block: np.ndarray, size: int) -> list[str]:
    """SHA-256 of each ``size``-row slice of ``block``, in threads: hashlib drops the
    GIL on large buffers, so hashing scales with the cores like zarr's decoding."""
    parts = [block[i : i + size] for i in range(0, len(block), size)]
    if len(parts) < 2:
        return [hashlib.sha256(rows).hexdigest() for rows in parts]
    with ThreadPoolExecutor(max_workers=min(len(parts), os.cpu_count() or 1, 8)) as pool:
        return list(pool.map(lambda rows: hashlib.sha256(rows).hexdigest(), parts))


def _open_checked(path, asked: dict) -> tuple[zarr.Array, dict, dict]:
    array = _open(path)
    attrs = _risbench_attrs(path, array)
    record = _record(path, array, attrs)
    _expect(path, attrs, record["rows"], asked)
    return array, attrs, record


EXPECTABLE = ("descriptor", "kind", "dim", "variant", "rows")


def _asked(expect: dict) -> dict:
    """What a reader asks of a store: ``descriptor``, ``kind``, ``dim``,
    ``variant`` and ``rows`` (its row count), each None when not asked."""
    unknown = set(expect) - set(EXPECTABLE)
    if unknown:
        raise TypeError(f"a store cannot be asked for {sorted(unknown)}; only {EXPECTABLE}")
    return {key: expect.get(key) for key in EXPECTABLE}


def read_store(path: str | os.PathLike, **expect) -> tuple[np.ndarray, dict]:
    """The matrix and attributes of a store, after every check of the module
    docstring; ``expect`` (descriptor, kind, dim, variant, rows) must equal the
    store's attributes (``rows``: its row count)."""
    array, attrs, record = _open_checked(path, _asked(expect))
    chunks = len(record["digests"])
    _check_present(path, array, range(chunks))
    if chunks == 0:
        return np.empty(array.shape, dtype=array.dtype), attrs
    return _read_chunks(path, array, record, 0, chunks - 1), attrs


def _runs(chunks: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive chunk numbers, as (first, last)."""
    breaks = np.flatnonzero(np.diff(chunks) != 1) + 1
    return [(int(run[0]), int(run[-1])) for run in np.split(chunks, breaks)]


def read_rows(path: str | os.PathLike, positions, **expect) -> tuple[np.ndarray, dict]:
    """Rows ``positions`` (strictly increasing) of a store and its attributes,
    reading and checking only the chunks that hold them (see the module docstring);
    ``expect`` as for :func:`read_store`."""
    array, attrs, record = _open_checked(path, _asked(expect))
    positions = np.asarray(positions)
    if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
        raise _error(path, f"row positions must be a 1-D integer array, got {positions.dtype}")
    positions = positions.astype(np.int64)
    if positions.size and (
        positions[0] < 0 or positions[-1] >= record["rows"] or np.any(np.diff(positions) <= 0)
    ):
        raise _error(path, f"row positions must increase within 0..{record['rows'] - 1}")
    out = np.empty((positions.size, array.shape[1]), dtype=array.dtype)
    if not positions.size:
        return out, attrs
    chunks = np.unique(positions // record["chunk_rows"])
    _check_present(path, array, chunks.tolist())
    for first, last in _runs(chunks):
        start = first * record["chunk_rows"]
        lo, hi = np.searchsorted(positions, [start, (last + 1) * record["chunk_rows"]])
        block = _read_chunks(path, array, record, first, last)
        out[lo:hi] = block[positions[lo:hi] - start]
    return out, attrs


def read_stores(
    stores: Mapping[str, str | os.PathLike],
    *,
    descriptor: str | None = None,
    kind: str | None = None,
    dim: int | None = None,
    rows: Mapping[str, int] | None = None,
    positions: Mapping[str, np.ndarray] | None = None,
    check_variant: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """One descriptor's stores (``stores``: variant → path): the matrices by variant
    and the first store's attributes. ``descriptor``, ``kind`` and ``dim`` default
    to the first store's, so every store must agree with it; ``rows`` gives each
    variant's expected row count, ``positions`` the rows to read (default: all),
    and ``check_variant`` asks each store to record its own variant (hash and CNN
    stores written by risbench do; the benchmark asks for it)."""
    if not stores:
        raise ValueError("read_stores: no stores given")
    matrices, first = {}, None
    for variant, path in stores.items():
        asked = {
            "descriptor": descriptor,
            "kind": kind,
            "dim": dim,
            "variant": variant if check_variant else None,
            "rows": None if rows is None else rows[variant],
        }
        if positions is None:
            matrices[variant], attrs = read_store(path, **asked)
        else:
            matrices[variant], attrs = read_rows(path, positions[variant], **asked)
        if first is None:
            first = attrs
            descriptor, kind, dim = attrs["descriptor"], attrs["kind"], attrs["dim"]
    return matrices, first


def read_attrs(path: str | os.PathLike) -> dict:
    """The attributes of a store (no integrity check: nothing but the metadata is read)."""
    return _risbench_attrs(path, _open(path))


def package_versions(*packages: str) -> dict[str, str | None]:
    """Installed versions of the packages that made a store (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
