"""Descriptor stores: exact round trips, integrity records, and damage that must
fail loudly (missing, truncated, tampered chunks; foreign or old stores; wrong
descriptor, kind, dim, variant or row count), always naming the store path."""

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import zarr

from risbench import store
from risbench.store import StoreError

ROWS, WIDTH = 10, 6  # with 4-row chunks: chunks c/0/0, c/1/0, c/2/0 (the last holds 2 rows)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(store, "ROW_CHUNK", 4)


def features(seed=0, rows=ROWS, width=WIDTH):
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def attrs(descriptor="vec", kind="float", dim=WIDTH, **extra):
    return {"descriptor": descriptor, "kind": kind, "dim": dim, **extra}


def codes(seed=1, rows=ROWS, bits=64):
    return np.random.default_rng(seed).integers(0, 256, (rows, bits // 8), dtype=np.uint8)


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "vec" / "blur.zarr"
    matrix = features()
    store.write_store(path, matrix, attrs(variant="blur"))
    return path, matrix


def chunk_file(path, i):
    """zarr v3's default chunk key layout: c/{row chunk}/{column chunk}."""
    return path / "c" / str(i) / "0"


def raises_naming(path, match):
    return pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: .*{match}")


# --------------------------------------------------------------------------------------
# intact stores


def test_round_trip_is_exact_with_a_digest_per_chunk(written):
    path, matrix = written
    got, got_attrs = store.read_store(path, descriptor="vec", kind="float", dim=6, rows=10)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, matrix)
    assert got_attrs["descriptor"] == "vec" and got_attrs["variant"] == "blur"
    record = got_attrs["integrity"]
    assert (record["rows"], record["chunk_rows"], record["chunks"]) == (10, 4, 3)
    # the digests are SHA-256 of each chunk's rows, computed here independently
    want = [hashlib.sha256(matrix[i : i + 4].tobytes()).hexdigest() for i in (0, 4, 8)]
    assert record["chunk_sha256"] == want
    assert sorted(p.name for p in (path / "c").iterdir()) == ["0", "1", "2"]
    assert not path.with_name("blur.zarr.partial").exists()


def test_streamed_unaligned_blocks_record_the_same_digests(tmp_path, written):
    path, matrix = written
    writer = store.StoreWriter(tmp_path / "s.zarr", ROWS, WIDTH, np.float32, attrs())
    for start, stop in ((0, 3), (3, 9), (9, 10)):  # blocks straddling chunk boundaries
        writer.write(matrix[start:stop].astype(np.float64))  # cast to float32 on the way
    assert not (tmp_path / "s.zarr").exists()  # published only on close
    writer.close()
    got, got_attrs = store.read_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(got, matrix)
    assert got_attrs["integrity"] == store.read_attrs(path)["integrity"]


def test_binary_codes_empty_stores_and_all_zero_chunks(tmp_path):
    matrix = codes()
    matrix[4:8] = 0  # chunk 1 equals zarr's fill value: it must still be written
    store.write_store(tmp_path / "h.zarr", matrix, attrs("dct", "binary", 64))
    assert chunk_file(tmp_path / "h.zarr", 1).is_file()
    got, _ = store.read_store(tmp_path / "h.zarr", kind="binary", dim=64)
    np.testing.assert_array_equal(got, matrix)
    # rv digests: 320 bits in 40 bytes; colorhash-like 42 bits in 6 bytes
    store.write_store(tmp_path / "c.zarr", codes(bits=48)[:, :6], attrs("colorhash", "binary", 42))
    store.write_store(tmp_path / "e.zarr", np.zeros((0, 40), np.uint8), attrs("rv", "rv", 320))
    empty, _ = store.read_store(tmp_path / "e.zarr", rows=0)
    assert empty.shape == (0, 40) and empty.dtype == np.uint8


def test_read_rows_reads_and_checks_only_the_chunks_it_needs(written):
    path, matrix = written
    for rows in ([0, 1, 2], [1, 5, 9], [8, 9], [], [9]):
        got, _ = store.read_rows(path, np.array(rows, dtype=np.int64), descriptor="vec")
        np.testing.assert_array_equal(got, matrix[rows])
    chunk_file(path, 1).unlink()
    got, _ = store.read_rows(path, [0, 3, 8])  # chunks 0 and 2 only
    np.testing.assert_array_equal(got, matrix[[0, 3, 8]])
    with raises_naming(path, "chunk c/1/0 is missing"):
        store.read_rows(path, [0, 4])
    for bad in ([3, 2], [1, 1], [10], [-1]):
        with raises_naming(path, "row positions must increase"):
            store.read_rows(path, bad)


# --------------------------------------------------------------------------------------
# damage


def test_a_missing_chunk_fails_instead_of_reading_fill_values(written):
    path, matrix = written
    chunk_file(path, 1).unlink()
    # what zarr alone makes of it (the silent F1 0.64): zeros
    assert not zarr.open_array(str(path), mode="r")[4:8].any()
    with raises_naming(path, "chunk c/1/0 is missing"):
        store.read_store(path)
    shutil.rmtree(path / "c")
    with raises_naming(path, "chunk c/0/0 is missing"):
        store.read_store(path)


def test_a_truncated_chunk_names_the_store_and_the_chunk(written):
    path, _ = written
    data = chunk_file(path, 2).read_bytes()
    chunk_file(path, 2).write_bytes(data[: len(data) // 2])
    with raises_naming(path, "chunk c/2/0 does not decode"):
        store.read_store(path)
    with raises_naming(path, "chunk c/2/0 does not decode"):
        store.read_rows(path, [9])
    chunk_file(path, 0).write_bytes(b"")
    with raises_naming(path, "chunk c/0/0 does not decode"):
        store.read_store(path)


def test_a_flipped_byte_that_still_decodes_fails_the_digest(written):
    path, matrix = written
    target = chunk_file(path, 1)
    data = bytearray(target.read_bytes())
    # random float32 does not compress: the middle of the frame is raw bytes
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    decoded = zarr.open_array(str(path), mode="r")[4:8]  # zarr alone: no error
    assert (decoded != matrix[4:8]).sum() == 1
    with raises_naming(path, "chunk c/1/0 does not match its SHA-256 digest"):
        store.read_store(path)
    with raises_naming(path, "chunk c/1/0 does not match"):
        store.read_rows(path, [5])
    store.read_rows(path, [0, 9])  # the intact chunks still read


def test_rows_rewritten_through_zarr_fail_the_digest(written):
    path, _ = written
    zarr.open_array(str(path), mode="r+")[9, 0] = 42.0  # a valid chunk, other values
    with raises_naming(path, "chunk c/2/0 does not match its SHA-256 digest"):
        store.read_store(path)


def test_another_descriptors_store_copied_in_place(tmp_path):
    phash = tmp_path / "phash" / "blur.zarr"
    dct = tmp_path / "dct" / "blur.zarr"
    store.write_store(phash, codes(1), attrs("phash", "binary", 64, variant="blur"))
    store.write_store(dct, codes(2), attrs("dct", "binary", 64, variant="blur"))
    shutil.rmtree(phash)
    shutil.copytree(dct, phash)
    with raises_naming(phash, "attribute 'descriptor' is 'dct', 'phash' asked for"):
        store.read_store(phash, descriptor="phash", kind="binary", dim=64, variant="blur")
    # read as a set, the stores must agree even when the caller names nothing
    original = tmp_path / "phash" / "original.zarr"
    store.write_store(original, codes(3), attrs("phash", "binary", 64, variant="original"))
    with raises_naming(phash, "attribute 'descriptor' is 'dct', 'phash' asked for"):
        store.read_stores({"original": original, "blur": phash})
    with raises_naming(phash, "'descriptor' is 'dct'"):
        store.read_stores(
            {"original": original, "blur": phash}, positions={"original": [0], "blur": [0]}
        )


def test_wrong_kind_dim_variant_or_rows(written, tmp_path):
    path, _ = written
    cases = [
        ({"kind": "binary"}, "attribute 'kind' is 'float', 'binary' asked for"),
        ({"dim": 64}, "attribute 'dim' is 6, 64 asked for"),
        ({"variant": "rotate"}, "attribute 'variant' is 'blur', 'rotate' asked for"),
        ({"rows": 11}, "holds 10 rows, 11 expected"),
    ]
    for asked, message in cases:
        with raises_naming(path, message):
            store.read_store(path, **asked)
        with raises_naming(path, message):
            store.read_rows(path, [0], **asked)
    unnamed = tmp_path / "u.zarr"
    store.write_store(unnamed, features(), attrs())
    with raises_naming(unnamed, "attribute 'variant' is not recorded, 'blur' asked for"):
        store.read_stores({"blur": unnamed}, check_variant=True)
    store.read_stores({"blur": unnamed})  # CNN stores record no variant yet: opt-in check


def test_missing_foreign_and_old_stores(tmp_path):
    with raises_naming(tmp_path / "none.zarr", "no such descriptor store"):
        store.read_store(tmp_path / "none.zarr")
    (tmp_path / "dir.zarr").mkdir()
    with raises_naming(tmp_path / "dir.zarr", "not a readable zarr array"):
        store.read_attrs(tmp_path / "dir.zarr")
    foreign = tmp_path / "foreign.zarr"
    zarr.create_array(store=str(foreign), shape=(2, 2), dtype="f4", zarr_format=3)[:] = 1
    with raises_naming(foreign, "not a risbench descriptor store"):
        store.read_store(foreign)
    # a store as risbench wrote it before integrity records: data and attributes only
    old = tmp_path / "old.zarr"
    array = zarr.create_array(store=str(old), shape=(2, 6), dtype="f4", zarr_format=3)
    array[:] = 1
    array.attrs.update(attrs())
    assert store.read_attrs(old)["descriptor"] == "vec"
    with raises_naming(old, "store predates integrity records.*rebuilds it"):
        store.read_store(old)


def test_an_integrity_record_that_does_not_fit_the_array(written):
    path, _ = written
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["integrity"]["rows"] = 12
    (path / "zarr.json").write_text(json.dumps(meta))
    with raises_naming(path, "does not match its integrity record"):
        store.read_store(path)
    meta["attributes"]["integrity"] = {"format": 1, "rows": 10}
    (path / "zarr.json").write_text(json.dumps(meta))
    with raises_naming(path, "damaged integrity record"):
        store.read_store(path)


# --------------------------------------------------------------------------------------
# writing


def test_writer_refuses_bad_attributes_and_blocks(tmp_path):
    path = tmp_path / "w.zarr"
    bad = [
        (attrs(kind="text"), "attribute 'kind' must be one of"),
        (attrs(descriptor=""), "attribute 'descriptor' must be a name"),
        (attrs(dim=None), "attribute 'dim' must be a positive integer"),
        (attrs(dim=7), "rows of 6 values, but dim 7"),
        ({**attrs(), "integrity": {}}, "attribute 'integrity' is reserved"),
    ]
    for given, message in bad:
        with raises_naming(path, message):
            store.write_store(path, features(), given)
    with raises_naming(path, "rows of 2 bytes, but dim 64 .binary. makes 8"):
        store.write_store(path, codes()[:, :2], attrs("dct", "binary", 64))
    writer = store.StoreWriter(path, 3, WIDTH, np.float32, attrs())
    with raises_naming(path, r"block of shape \(2, 5\)"):
        writer.write(np.zeros((2, 5)))
    with raises_naming(path, "4 rows written, 3 declared"):
        writer.write(np.zeros((4, WIDTH)))
    writer.write(np.zeros((2, WIDTH)))
    with raises_naming(path, "2 of 3 rows written"):
        writer.close()
    assert not path.exists()


def test_multi_store_writer_streams_several_stores(tmp_path):
    a, b = features(0, 11, 6), features(1, 11, 3)
    paths = {"a": str(tmp_path / "a.zarr"), "b": str(tmp_path / "b.zarr")}
    sink = store.MultiStoreWriter(paths, 11, {"a": attrs("a"), "b": attrs("b", dim=None)})
    for start, stop in ((0, 3), (3, 4), (4, 9), (9, 11)):
        sink.write({"a": a[start:stop], "b": b[start:stop]})
    sink.close()
    for name, matrix in (("a", a), ("b", b)):
        got, got_attrs = store.read_store(paths[name], descriptor=name, dim=matrix.shape[1])
        np.testing.assert_array_equal(got, matrix)
    sink = store.MultiStoreWriter({"c": str(tmp_path / "c.zarr")}, 11, {"c": attrs("c")})
    sink.write({"c": a[:5]})
    sink.abort()
    assert not list(tmp_path.glob("c.zarr*"))
