"""Resumable, verified download and safe unpacking of a dataset archive.

Standard library only (urllib, zipfile). ``fetch`` writes into ``<archive>.part``
and, when interrupted, resumes from where it stopped with an HTTP ``Range``
request (``If-Range`` on the server's ETag or Last-Modified, so a file that
changed on the server is fetched whole again); a server that ignores ``Range``
makes it start over. The finished file is checked against the expected
SHA-256 before it is renamed to ``<archive>``; a mismatch keeps the bytes as
``<archive>.bad`` and fails with both digests. Without an expected checksum
the archive is not verified, and the log says so (with its digest, to pin).

``unpack`` checks every member before it writes anything: no path may leave
the destination, no member may be a symbolic link, and the sizes the archive
declares may add up to at most a bound (50 times the archive's size, or an
explicit ``max_unpacked_gb``), so a zip bomb is refused before it fills the disk.

A finished archive is a cache: ``fetch`` reuses it (checking it again when a
checksum is given) instead of downloading it again, so deleting the unpacked
folder, or rerunning its rule, costs an unpack, not a download.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from risbench.files import sha256_file

log = logging.getLogger("risbench")

CHUNK = 1 << 20
# Without an explicit bound, an archive may unpack to at most this many times its size.
# Photos barely compress (MIRFLICKR-25k's zip is about the size of its files), while a
# zip of zeros unpacks to about a thousand times its size.
MAX_UNPACK_RATIO = 50
USER_AGENT = "risbench (Python urllib)"


class DownloadError(Exception):
    """A download or unpack that cannot succeed by retrying; the message says why."""


class _Interrupted(OSError):
    """The connection ended before the announced length: resumable."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) of a ``Content-Range`` header; None where unknown."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start = int(match[1]) if match[1] is not None else None
    total = int(match[2]) if match[2] != "*" else None
    return start, total


def _stream(response, part: Path, mode: str, offset: int, total: int | None, progress: bool):
    """Writes (``mode`` "wb") or appends ("ab") the response body to ``part``, with a bar."""
    from tqdm import tqdm

    with (
        open(part, mode) as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=part.name,
            disable=not progress,
        ) as bar,
    ):
        while block := response.read(CHUNK):
            out.write(block)
            bar.update(len(block))


