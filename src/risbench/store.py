"""Descriptor stores: one zarr v3 array per descriptor and variant.

A store holds a (rows, dim) float32 matrix (CNN features) or a (rows, bytes)
uint8 matrix (bit-packed hash codes, RV digests), in the row order of that
variant in ``images.parquet``. Attributes say what the rows are and how they
were made, so a store can be read without the config that produced it.

Writes go to ``<path>.partial`` and are renamed into place only when every row
is written: an interrupted job never leaves a store that looks complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import zarr

KINDS = ("float", "binary", "rv")
ROW_CHUNK = 1024


class StoreWriter:
    """Streams row blocks into a new store; ``close()`` publishes it atomically."""

    def __init__(self, path: str | os.PathLike, rows: int, width: int, dtype, attrs: dict):
        if attrs.get("kind") not in KINDS:
            raise ValueError(f"store {path}: attribute 'kind' must be one of {KINDS}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.rows = rows
        self.array = zarr.create_array(
            store=str(self.partial),
            shape=(rows, width),
            chunks=(max(1, min(ROW_CHUNK, rows)), max(1, width)),
            dtype=dtype,
            zarr_format=3,
            overwrite=True,
        )
        self.array.attrs.update(attrs)
        self.written = 0

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        end = self.written + len(block)
        if end > self.rows:
            raise ValueError(f"store {self.path}: {end} rows written, {self.rows} declared")
        self.array[self.written : end] = block
        self.written = end

    def close(self) -> None:
        if self.written != self.rows:
            raise ValueError(f"store {self.path}: {self.written} of {self.rows} rows written")
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.partial, self.path)


def write_store(path: str | os.PathLike, matrix: np.ndarray, attrs: dict) -> None:
    """Writes a whole matrix as one store."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"store {path}: expected a 2-D matrix, got shape {matrix.shape}")
    writer = StoreWriter(path, matrix.shape[0], matrix.shape[1], matrix.dtype, attrs)
    writer.write(matrix)
    writer.close()


def read_store(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Returns the matrix and the attributes of a store."""
    array = zarr.open_array(str(path), mode="r")
    return array[...], dict(array.attrs)


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


def read_attrs(path: str | os.PathLike) -> dict:
    return dict(zarr.open_array(str(path), mode="r").attrs)
