"""MIRFLICKR-25k download: resumable, verified, unpacked; all against a local HTTP server.

The server (``http.server`` in a thread on 127.0.0.1) serves a small zip with
the official archive's layout (top folder ``mirflickr/`` with ``im1.jpg`` ...
and license/meta text files). It supports ``Range``/``If-Range`` and can cut a
response short, so interrupted downloads are real ones. No test touches the
network beyond 127.0.0.1.
"""

import hashlib
import io
import json
import logging
import re
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from risbench import download, sources

ROOT = Path(__file__).resolve().parents[1]


def mirflickr_zip(count: int = 5) -> bytes:
    """A zip with the layout of mirflickr25k.zip: mirflickr/im{1..count}.jpg plus text files."""
    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mirflickr/", "")
        archive.writestr("mirflickr/license.txt", "Creative Commons licences, see meta/license\n")
        archive.writestr("mirflickr/README.txt", "MIRFLICKR-25000 (test copy)\n")
        for i in range(1, count + 1):
            photo = io.BytesIO()
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(photo, "JPEG", quality=90)
            archive.writestr(f"mirflickr/im{i}.jpg", photo.getvalue())
            archive.writestr(f"mirflickr/meta/tags/tags{i}.txt", "sky\ntest\n")
            archive.writestr(f"mirflickr/meta/exif/exif{i}.txt", "-Make\nTest\n")
    return buffer.getvalue()


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cuts: list[int] = []  # bytes to send before dropping the connection, per request
        self.ignore_range = False
        self.etag = '"v1"'


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        state: _State = self.server.state
        wanted = self.headers.get("Range")
        state.requests.append(
            {"path": self.path, "range": wanted, "if_range": self.headers.get("If-Range")}
        )
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if wanted and not state.ignore_range:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range == state.etag:
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
        rest = body[start:]
        self.send_response(206 if wanted and start else 200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(rest)))
        self.send_header("ETag", state.etag)
        self.send_header("Accept-Ranges", "none" if state.ignore_range else "bytes")
        if wanted and start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        cut = state.cuts.pop(0) if state.cuts else None
        self.wfile.write(rest if cut is None else rest[:cut])  # HTTP/1.0: then it closes


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def archive_bytes():
    return mirflickr_zip()


@pytest.fixture
def served(server, archive_bytes):
    server.state.files["/mirflickr25k.zip"] = archive_bytes
    return server, f"{server.base}/mirflickr25k.zip", hashlib.sha256(archive_bytes).hexdigest()


def test_download_verifies_and_unpacks_the_official_layout(served, tmp_path):
    server, url, digest = served
    archive = tmp_path / "download" / "mirflickr25k.zip"
    assert download.fetch(url, archive, sha256=digest.upper(), progress=False) == digest
    assert archive.read_bytes() == server.state.files["/mirflickr25k.zip"]
    assert not archive.with_name("mirflickr25k.zip.part").exists()
    unpacked = download.unpack(archive, tmp_path / "download" / "mirflickr25k")
    assert (unpacked / "mirflickr" / "im5.jpg").is_file()
    assert not (tmp_path / "download" / "mirflickr25k.unpacking").exists()
    found = sources.find_mirflickr(unpacked)
    assert [s.image_id for s in found.sources] == [
        "im1",
        "im2",
        "im3",
        "im4",
        "im5",
    ]  # no meta/ text
    # A finished archive is reused (verified again), not downloaded again.
    before = len(server.state.requests)
    assert download.fetch(url, archive, sha256=digest, progress=False) == digest
    assert len(server.state.requests) == before


