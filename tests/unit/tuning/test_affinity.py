"""The CPU-affinity plan (when to pin) and the per-data-dir CPU claims between workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imageregistry.tuning.affinity import (
    claim_cpu,
    current_cpu,
    runtime_threads,
    should_pin,
)


@pytest.mark.parametrize(
    ("mode", "workers", "cpus", "pinned"),
    [
        ("auto", 1, {0, 1}, True),  # the default worker on a 2-CPU machine
        ("auto", 2, {0, 1}, True),  # one worker per CPU
        ("auto", 2, {0, 1, 2, 3}, True),  # at most two CPUs per worker: the main tenant
        ("auto", 3, {0, 1}, True),  # more workers than CPUs: the first two get one each
        ("auto", 1, {0, 1, 2}, False),
        ("auto", 2, set(range(64)), False),  # a CPU quota on a big host shows every CPU
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


def test_claims_start_at_the_given_cpu_and_wrap(tmp_path: Path) -> None:
    claims = [claim_cpu(tmp_path, {0, 1, 2}, start=1) for _ in range(3)]
    assert [c[0] for c in claims if c] == [1, 2, 0]
    assert claim_cpu(tmp_path / "other", {0, 1}, start=7) is not None  # unknown start: in order
    assert current_cpu() in os.sched_getaffinity(0)
    for claim in claims:
        assert claim is not None
        os.close(claim[1])


def test_runtime_threads_are_found_by_name(tmp_path: Path) -> None:
    for tid, name in [(11, "tokio-runtime-w\n"), (12, "python\n"), (13, "tokio-rt-worker\n")]:
        (tmp_path / str(tid)).mkdir()
        (tmp_path / str(tid) / "comm").write_text(name)
    (tmp_path / "14").mkdir()  # a thread that ended between listing and reading
    assert sorted(runtime_threads(tmp_path)) == [11, 13]


# The pytest worker may already hold tokio threads of other libraries (obstore, the S3 tests),
# which `pin_runtime` would rightly find; these two run in a fresh interpreter that has none.
_PINS_ONLY_THE_RUNTIME = """
import asyncio, ctypes, os, threading
from imageregistry.tuning.affinity import pin_runtime

libc = ctypes.CDLL(None, use_errno=True)
ready, done = threading.Event(), threading.Event()
tids = []

def runtime_like():
    libc.prctl(15, b"tokio-runtime-w", 0, 0, 0)  # PR_SET_NAME, as tokio names its threads
    tids.append(threading.get_native_id())
    ready.set()
    done.wait(10)

thread = threading.Thread(target=runtime_like)
thread.start()
try:
    assert ready.wait(5)
    cpu = max(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    pinned = asyncio.run(pin_runtime(cpu, timeout=2))
    assert pinned == tids, (pinned, tids)
    assert os.sched_getaffinity(tids[0]) == {cpu}
    assert os.sched_getaffinity(0) == before  # the calling (Python) thread stays free
finally:
    done.set()
    thread.join()
"""


def _run_fresh(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_pin_runtime_pins_threads_named_like_the_runtime_and_nothing_else() -> None:
    _run_fresh(_PINS_ONLY_THE_RUNTIME)


def test_pin_runtime_gives_up_when_no_runtime_appears() -> None:
    _run_fresh(
        "import asyncio\n"
        "from imageregistry.tuning.affinity import pin_runtime\n"
        "assert asyncio.run(pin_runtime(0, timeout=0.05, step=0.01)) == []\n"
    )
