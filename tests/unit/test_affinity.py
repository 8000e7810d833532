"""The CPU-affinity plan (when to pin) and the per-data-dir CPU claims between workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imageregistry.affinity import claim_cpu, runtime_threads, should_pin


@pytest.mark.parametrize(
    ("mode", "workers", "cpus", "pinned"),
    [
        ("auto", 2, {0, 1}, True),  # one worker per CPU: the registry owns the machine
        ("auto", 4, {0, 1, 2, 3}, True),
        ("auto", 1, {0, 1}, False),  # fewer workers than CPUs: leave the scheduler free
        ("auto", 2, set(range(64)), False),  # a CPU quota on a big host shows every CPU
        ("auto", 3, {0, 1}, False),
        ("auto", 1, {5}, False),  # one CPU: nothing to choose
        ("on", 1, {0, 1}, True),
        ("on", 8, {0, 1}, True),
        ("on", 1, {3}, False),
        ("off", 2, {0, 1}, False),
    ],
)
def test_when_to_pin(mode: str, workers: int, cpus: set[int], pinned: bool) -> None:
    assert should_pin(mode, workers, cpus) is pinned


def test_workers_claim_distinct_cpus_and_a_freed_cpu_is_taken_again(tmp_path: Path) -> None:
    # flock belongs to the open file, so two claims in one process contend like two workers.
    first = claim_cpu(tmp_path / "run", {3, 7})
    second = claim_cpu(tmp_path / "run", {3, 7})
    assert first is not None and second is not None
    assert (first[0], second[0]) == (3, 7)
    assert claim_cpu(tmp_path / "run", {3, 7}) is None  # a third worker stays unpinned
    os.close(first[1])  # the first worker exits: its CPU is free for its replacement
    again = claim_cpu(tmp_path / "run", {3, 7})
    assert again is not None and again[0] == 3
    for fd in (second[1], again[1]):
        os.close(fd)


def test_runtime_threads_are_found_by_name(tmp_path: Path) -> None:
    for tid, name in [(11, "tokio-runtime-w\n"), (12, "python\n"), (13, "tokio-rt-worker\n")]:
        (tmp_path / str(tid)).mkdir()
        (tmp_path / str(tid) / "comm").write_text(name)
    (tmp_path / "14").mkdir()  # a thread that ended between listing and reading
    assert sorted(runtime_threads(tmp_path)) == [11, 13]
