"""Staged screening (paper §6.4): stage subsets, the keep rule, the tables, and the
workflow mode (dry runs, and a tiny end-to-end run with two stages)."""

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_copy import TINY, copy_workflow, load_test_config, snakemake

from risbench import catalog, cli, results, screening, store

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "data" / "golden" / "images").glob("*.png"))[:5]


# --------------------------------------------------------------------------------------
# stage subsets


def lists(distractors=1, bases=4, variants=("blur", "rotate")):
    ids = [f"d{i}" for i in range(distractors)] + [f"b{i}" for i in range(bases)]
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "role": ["distractor"] * distractors + ["base"] * bases,
            "path": [f"{i}.png" for i in ids],
        }
    )
    original = catalog.original_list(manifest)
    out = [original]
    for v in variants:
        out.append(catalog.modified_list(original, v, [f"{v}/{i}.png" for i in ids[distractors:]]))
    return out


def test_first_bases_keeps_groups_and_distractors_with_store_rows():
    table = catalog.assemble(lists())
    subset, rows = screening.first_bases(table, 2)
    assert subset["row"].tolist() == list(range(len(subset)))
    assert set(subset["group"]) == {"d0", "b0", "b1"}
    assert Counter(subset["role"]) == {"distractor": 1, "base": 2, "modified": 4}
    # original: distractor then bases in list order; modified variants: bases only
    assert rows["original"].tolist() == [0, 1, 2]
    assert rows["blur"].tolist() == [0, 1] and rows["rotate"].tolist() == [0, 1]
    # more bases asked for than there are: all of them
    subset, rows = screening.first_bases(table, 10)
    assert len(subset) == len(table) and rows["blur"].tolist() == [0, 1, 2, 3]


def test_load_first_bases_reads_the_rows_of_the_full_stores(tmp_path):
    table = catalog.assemble(lists())
    stores, full = {}, {}
    for variant, count in (("original", 5), ("blur", 4), ("rotate", 4)):
        full[variant] = np.arange(count * 3, dtype=np.float32).reshape(count, 3) + (
            100 if variant != "original" else 0
        )
        stores[variant] = tmp_path / f"{variant}.zarr"
        store.write_store(
            stores[variant], full[variant], {"descriptor": "x", "kind": "float", "dim": 3}
        )
    subset, matrices, attrs = screening.load_first_bases(table, stores, 3)
    assert attrs["descriptor"] == "x"
    np.testing.assert_array_equal(matrices["original"], full["original"][:4])
    np.testing.assert_array_equal(matrices["blur"], full["blur"][:3])
    # scattered rows are read too
    matrix, _ = screening.read_rows(stores["blur"], np.array([0, 2, 3]))
    np.testing.assert_array_equal(matrix, full["blur"][[0, 2, 3]])


def test_load_first_bases_checks_every_store(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "ROW_CHUNK", 2)  # blur: chunks c/0/0 (rows 0-1), c/1/0 (2-3)
    table = catalog.assemble(lists())
    stores = {v: tmp_path / f"{v}.zarr" for v in ("original", "blur", "rotate")}

    def write(variant, rows=None, descriptor="h"):
        count = rows or (5 if variant == "original" else 4)
        codes = np.arange(count * 2, dtype=np.uint8).reshape(count, 2)
        shutil.rmtree(stores[variant], ignore_errors=True)
        attrs = {"descriptor": descriptor, "kind": "binary", "dim": 16, "variant": variant}
        store.write_store(stores[variant], codes, attrs)

    for variant in stores:
        write(variant)
    screening.load_first_bases(table, stores, 2, check_variant=True)
    # the blur rows of 2 bases live in chunk 0: a lost chunk 1 is not read ...
    (stores["blur"] / "c" / "1" / "0").unlink()
    screening.load_first_bases(table, stores, 2)
    # ... but 3 bases need it
    with pytest.raises(store.StoreError, match=r"blur\.zarr: chunk c/1/0 is missing"):
        screening.load_first_bases(table, stores, 3)
    write("blur", descriptor="dct")  # another descriptor's store in blur's place
    with pytest.raises(store.StoreError, match=r"blur\.zarr: attribute 'descriptor' is 'dct'"):
        screening.load_first_bases(table, stores, 2)
    write("blur", rows=5)  # a store of another image list
    with pytest.raises(store.StoreError, match=r"blur\.zarr: holds 5 rows, 4 expected"):
        screening.load_first_bases(table, stores, 2)
    write("blur")
    with pytest.raises(store.StoreError, match=r"original\.zarr: attribute 'kind' is 'binary'"):
        screening.load_first_bases(table, stores, 2, kind="float")
    shutil.copytree(stores["blur"], stores["rotate"], dirs_exist_ok=True)
    with pytest.raises(store.StoreError, match=r"rotate\.zarr: attribute 'variant' is 'blur'"):
        screening.load_first_bases(table, stores, 2, check_variant=True)


