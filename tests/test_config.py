"""The schema and the name checks reject bad configs with a message naming the key."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from risbench import config as risbench_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture
def default():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, SCHEMA, set_default=True)
    return config


def test_default_config_is_valid_and_filled(default):
    risbench_config.check(default)
    assert default["benchmark"]["tile_mb"] == 256
    assert default["dataset"]["max_pixels"] == 89478485
    assert risbench_config.variants(default) == [
        "original",
        "blur",
        "gray",
        "resize",
        "jpeg",
        "rotate",
        "rotate-1",
        "rotate-2",
        "rotate-3",
        "rotate-4",
        "crop",
    ]
    assert "single-original" in risbench_config.protocols(default)
    assert "distractors" in risbench_config.protocols(default)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c["dataset"].update(distractors="three"), "three"),
        (lambda c: c["benchmark"].update(tile_mb=-1), "-1"),
        (lambda c: c["models"]["mobilenet_v2"].update(pooling=["median"]), "median"),
        (lambda c: c["benchmark"].update(radius={"cosine": {"stepp": 0.1}}), "stepp"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(default, edit, message):
    config = copy.deepcopy(default)
    edit(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config, SCHEMA, set_default=True)


def assert_check_fails(default, edit, message):
    """The default config with ``edit`` fails risbench's checks with ``message``."""
    config = copy.deepcopy(default)
    edit(config)
    with pytest.raises(risbench_config.ConfigError, match=message):
        risbench_config.check(config)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c.update(modifications=["blur", "sepia"]),
            r"modifications\[1\] = 'sepia'.*blur",
        ),
        (lambda c: c.update(hashes=["dct", "md5"]), r"hashes\[1\] = 'md5'.*valid hashes: dct"),
        (
            lambda c: c["distances"].update(binary=["cosine"]),
            r"distances.binary: 'cosine'.*valid: hamming",
        ),
        (lambda c: c["dataset"].update(source="folder"), r"dataset.folder"),
        (
            lambda c: c["models"]["mobilenet_v2"].update(layers=["no_such_layer"]),
            r"models.mobilenet_v2.*no_such_layer",
        ),
    ],
)
def test_name_check_lists_valid_names(default, edit, message):
    assert_check_fails(default, edit, message)


# ---------------------------------------------------------------- hardening (issue 14)


@pytest.mark.parametrize(
    "edit, message",
    [
        # a model key reaches a rule name, a log path and a command line
        (lambda c: c["models"].update({"m$(touch PWNED)": {}}), r"m\$\(touch PWNED\)"),
        (lambda c: c["models"].update({"my net": {}}), "my net"),
        (lambda c: c.update(modifications=["blur", "rotate;ls"]), "rotate;ls"),
        (lambda c: c.update(modifications=["blur x"]), "blur x"),
        (lambda c: c.update(hashes=["dct", "$(id)"]), r"\$\(id\)"),
        (lambda c: c.update(sweeps={"rot ate": [1]}), "rot ate"),
        (lambda c: c["benchmark"].update(tile_mb=float("inf")), "inf"),
        (lambda c: c["benchmark"].update(beta=1e9), "1000000000"),
        (lambda c: c.update(cluster={"gpus": "yes"}), "yes"),
    ],
)
def test_schema_rejects_unsafe_names_and_unbounded_numbers(default, edit, message):
    config = copy.deepcopy(default)
    edit(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config, SCHEMA, set_default=True)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["benchmark"].update(beta=float("nan")), r"benchmark.beta: nan"),
        (lambda c: c["benchmark"].update(tile_mb=float("inf")), r"benchmark.tile_mb: inf"),
        (
            lambda c: c["benchmark"]["radius"].update(hamming={"step": 1e-9, "max": None}),
            r"benchmark.radius.hamming.step = 1e-09: 50000000[01] radii",
        ),
        (
            lambda c: c["dataset"].update(source="folder", folder="/no/such/folder"),
            r"dataset.folder: /no/such/folder is not a folder",
        ),
        # a layer name is slugged into the descriptor name: nothing unsafe gets through
        (
            lambda c: c["models"]["mobilenet_v2"].update(layers=["features;ls"]),
            r"models.mobilenet_v2",
        ),
    ],
)
def test_check_refuses_what_the_schema_lets_through(default, edit, message):
    assert_check_fails(default, edit, message)


def test_more_distractors_than_images_fails_naming_the_keys(default, tmp_path):
    for name in ("a.jpg", "b.png", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    config = copy.deepcopy(default)
    config["dataset"].update(source="folder", folder=str(tmp_path), distractors=1)
    with pytest.raises(risbench_config.ConfigError, match=r"dataset.distractors = 1.* 2 image"):
        risbench_config.check(config)
    config["dataset"]["distractors"] = 0
    risbench_config.check(config)  # 2 images: 2 bases, enough


def test_config_files_are_read_strictly(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("hashes: [dct]\nmodels: {}\nhashes: [mh]\n")
    with pytest.raises(
        risbench_config.ConfigError, match=r"dup.yaml, line 3: duplicate key 'hashes'"
    ):
        risbench_config.load_file(dup)
    nested = tmp_path / "nested.yaml"
    nested.write_text("dataset:\n  source: demo\n  source: folder\n")
    with pytest.raises(risbench_config.ConfigError, match="line 3: duplicate key 'source'"):
        risbench_config.load_file(nested)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("hashes: !!python/object/apply:os.system ['touch PWNED']\n")
    with pytest.raises(risbench_config.ConfigError, match="YAML tags .* are not allowed"):
        risbench_config.load_file(tagged)
    assert not (tmp_path / "PWNED").exists()
    good = tmp_path / "good.yaml"
    good.write_text("hashes: [dct, mh]\ndataset: {source: demo}\n")
    assert risbench_config.load_file(good) == {
        "hashes": ["dct", "mh"],
        "dataset": {"source": "demo"},
    }


def test_parse_time_checks_import_no_torch():
    """The workflow's checks on the default config run in a fresh interpreter
    without importing torch (every cluster job parses the workflow again)."""
    import subprocess
    import sys

    code = (
        "import sys, yaml\n"
        "from snakemake.utils import validate\n"
        "from risbench import config, placement\n"
        f"c = yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r}))\n"
        f"validate(c, {SCHEMA!r}, set_default=True)\n"
        "config.check(c); placement.check_devices(c); config.descriptors(c)\n"
        "print(sorted(m for m in ('torch', 'timm', 'zarr', 'torchvision') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
