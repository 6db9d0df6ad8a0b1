"""Files: the one SHA-256 helper for source images, archives and weights, the
one atomic write of a file risbench makes (images, encoders, indexes), and the
one check of a versioned risbench file's format (encoders, indexes)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes as 64 lower-case hex digits, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Writes through ``write(file)`` into a temporary file beside ``path``, then
    renames it to ``path``: a reader sees the old file or the whole new one, and a
    failed write leaves nothing behind. Streaming into the file keeps no second
    copy of what is written in memory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fp:
            write(fp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_format(header: dict, name: str, version: int, *, path, kind: str, advice: str, error):
    """Raises ``error`` (naming ``path``) unless ``header`` gives the format
    ``name`` at ``version``; a file of another version is told ``advice``."""
    if header.get("format") != name:
        raise error(f"{path}: not a risbench {kind} file")
    if header.get("format_version") != version:
        raise error(
            f"{path}: {kind} format version {header.get('format_version')}, this risbench "
            f"reads version {version}; {advice}"
        )
