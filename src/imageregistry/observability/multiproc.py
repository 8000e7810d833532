"""The multiprocess directory of `prometheus_client`, prepared by the `serve` supervisor.

Kept apart from `metrics` so the supervisor can set `PROMETHEUS_MULTIPROC_DIR` before
anything imports `prometheus_client`: the library fixes its mode at import, and Granian
may fork its workers from the supervisor, so an early import there would leave every
worker counting in private memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(data_dir: Path) -> Path:
    return data_dir / "run" / "metrics"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Empty (or create) the per-server metrics directory; called by `serve` before the
    workers exist, so values of an earlier run never leak into this one."""
    directory = metrics_dir(data_dir)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def mark_workers_dead(pids: Iterable[int], directory: str | None) -> None:
    """Drop the live gauges of worker processes that have exited (Granian respawn)."""
    if not directory:
        return
    from prometheus_client import multiprocess

    for pid in pids:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
