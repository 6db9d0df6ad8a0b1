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
    config = copy.deepcopy(default)
    edit(config)
    with pytest.raises(risbench_config.ConfigError, match=message):
        risbench_config.check(config)