def test_stage_benchmark_equals_a_benchmark_of_the_smaller_dataset(tmp_path):
    """`risbench benchmark --bases 2` on the full stores scores exactly what the
    same benchmark scores on a dataset of those 2 bases."""
    rng = np.random.default_rng(0)
    full_lists = lists(distractors=1, bases=4)
    small_lists = lists(distractors=1, bases=2)
    codes = {v.iloc[0]["variant"]: rng.integers(0, 256, (len(v), 8), np.uint8) for v in full_lists}
    args = {"full": [], "small": []}
    for name, variant_lists in (("full", full_lists), ("small", small_lists)):
        for frame in variant_lists:
            variant = frame.iloc[0]["variant"]
            path = tmp_path / name / f"{variant}.parquet"
            path.parent.mkdir(exist_ok=True)
            frame.to_parquet(path)
            # the small dataset's rows are the first rows of the full one (distractor
            # first in original, then the bases in order)
            matrix = codes[variant][: len(frame)]
            zarr_path = tmp_path / name / f"{variant}.zarr"
            attrs = {"descriptor": "h", "kind": "binary", "dim": 64, "variant": variant}
            store.write_store(zarr_path, matrix, attrs)
            args[name] += ["--list", f"{variant}={path}", "--store", f"{variant}={zarr_path}"]
    spec = json.dumps(
        {"exclude_self": False, "tile_mb": 16, "device": "cpu", "beta": 1.0, "top_k": 3}
    )
    for name, extra in (("full", ["--bases", "2"]), ("small", [])):
        cli.main(
            ["benchmark", "--descriptor", "h", "--distance", "hamming", "--spec", spec]
            + args[name]
            + extra
            + ["--table", f"all={tmp_path / f'{name}.parquet'}"]
            + ["--stats", f"all={tmp_path / f'{name}.json'}"]
        )
    full = pd.read_parquet(tmp_path / "full.parquet")
    small = pd.read_parquet(tmp_path / "small.parquet")
    pd.testing.assert_frame_equal(full, small)
    assert json.loads((tmp_path / "full.json").read_text())["queries"] == 6


# --------------------------------------------------------------------------------------
# the keep rule and the tables


def stats_file(folder: Path, descriptor, distance, f1, queries=6) -> Path:
    path = folder / f"{descriptor}__{distance}.json"
    kind = "float" if distance in ("cosine", "euclidean") else "binary"
    results.BenchmarkStats(
        protocol="all",
        descriptor=descriptor,
        distance=distance,
        kind=kind,
        dim=64,
        bytes_per_image=results.bytes_per_image(64 if kind == "float" else 8, kind),
        queries=queries,
        seconds=0.5,
        best={"f1": f1, "radius": 0.25, "precision": f1, "recall": 1.0},
        distances={},
        ranked={},
        histogram={},
    ).write(path)
    return path


