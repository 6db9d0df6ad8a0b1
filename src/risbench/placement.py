"""Where jobs run: GPU or not, and resource requests a node can grant.

The workflow asks this module, while it parses, which jobs hold a GPU and how
many threads and megabytes each may ask for. The config's ``cluster`` section
describes the nodes (``gpus``, ``cpus_per_node``, ``mem_mb_per_node``); when
it is absent the run is local and this machine is looked at. A request no node
can grant would wait in a cluster queue forever, and a GPU request on a cluster
without GPUs is rejected by the scheduler: both are settled here, before any
job is submitted. Imports nothing heavy (no torch, no CuPy).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from risbench.config import ConfigError


def gpu_visible() -> bool:
    """An NVIDIA GPU on this machine, found without importing a GPU library."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def gpus_available(config: dict) -> bool:
    """Whether the nodes jobs run on have GPUs: ``cluster.gpus`` when set, else this machine."""
    declared = (config.get("cluster") or {}).get("gpus")
    return gpu_visible() if declared is None else bool(declared)


def uses_gpu(config: dict, section: str) -> bool:
    """Whether the jobs of ``section`` (``extract`` or ``benchmark``) hold a GPU."""
    device = config[section]["device"]
    if section == "extract" and not config.get("models"):
        return False
    return device == "cuda" or (device == "auto" and gpus_available(config))


def check_devices(config: dict) -> None:
    """A ``cuda`` device where there is no GPU (or no CuPy) fails here, naming the key."""
    cluster = (config.get("cluster") or {}).get("gpus")
    for section in ("extract", "benchmark"):
        if config[section]["device"] != "cuda" or not uses_gpu(config, section):
            continue
        if cluster is False:
            raise ConfigError(f"{section}.device: cuda, but cluster.gpus is false")
        if cluster is None and not gpu_visible():
            raise ConfigError(
                f"{section}.device: cuda, but this machine has no visible NVIDIA GPU "
                "(on a cluster whose nodes have GPUs, set cluster.gpus: true)"
            )
    local = cluster is None  # on a cluster the nodes' environment is not this one
    if (
        local
        and config["benchmark"]["device"] == "cuda"
        and importlib.util.find_spec("cupy") is None
    ):
        raise ConfigError(
            "benchmark.device: cuda needs CuPy (pip install 'risbench[gpu]'); or use auto/cpu"
        )


def threads(config: dict, wanted: int) -> int:
    """``wanted`` threads, at most a node's CPUs."""
    cpus = (config.get("cluster") or {}).get("cpus_per_node")
    return min(wanted, cpus) if cpus else wanted


def mem_mb(config: dict, base: int, attempt: int) -> int:
    """``base`` MB times the attempt (a retry after running out of memory asks for
    more), at most a node's memory."""
    node = (config.get("cluster") or {}).get("mem_mb_per_node")
    wanted = base * attempt
    return min(wanted, node) if node else wanted