def _download_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One request: appends to ``part`` (or restarts it); raises on any interruption."""
    state_path = _sidecar(part)
    state = _read_json(state_path)
    offset = part.stat().st_size if part.exists() else 0
    if offset and state.get("url") != url:
        log.info("%s holds another URL's bytes; starting over", part)
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = state.get("etag") or state.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after `offset`: complete, or stale
            _, total = _content_range(error.headers.get("Content-Range"))
            error.close()
            if total == offset:
                return
            log.info("%s does not match the file on the server; starting over", part)
            part.unlink()
            raise _Interrupted("range not satisfiable") from None
        raise
    with response:
        status = response.status
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(f"server resumed at byte {start}, not {offset}")
            mode = "ab"
            log.info("resuming %s at byte %d of %s", url, offset, total or "unknown")
        elif status == 200:
            if offset:
                log.info("the server sent the whole file; starting over")
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}")
        state = {
            "url": url,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
            "total": total,
        }
        _write_json(state_path, state)
        _stream(response, part, mode, offset, total, progress)
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed at byte {size} of {total}")
    if total is not None and size > total:
        part.unlink()
        raise _Interrupted(f"received {size} bytes, {total} announced")


def _retryable(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in (408, 429) or error.code >= 500
    return isinstance(error, OSError | http.client.HTTPException)


def _cached(url: str, archive: Path, expected: str | None) -> str | None:
    """The digest of an archive already there that can be used, or None (it is then
    deleted: it does not match the checksum, or it came from another URL)."""
    if not archive.exists():
        return None
    recorded = _read_json(_sidecar(archive))
    if expected:
        digest = sha256_file(archive)
        if digest == expected:
            log.info("%s already downloaded, sha256 verified", archive)
            return digest
        log.info("%s does not match the expected sha256; downloading again", archive)
    elif recorded.get("url") in (None, url):
        digest = recorded.get("sha256") or sha256_file(archive)
        log.warning(
            "%s already downloaded; NOT verified (no sha256 configured), its sha256 is %s",
            archive,
            digest,
        )
        return digest
    archive.unlink()
    _sidecar(archive).unlink(missing_ok=True)
    return None


def _download_resuming(
    url: str, part: Path, retries: int, timeout: float, wait: float, progress: bool
) -> None:
    """``_download_once`` and up to ``retries`` resumed attempts after interruptions."""
    attempt = 0
    while True:
        try:
            _download_once(url, part, timeout, progress)
            return
        except DownloadError:
            raise
        except Exception as error:
            if not _retryable(error):
                raise DownloadError(f"cannot download {url}: {error}") from error
            received = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                raise DownloadError(
                    f"download of {url} failed after {attempt + 1} attempt(s): {error}; "
                    f"{part} keeps the {received} bytes received: run again to resume"
                ) from error
            attempt += 1
            log.warning(
                "download interrupted at byte %d (%s); resuming, attempt %d of %d",
                received,
                error,
                attempt + 1,
                retries + 1,
            )
            time.sleep(wait * 2 ** (attempt - 1))


def fetch(
    url: str,
    archive: str | Path,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    wait: float = 2.0,
    progress: bool = True,
) -> str:
    """Downloads ``url`` to ``archive`` (resumably, see the module); returns its SHA-256.

    ``retries`` more attempts follow an interruption, each resuming the
    ``.part`` file, ``wait`` seconds apart (doubling). When they are used up
    the ``.part`` file stays, and the next call resumes it.
    """
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    digest = _cached(url, archive, expected)
    if digest is not None:
        return digest
    log.info("downloading %s -> %s", url, archive)
    part = archive.with_name(archive.name + ".part")
    _download_resuming(url, part, retries, timeout, wait, progress)
    digest = sha256_file(part)
    if expected and digest != expected:
        bad = archive.with_name(archive.name + ".bad")
        os.replace(part, bad)
        _sidecar(part).unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {digest}; "
            f"the download is kept as {bad} (it will not be resumed). Check the URL and "
            "the configured sha256 (dataset.sha256), then run again."
        )
    os.replace(part, archive)
    _sidecar(part).unlink(missing_ok=True)
    _write_json(_sidecar(archive), {"url": url, "sha256": digest, "size": archive.stat().st_size})
    if expected:
        log.info("sha256 verified: %s", digest)
    else:
        log.warning(
            "no sha256 configured: %s is NOT verified; its sha256 is %s "
            "(set dataset.sha256 to it to verify later downloads)",
            archive,
            digest,
        )
    return digest


def _delete_hint(archive: Path) -> str:
    return (
        f"if the archive is not the one you meant, delete the cached archive "
        f"(rm {archive} {_sidecar(archive)}) and run again to download it anew"
    )


def _check_members(
    archive: Path, members: list[zipfile.ZipInfo], max_unpacked_gb: float | None
) -> int:
    """Refuses unsafe paths, symbolic links and too large a total; returns the bytes needed.

    The declared sizes are a true bound: zipfile stops each member at its declared
    size (and then fails its CRC check), whatever its compressed data expand to.
    """
    for member in members:
        parts = Path(member.filename).parts
        unsafe = not parts or ".." in parts or ":" in parts[0]
        if unsafe or member.filename.startswith(("/", "\\")):
            raise DownloadError(
                f"{archive}: unsafe path in archive: {member.filename}; {_delete_hint(archive)}"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise DownloadError(
                f"{archive}: {member.filename} is a symbolic link; an archive of images "
                f"needs none, so it is not unpacked; {_delete_hint(archive)}"
            )
    needed = sum(m.file_size for m in members)
    size = archive.stat().st_size
    if max_unpacked_gb is None:
        bound = MAX_UNPACK_RATIO * size
        why = f"{MAX_UNPACK_RATIO} x the archive's {size / 1e6:.1f} MB"
    else:
        bound = max_unpacked_gb * 1e9
        why = f"dataset.max_unpacked_gb = {max_unpacked_gb:g}"
    if needed > bound:
        raise DownloadError(
            f"{archive} declares {needed / 1e6:.1f} MB of files, more than the bound of "
            f"{bound / 1e6:.1f} MB ({why}), so it is not unpacked; {_delete_hint(archive)}; "
            "if it is, set dataset.max_unpacked_gb (risbench download --max-unpacked-gb) "
            "above its size"
        )
    return needed


def unpack(archive: str | Path, dest: str | Path, *, max_unpacked_gb: float | None = None) -> Path:
    """Unpacks a zip archive into ``dest`` (replaced whole, never left half-written).

    Refuses, before writing anything, unsafe paths, symbolic links and archives
    that declare more than ``max_unpacked_gb`` GB (default: 50 x the archive's size).
    """
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            needed = _check_members(archive, members, max_unpacked_gb)
            tmp.mkdir(parents=True)
            free = shutil.disk_usage(tmp).free
            if needed > free:
                raise DownloadError(
                    f"unpacking {archive} needs {needed / 1e9:.1f} GB, "
                    f"{free / 1e9:.1f} GB free under {tmp.parent}"
                )
            log.info("unpacking %d files (%.1f MB) into %s", len(members), needed / 1e6, dest)
            zipped.extractall(tmp)
    except zipfile.BadZipFile as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(
            f"{archive} is not a valid zip archive ({error}); {_delete_hint(archive)}"
        ) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def prepare(
    archive: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    unpack_to: str | Path | None = None,
    max_unpacked_gb: float | None = None,
    retries: int = 3,
    timeout: float = 60.0,
) -> None:
    """The ``risbench download`` command: fetch ``url`` (or use the archive already
    there), then unpack it into ``unpack_to`` when given."""
    archive = Path(archive)
    if url:
        fetch(url, archive, sha256=sha256, retries=retries, timeout=timeout)
    elif not archive.exists():
        raise DownloadError(f"{archive} does not exist and no --url is given")
    if unpack_to:
        unpack(archive, unpack_to, max_unpacked_gb=max_unpacked_gb)
        log.info("unpacked %s into %s", archive, unpack_to)