def candidates():
    return pd.DataFrame(
        {
            "descriptor": ["a", "b", "c", "d", "e"],
            "distance": ["hamming", "cosine", "hamming", "hamming", "euclidean"],
            "f1": [0.95, 0.97, 0.95, 0.5, 0.91],
        }
    )


def test_select_threshold_then_top_k_with_name_ties():
    kept = screening.select(candidates(), min_f1=0.9)
    assert kept[kept.kept]["descriptor"].tolist() == ["b", "a", "c", "e"]
    assert kept["descriptor"].tolist() == ["b", "a", "c", "e", "d"]  # best first
    kept = screening.select(candidates(), min_f1=0.9, top_k=2)
    assert kept[kept.kept]["descriptor"].tolist() == ["b", "a"]  # a beats c on the tie by name
    kept = screening.select(candidates(), top_k=3)
    assert kept[kept.kept]["descriptor"].tolist() == ["b", "a", "c"]
    kept = screening.select(candidates(), min_f1=0.96, top_k=8)
    assert kept[kept.kept]["descriptor"].tolist() == ["b"]
    # F1 exactly at the threshold is kept
    assert screening.select(candidates(), min_f1=0.91)["kept"].sum() == 4


def test_screen_stage_and_table_commands(tmp_path):
    stage1 = [
        stats_file(tmp_path, d, dist, f1)
        for d, dist, f1 in [("dct", "hamming", 0.99), ("ahash", "hamming", 0.7)]
    ]
    cli.main(
        ["screen", "stage", "--stage", "1", "--bases", "2", "--min-f1", "0.9"]
        + ["--out", str(tmp_path / "stage1.csv"), *map(str, stage1)]
    )
    assert screening.kept_pairs(tmp_path / "stage1.csv") == [("dct", "hamming")]
    final = tmp_path / "final"
    final.mkdir()
    final_stats = stats_file(final, "dct", "hamming", 0.93, queries=12)
    cli.main(
        ["screen", "table", "--stages", str(tmp_path / "stage1.csv")]
        + ["--final", str(final_stats), "--csv", str(tmp_path / "s.csv")]
        + ["--markdown", str(tmp_path / "s.md")]
    )
    table = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert list(table.columns) == screening.STAGE_COLUMNS
    assert table[["stage", "descriptor", "kept"]].values.tolist() == [
        ["1", "dct", "yes"],
        ["1", "ahash", "no"],
        ["full", "dct", ""],
    ]
    assert "| stage" in (tmp_path / "s.md").read_text()


def test_a_stage_that_keeps_nothing_fails_and_says_why(tmp_path):
    stats = stats_file(tmp_path, "ahash", "hamming", 0.7)
    with pytest.raises(SystemExit, match="kept no descriptor.*ahash hamming at F1 0.7000"):
        cli.main(
            ["screen", "stage", "--stage", "1", "--bases", "2", "--min-f1", "0.9"]
            + ["--out", str(tmp_path / "stage1.csv"), str(stats)]
        )
    assert not (tmp_path / "stage1.csv").exists()


def stage_csv(tmp_path) -> Path:
    """A stage table as screen_stage writes it: b, a kept; c, d, e not."""
    table = screening.select(candidates(), top_k=2)
    for column, value in (("stage", 1), ("bases", 2), ("radius", 0.25), ("queries", 6)):
        table[column] = value
    table["precision"], table["recall"], table["seconds"] = table["f1"], 1.0, None
    path = tmp_path / "stage1.csv"
    screening.write_stage_table(table[screening.STAGE_COLUMNS], path)
    return path


def test_kept_pairs_reads_what_screen_stage_writes(tmp_path):
    path = stage_csv(tmp_path)
    text = path.read_text()
    assert text.splitlines()[1] == "1,2,b,cosine,0.97,0.25,0.97,1.0,6,,True"
    assert screening.kept_pairs(path) == [("b", "cosine"), ("a", "hamming")]
    assert not list(tmp_path.glob("*.partial"))
    table = screening.read_stage_table(path)
    assert table["kept"].dtype == bool and table["kept"].tolist() == [1, 1, 0, 0, 0]
    assert table["seconds"].isna().all() and table["queries"].tolist() == [6] * 5


