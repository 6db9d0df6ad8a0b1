"""The compute inside a job, logged in one format for benchmarks/bench_workflow.py.

A job's CPU time is interpreter start-up, imports and its real work (reading
its inputs, computing, writing its outputs); this records the last one: the CPU
seconds (this process's threads, plus its child processes such as DataLoader
workers once they have ended) spent inside a ``with compute(what):`` block that
a job opens once its modules are imported, as the log line
``compute: <seconds> s CPU (<what>)``.
"""

from __future__ import annotations

import logging
import resource
import time
from contextlib import contextmanager

log = logging.getLogger("risbench")
LINE = "compute: {seconds:.3f} s CPU ({what})"


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextmanager
def compute(what: str):
    started = cpu_seconds()
    try:
        yield
    finally:
        log.info(LINE.format(seconds=cpu_seconds() - started, what=what))
