"""Source discovery: ids that are safe file names and unique ignoring case, and files told
apart without opening them."""

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest

from risbench import dataset
from risbench.sources import display_path, find_folder, make_id, not_a_file, unique_ids


@pytest.mark.parametrize(
    "relative, expected",
    [
        ("a b/c.jpg", "a_b__c"),  # folders joined by __, runs of other characters -> _
        ("sub dir/été 1.jpg", "sub_dir__été_1"),  # letters of any script kept
        ("..jpg", "_"),  # was ".": results/images/blur/..png, or blur.png beside the folder
        (".jpg", "_"),  # empty stem
        ("-rf.png", "_rf"),  # never an option on a command line
        ("...x.png", "___x"),
        ("sub/.hidden.png", "sub__.hidden"),  # a dot inside the id is harmless
        ("a.tar.gz", "a.tar"),
        ("README", "README"),
    ],
)
def test_make_id(relative, expected):
    assert make_id(Path(relative).parts) == expected


def test_make_id_escapes_bytes_that_are_not_utf8_and_normalises_to_nfc():
    assert make_id((os.fsdecode(b"caf\xe9.png"),)) == "caf_xe9"
    assert display_path(os.fsdecode(b"/d/caf\xe9.png")) == "/d/caf\\xe9.png"
    assert make_id((unicodedata.normalize("NFD", "été.jpg"),)) == "été"  # as macOS writes it


def test_make_id_cuts_long_names_with_a_digest():
    long = "x" * 300
    assert (
        make_id((long + ".jpg",))
        == "x" * 187 + "_" + hashlib.sha256(long.encode()).hexdigest()[:12]
    )
    accented = make_id(("é" * 150 + ".jpg",))  # 300 bytes; the cut falls inside an "é"
    assert accented.startswith("é" * 93 + "_") and len(accented.encode()) == 186 + 13
    # with the longest disambiguating suffix a test uses and ".png", under 255 bytes
    assert len((make_id(("y" * 400 + ".jpeg",)) + "_jpeg.png").encode()) <= 255


def test_unique_ids_ignore_case_and_go_by_name_order():
    names = ["A.jpg", "a.jpg", "a.png", "a_png.jpg", "B.jpg", "b.JPG"]
    # name order: A.jpg, B.jpg, a.jpg, a.png, a_png.jpg, b.JPG; the first of equal ids
    # keeps it, the next gets its suffix, then _2, _3, ...
    assert unique_ids([(n,) for n in names]) == [
        "A",
        "a_jpg",
        "a_png",
        "a_png_jpg",
        "B",
        "b_jpg",
    ]
    assert unique_ids([(n,) for n in ["x.jpg", "X.JPG", "x.JPG"]]) == ["x_2", "X", "x_jpg"]
    nfc, nfd = "\u00e9.jpg", "e\u0301.jpg"  # one name on macOS, two on Linux
    assert unique_ids([(nfc,), (nfd,)]) == ["é_jpg", "é"]


def test_not_a_file_opens_nothing(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    (tmp_path / "good_link.jpg").symlink_to(tmp_path / "photo.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "folder_link.jpg").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "fifo.jpg")
    assert not_a_file(tmp_path / "photo.jpg") is None
    assert not_a_file(tmp_path / "good_link.jpg") is None
    assert not_a_file(tmp_path / "broken.jpg").startswith("broken symbolic link")
    assert not_a_file(tmp_path / "loop.jpg") == "symbolic link loop"
    assert not_a_file(tmp_path / "folder_link.jpg") == "symbolic link to a folder, not followed"
    assert not_a_file(tmp_path / "fifo.jpg") == "not a regular file (FIFO)"
    assert not_a_file(tmp_path / "gone.jpg").startswith("cannot read")
    # decode checks again (the file may have changed since): a FIFO is refused, not read
    with pytest.raises(dataset.BadImage, match=r"not a regular file \(FIFO\)"):
        dataset.decode(tmp_path / "fifo.jpg")


def test_find_folder_lists_every_entry_once(tmp_path):
    for name in ("a.jpg", "b.PNG", "sub/c.gif", "sub/deeper/d.webp", "notes.txt", ".DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a folder loop, if it were followed
    found = find_folder(tmp_path, extensions=["jpg", ".png", "GIF", "webp"])
    assert [s.image_id for s in found.sources] == ["a", "b", "sub__c", "sub__deeper__d"]
    assert [Path(u["path"]).relative_to(tmp_path).as_posix() for u in found.unused] == [
        ".DS_Store",
        "notes.txt",
        "sub/up",
    ]
    flat = find_folder(tmp_path, extensions=["jpg", "png"], recursive=False)
    assert [s.image_id for s in flat.sources] == ["a", "b"]
    unused = {Path(u["path"]).name: u["reason"] for u in flat.unused}
    assert set(unused) == {".DS_Store", "notes.txt", "sub"}
    assert unused["sub"].startswith("a folder, not searched")
    assert unused[".DS_Store"] == "suffix '.ds_store' is not in dataset.extensions"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_folder(tmp_path / "missing")