@pytest.mark.parametrize(
    "edit, message",
    [
        # the issue's case: pandas' astype(bool) read "no" as True
        (lambda t: t.replace(",True\n", ",no\n", 1), r"line 2: kept is 'no', not True or False"),
        (lambda t: t.replace(",False\n", ",\n", 1), r"line 4: kept is '', not True or False"),
        (lambda t: t.replace(",False\n", ",false\n"), r"line 4: kept is 'false'"),
        # a file cut inside its last row, and a row cut short inside the file
        (lambda t: t[: t.rindex(",")], r"line 6: truncated \(no end of line\)"),
        (lambda t: t[: t.rindex("\n", 0, -1) + 8] + "\n", r"line 6: 4 fields, 11 expected"),
        (lambda t: t.replace(",6,,True", ",6,True", 1), r"line 2: 10 fields, 11 expected"),
        (lambda t: t.replace(",0.25,", ",x,", 1), r"line 2: radius is 'x', not a valid radius"),
        (lambda t: t.replace("1,2,a", "1,2.5,a", 1), r"line 3: bases is '2.5'"),
        (lambda t: t.replace("1,2,a,hamming", "1,2,,hamming", 1), r"line 3: descriptor is ''"),
        (lambda t: t.replace("b,cosine", "a,hamming", 1), r"line 3: .* repeats line 2"),
        (lambda t: t.replace("kept", "keep", 1), r"line 1: header"),
        (lambda t: "", r"line 1: header None"),
    ],
)
def test_kept_pairs_fails_on_damage_with_the_line_number(tmp_path, edit, message):
    path = stage_csv(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(screening.ScreeningError, match=rf"stage1\.csv, {message}"):
        screening.kept_pairs(path)


def test_the_screening_table_reads_stage_tables_strictly(tmp_path):
    path = stage_csv(tmp_path)
    table = screening.summary_table([path])
    assert sorted(table.loc[table["kept"] == "yes", "descriptor"]) == ["a", "b"]
    path.write_text(path.read_text().replace(",True\n", ",no\n", 1))
    with pytest.raises(screening.ScreeningError, match=r"stage1\.csv, line \d+: .*kept"):
        screening.summary_table([path])


def test_a_stage_table_that_keeps_nothing_is_damaged(tmp_path):
    path = stage_csv(tmp_path)
    path.write_text(path.read_text().replace(",True\n", ",False\n"))
    with pytest.raises(screening.ScreeningError, match=r"stage1\.csv: .*keeps no pair"):
        screening.kept_pairs(path)


# --------------------------------------------------------------------------------------
# the workflow mode

# `.test/config/hashes-only.yaml`: two weak (ahash, colorhash) and two strong (dct,
# dhash) hashes; its stages: on 2 bases ahash reaches F1 0.87 and the others 1.0;
# on 3 bases top_k 2 keeps two of the three left.
HASHES_ONLY = load_test_config("hashes-only")
STAGES = HASHES_ONLY.pop("screening")
PROTOCOL_DIRS = ["all", "distractors", "single-original", "single-blur", "single-rotate"]


def dry_run(workdir: Path, *args: str) -> tuple[Counter, set[str]]:
    """Jobs per rule, and the benchmark outputs (`protocol/pair`) a dry run schedules."""
    out = snakemake(workdir, "--dry-run", *args).stdout
    if "Nothing to be done" in out:
        return Counter(), set()
    counts = Counter()
    for line in out.split("Job stats:")[1].split("\n\n")[0].splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] != "total":
            counts[match[1]] = int(match[2])
    found = re.findall(r"results/benchmark/([\w-]+/\w+)\.json", out)
    benchmarks = {b for b in found if not b.startswith("runs/")}  # run indexes
    return counts, benchmarks


