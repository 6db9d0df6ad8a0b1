"""Shared fixtures: copies of the workflow, and one finished tiny run."""

import pytest
from workflow_copy import TINY, copy_workflow, snakemake


@pytest.fixture
def workflow_dir(tmp_path):
    """A factory: `workflow_dir(config, **options)` copies the workflow with that
    config into a fresh folder (see workflow_copy.copy_workflow)."""
    count = 0

    def make(config=TINY, **options):
        nonlocal count
        count += 1
        return copy_workflow(tmp_path / f"workflow{count}", config, **options)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished run of `.test/config/config.yaml` in a copy of the workflow."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny"), TINY)
    snakemake(workdir)
    return workdir