def test_interrupted_download_resumes_with_range(served, tmp_path):
    server, url, digest = served
    size = len(server.state.files["/mirflickr25k.zip"])
    archive = tmp_path / "mirflickr25k.zip"
    part = tmp_path / "mirflickr25k.zip.part"
    server.state.cuts = [size // 3]
    with pytest.raises(download.DownloadError, match="run again to resume"):
        download.fetch(url, archive, sha256=digest, retries=0, progress=False)
    assert part.stat().st_size == size // 3 and not archive.exists()
    # The next run asks for the rest only, and the result is byte-identical.
    download.fetch(url, archive, sha256=digest, retries=0, progress=False)
    last = server.state.requests[-1]
    assert last["range"] == f"bytes={size // 3}-" and last["if_range"] == '"v1"'
    assert archive.read_bytes() == server.state.files["/mirflickr25k.zip"]
    assert not part.exists()


def test_interruptions_within_one_run_are_resumed(served, tmp_path):
    server, url, digest = served
    archive = tmp_path / "mirflickr25k.zip"
    server.state.cuts = [1000, 3000]
    download.fetch(url, archive, sha256=digest, retries=3, wait=0, progress=False)
    ranges = [r["range"] for r in server.state.requests]
    assert ranges == [None, "bytes=1000-", "bytes=4000-"]
    assert archive.read_bytes() == server.state.files["/mirflickr25k.zip"]


def test_a_complete_part_file_is_finished_without_new_bytes(served, tmp_path):
    server, url, digest = served
    archive = tmp_path / "mirflickr25k.zip"
    part = tmp_path / "mirflickr25k.zip.part"
    part.write_bytes(server.state.files["/mirflickr25k.zip"])
    (tmp_path / "mirflickr25k.zip.part.json").write_text(json.dumps({"url": url}))
    download.fetch(url, archive, sha256=digest, retries=0, progress=False)  # the server says 416
    assert archive.read_bytes() == server.state.files["/mirflickr25k.zip"]


def test_server_without_range_support_starts_over(served, tmp_path):
    server, url, digest = served
    server.state.ignore_range = True
    archive = tmp_path / "mirflickr25k.zip"
    server.state.cuts = [2000]
    download.fetch(url, archive, sha256=digest, retries=1, wait=0, progress=False)
    assert archive.read_bytes() == server.state.files["/mirflickr25k.zip"]


def test_a_changed_file_on_the_server_is_fetched_whole(served, tmp_path):
    server, url, _ = served
    archive = tmp_path / "mirflickr25k.zip"
    server.state.cuts = [1500]
    with pytest.raises(download.DownloadError):
        download.fetch(url, archive, retries=0, progress=False)
    new = mirflickr_zip(count=4)
    server.state.files["/mirflickr25k.zip"] = new
    server.state.etag = '"v2"'
    download.fetch(url, archive, sha256=hashlib.sha256(new).hexdigest(), retries=0, progress=False)
    assert archive.read_bytes() == new


def test_checksum_mismatch_fails_with_a_clear_message(served, tmp_path):
    server, url, digest = served
    archive = tmp_path / "mirflickr25k.zip"
    wrong = "0" * 64
    with pytest.raises(download.DownloadError) as raised:
        download.fetch(url, archive, sha256=wrong, progress=False)
    message = str(raised.value)
    assert "checksum mismatch" in message and wrong in message and digest in message
    assert not archive.exists() and not (tmp_path / "mirflickr25k.zip.part").exists()
    assert (tmp_path / "mirflickr25k.zip.bad").read_bytes() == server.state.files[
        "/mirflickr25k.zip"
    ]
    # the command line fails the same way, with the message on stderr
    done = subprocess.run(
        [sys.executable, "-m", "risbench.cli", "download", "--url", url, "--sha256", wrong]
        + ["--archive", str(archive), "--unpack-to", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "checksum mismatch" in done.stderr and digest in done.stderr
    assert not (tmp_path / "out").exists()


def test_without_checksum_the_log_says_not_verified(served, tmp_path, caplog):
    _, url, digest = served
    with caplog.at_level(logging.INFO, logger="risbench"):
        download.fetch(url, tmp_path / "a.zip", progress=False)
    assert "NOT verified" in caplog.text and digest in caplog.text


def test_missing_file_fails_without_retrying(served, tmp_path):
    server, _, _ = served
    with pytest.raises(download.DownloadError, match="404"):
        download.fetch(f"{server.base}/nothing.zip", tmp_path / "a.zip", progress=False)
    assert len(server.state.requests) == 1


def test_unpack_refuses_unsafe_paths_and_broken_archives(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("mirflickr/im1.jpg", b"x")
        archive.writestr("../outside.txt", b"x")
    with pytest.raises(download.DownloadError, match="unsafe path"):
        download.unpack(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "out").exists()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(download.DownloadError, match="not a valid zip"):
        download.unpack(broken, tmp_path / "out")


def test_cli_download_then_dataset_from_mirflickr(served, tmp_path):
    _, url, digest = served
    unpacked = tmp_path / "download" / "mirflickr25k"
    cli = [sys.executable, "-m", "risbench.cli"]
    subprocess.run(
        cli
        + ["download", "--url", url, "--sha256", digest]
        + ["--archive", str(tmp_path / "download" / "mirflickr25k.zip")]
        + ["--unpack-to", str(unpacked)],
        check=True,
        capture_output=True,
    )
    spec = {"source": "mirflickr", "distractors": 1, "extensions": ["jpg"], "recursive": True}
    out = tmp_path / "results"
    done = subprocess.run(
        cli
        + ["dataset", "--spec", json.dumps(spec), "--images-dir", str(out / "original")]
        + ["--manifest", str(out / "manifest.parquet"), "--list", str(out / "list.parquet")]
        + ["--skipped", str(out / "skipped.csv"), "--duplicates", str(out / "dup.csv")]
        + ["--near-duplicates", str(out / "near.csv"), "--source-dir", str(unpacked)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest.image_id.tolist() == ["im1", "im2", "im3", "im4", "im5"]
    assert manifest.role.tolist() == ["distractor"] + ["base"] * 4
    # the archive's other files are not images, and are listed as such
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped.path, skipped.reason, strict=True))
    top = unpacked / "mirflickr"
    assert set(reasons) == {str(top / "README.txt"), str(top / "license.txt"), str(top / "meta")}
    assert "'.txt' is not in dataset.extensions" in reasons[str(top / "license.txt")]
    assert reasons[str(top / "meta")].startswith("a folder, not searched")


def test_workflow_downloads_then_reads_mirflickr(served, tmp_path):
    """The two rules in a copy of the workflow: download_mirflickr, then dataset."""
    _, url, digest = served
    # src is linked both inside the copy and beside it: common.smk finds the
    # package relative to the workflow's base directory.
    (tmp_path / "src").symlink_to(ROOT / "src")
    workdir = tmp_path / "run"
    workdir.mkdir()
    shutil.copy(ROOT / "Snakefile", workdir)
    shutil.copytree(ROOT / "workflow", workdir / "workflow")
    (workdir / "src").symlink_to(ROOT / "src")
    (workdir / "config").mkdir()
    config = {
        "dataset": {"source": "mirflickr", "url": url, "sha256": digest, "distractors": 1},
        "modifications": ["blur"],
        "hashes": ["dhash"],
        "models": {},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/dataset/manifest.parquet"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "download_mirflickr" in done.stdout + done.stderr
    manifest = pd.read_parquet(workdir / "results" / "dataset" / "manifest.parquet")
    assert len(manifest) == 5
    assert (workdir / "results" / "download" / "mirflickr25k.zip").is_file()
    assert "sha256 verified" in (workdir / "logs" / "download_mirflickr.log").read_text()
    # the reports' copies in the log folder (kept if the job fails) list the text files
    kept = pd.read_csv(workdir / "logs" / "dataset" / "skipped.csv")
    assert sorted(Path(p).name for p in kept.path) == ["README.txt", "license.txt", "meta"]


def test_an_archive_put_there_by_hand_is_used_without_network(tmp_path, archive_bytes):
    archive = tmp_path / "mirflickr25k.zip"
    archive.write_bytes(archive_bytes)
    digest = hashlib.sha256(archive_bytes).hexdigest()
    unreachable = "http://127.0.0.1:9/mirflickr25k.zip"  # discard port: nothing listens
    assert download.fetch(unreachable, archive, progress=False) == digest
    assert download.fetch(unreachable, archive, sha256=digest, progress=False) == digest


def zeros_zip(path: Path, megabytes: int) -> Path:
    """A zip of one file of zeros: about a thousand times smaller than what it unpacks to."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mirflickr/im1.jpg", bytes(megabytes << 20))
    return path


def test_unpack_refuses_an_archive_that_declares_too_much(tmp_path):
    archive = zeros_zip(tmp_path / "mirflickr25k.zip", 8)
    assert archive.stat().st_size * 50 < 8 << 20  # over the default bound of 50 x its size
    with pytest.raises(download.DownloadError) as raised:
        download.unpack(archive, tmp_path / "out")
    message = str(raised.value)
    assert "8.4 MB" in message and "50 x" in message and "dataset.max_unpacked_gb" in message
    assert f"rm {archive}" in message  # how to delete the cached archive
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.unpacking").exists()
    # an explicit bound replaces the default: 0.008 GB is under the 8.4 MB, 0.009 GB is over
    with pytest.raises(download.DownloadError, match="dataset.max_unpacked_gb = 0.008"):
        download.unpack(archive, tmp_path / "out", max_unpacked_gb=0.008)
    unpacked = download.unpack(archive, tmp_path / "out", max_unpacked_gb=0.009)
    assert (unpacked / "mirflickr" / "im1.jpg").stat().st_size == 8 << 20


def test_unpack_refuses_symbolic_links_in_the_archive(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("mirflickr/im1.jpg", b"x")
        link = zipfile.ZipInfo("mirflickr/im2.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16  # how zip -y stores a link
        zipped.writestr(link, "/etc/passwd")
    with pytest.raises(download.DownloadError) as raised:
        download.unpack(archive, tmp_path / "out")
    assert "mirflickr/im2.jpg is a symbolic link" in str(raised.value)
    assert f"rm {archive}" in str(raised.value)
    assert not (tmp_path / "out").exists()
    # the command line says the same, and the bound can be set there
    done = subprocess.run(
        [sys.executable, "-m", "risbench.cli", "download", "--archive", str(archive)]
        + ["--unpack-to", str(tmp_path / "out"), "--max-unpacked-gb", "1"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "is a symbolic link" in done.stderr