def test_screening_off_leaves_the_dag_unchanged(tmp_path):
    plain, _ = dry_run(copy_workflow(tmp_path / "plain", TINY))
    empty = {**TINY, "screening": {"stages": []}}
    assert plain == dry_run(copy_workflow(tmp_path / "empty", empty))[0]
    assert not {"screen", "screen_benchmark", "screening_table"} & set(plain)
    # 4 descriptors x 1 distance, each job writing every protocol's tables
    assert plain["benchmark"] == 4 and plain["summarize"] == 1


def test_stages_must_grow(tmp_path):
    stages = {"stages": [{"bases": 3, "top_k": 2}, {"bases": 3, "top_k": 1}]}
    workdir = copy_workflow(tmp_path, {**HASHES_ONLY, "screening": stages})
    done = snakemake(workdir, "--dry-run", check=False)
    assert done.returncode != 0
    assert "screening.stages[1].bases = 3: stages must grow" in done.stdout + done.stderr


@pytest.mark.slow
def test_screening_runs_survivors_only(tmp_path):
    workdir = copy_workflow(tmp_path, {**HASHES_ONLY, "screening": STAGES})
    results = workdir / "results"
    # before any checkpoint ran: stage 1 for every pair, no full-size benchmark yet
    jobs, benchmarks = dry_run(workdir)
    assert jobs["screen_benchmark"] == 4 and jobs["screen"] == 2
    assert "benchmark" not in jobs and not benchmarks
    # stage 1's checkpoint: ahash (F1 0.87 on 2 bases) is out
    snakemake(workdir, "results/screening/stage1.csv")
    stage1 = pd.read_csv(results / "screening" / "stage1.csv")
    dropped1 = set(stage1.loc[~stage1["kept"], "descriptor"])
    assert dropped1 == {"ahash"}
    jobs, benchmarks = dry_run(workdir)
    assert jobs["screen_benchmark"] == 3  # stage 2 for the survivors only
    # stage 2's checkpoint: the full-size benchmarks are those of its 2 survivors only
    snakemake(workdir, "results/screening/stage2.csv")
    survivors = screening.kept_pairs(results / "screening" / "stage2.csv")
    assert len(survivors) == 2 and not {d for d, _ in survivors} & dropped1
    jobs, benchmarks = dry_run(workdir)
    assert benchmarks == {f"{p}/{d}__{dist}" for p in PROTOCOL_DIRS for d, dist in survivors}
    assert jobs["benchmark"] == 2
    # the whole run: survivors in the summary, every stage in the screening table
    snakemake(workdir)
    for descriptor in dropped1:
        assert not list((results / "benchmark").glob(f"*/{descriptor}__*"))
    table3 = pd.read_csv(results / "tables" / "table3_all.csv")
    assert set(zip(table3["descriptor"], table3["distance"], strict=True)) == set(survivors)
    table = pd.read_csv(results / "tables" / "screening.csv", keep_default_na=False)
    assert list(table.columns) == screening.STAGE_COLUMNS
    assert Counter(table["stage"]) == {"1": 4, "2": 3, "full": 2}
    assert table.loc[table.stage == "1", "bases"].eq(2).all()
    assert table.loc[table.stage == "full", "bases"].eq(4).all()
    assert Counter(table["kept"]) == {"yes": 5, "no": 2, "": 2}
    assert (results / "tables" / "screening.md").exists()
    assert dry_run(workdir) == (Counter(), set())
    # a stricter last stage reruns its checkpoint only, then the summary
    stricter = {"stages": [STAGES["stages"][0], {"bases": 3, "top_k": 1}]}
    (workdir / "config" / "config.yaml").write_text(
        yaml.safe_dump({**HASHES_ONLY, "screening": stricter})
    )
    jobs, _ = dry_run(workdir)
    assert jobs["screen"] == 1
    assert not {"screen_benchmark", "benchmark", "hash"} & set(jobs)
