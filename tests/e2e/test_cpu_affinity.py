"""`cpu_affinity` on a real multi-worker server: with `on`, each Granian worker's runtime
threads (and the blocking threads that read blobs for zero-copy sends) sit on a CPU of
their own while its Python threads stay free; `auto` pins a single worker on a machine of
at most two CPUs; with `off` nothing is pinned."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.oci_support import sha
from tests.support.server import RegistryProcess

CPUS = frozenset(os.sched_getaffinity(0))
BLOB = os.urandom(3 << 20)


def _threads(pid: int) -> dict[int, tuple[str, frozenset[int]]]:
    """tid -> (thread name, CPUs it may run on)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[int(task.name)] = (name, frozenset(os.sched_getaffinity(int(task.name))))
        except (OSError, ProcessLookupError):
            continue
    return out


def _runtime_cpus(worker: int) -> set[frozenset[int]]:
    return {cpus for name, cpus in _threads(worker).values() if name.startswith("tokio-")}


def _pull_blob(server: RegistryProcess) -> None:
    with server.client(server.admin_token) as client:
        r = client.post("/v2/team/app/blobs/uploads/", params={"digest": sha(BLOB)}, content=BLOB)
        assert r.status_code == 201
        for _ in range(4):  # reach both workers with zero-copy sends
            with server.client(server.admin_token) as fresh:
                r = fresh.get(f"/v2/team/app/blobs/{sha(BLOB)}")
                assert r.status_code == 200 and r.content == BLOB


def _start(tmp: Path, mode: str, workers: int) -> RegistryProcess:
    return RegistryProcess(
        data_dir=tmp / "data",
        plain_http=True,
        extra_args=["--workers", str(workers)],
        env={"IMAGE_REGISTRY_CPU_AFFINITY": mode},
    ).start()


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with _start(tmp_path_factory.mktemp("pinned"), "on", 2) as process:
        yield process


def test_each_worker_runtime_gets_a_cpu_of_its_own(pinned: RegistryProcess) -> None:
    workers = pinned.worker_pids()
    assert len(workers) == 2
    _pull_blob(pinned)
    expected = 2 if len(CPUS) >= 2 else 0  # one CPU: nothing to pin
    deadline = time.monotonic() + 15
    while True:
        per_worker = [_runtime_cpus(w) for w in workers]
        singles = [cpus for cpus in per_worker if len(cpus) == 1 and len(next(iter(cpus))) == 1]
        if len(singles) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(singles) == expected, per_worker
    if expected:
        assert singles[0] != singles[1]  # two workers, two different CPUs
        log = pinned.log_text()
        assert log.count("[INFO] cpu_affinity: worker ") == 2, log
    for worker in workers:  # the Python side (event loop, thread pool) is not confined
        python = [cpus for name, cpus in _threads(worker).values() if not name.startswith("tokio-")]
        assert python and all(cpus == CPUS for cpus in python)


def test_off_leaves_runtime_threads_free(tmp_path: Path) -> None:
    with _start(tmp_path, "off", 2) as server:
        _pull_blob(server)
        log = server.log_path
        deadline = time.monotonic() + 60  # both workers have decided, and said so
        while log.read_text().count("[INFO] cpu_affinity: off, worker ") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for worker in server.worker_pids():
            assert _runtime_cpus(worker) == {CPUS}


def test_auto_pins_a_single_worker_on_a_small_machine(tmp_path: Path) -> None:
    with _start(tmp_path, "auto", 1) as server:
        (worker,) = server.worker_pids()
        _pull_blob(server)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = _runtime_cpus(worker)
            if len(found) == 1 and len(next(iter(found))) == 1:
                break
            time.sleep(0.2)
        if len(CPUS) == 2:
            assert len(found) == 1 and len(next(iter(found))) == 1, found  # one CPU, all of them
        else:
            assert found == {CPUS}
