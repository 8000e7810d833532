"""Keep each worker's network runtime on a CPU of its own (setting `cpu_affinity`).

Granian runs a worker's sockets on a Rust (tokio) runtime and reads the file of a
zero-copy blob send on tokio's blocking-thread pool, one chunk at a time. Left to the
scheduler, the runtime thread and the reading thread sit on different CPUs and every chunk
costs a cross-CPU wake-up; pinning a worker's runtime threads to one CPU turns those into
cheap same-CPU switches (a single 1 GiB pull went from 0.7x-1.0x to 1.3x-1.4x
distribution's on the 2-CPU benchmark machine, docs/benchmarks.md). Python threads
(database, hashing, fsync) are left free to run anywhere.

Modes: `auto` pins when the registry is the main tenant of the CPUs it may use, that is
when they number at most two per worker (one worker on a 2-CPU machine or cpuset, two on
four); `on` pins whenever there are at least two CPUs; `off` never pins. Under a CPU quota
on a large host every host CPU is allowed, so `auto` leaves the scheduler free there
rather than tie the runtime to one CPU shared with unknown neighbours.

The flow is plan, claim, apply: `should_pin` decides from the mode, the worker count and
the allowed CPUs; `claim_cpu` takes a CPU no other worker of this data dir holds, trying the
CPU the worker runs on first (an `flock` per CPU, dropped when the process dies, so a
respawned worker can take its predecessor's CPU again); `pin_runtime` applies it once
Granian has started its runtime threads, which happens after the application's lifespan
startup, hence the polling. Blocking-pool threads started later by a pinned runtime thread
inherit its affinity.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Collection, Iterable
from pathlib import Path

from imageregistry.background import running

log = logging.getLogger(__name__)

RUNTIME_THREAD_PREFIX = "tokio-"  # tokio's default thread name, kept by Granian


def should_pin(mode: str, workers: int, cpus: Collection[int]) -> bool:
    if mode == "off" or len(cpus) < 2:
        return False
    return mode == "on" or len(cpus) <= 2 * workers


def current_cpu() -> int | None:
    """The CPU this thread last ran on (field 39 of /proc/thread-self/stat)."""
    try:
        stat = Path("/proc/thread-self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def claim_cpu(
    lock_dir: Path, cpus: Iterable[int], start: int | None = None
) -> tuple[int, int] | None:
    """A CPU whose lock this process could take, and the lock's descriptor.

    Candidates are tried in order from `start` (wrapping), so that separate servers on one
    machine, which share no lock directory, spread over the CPUs instead of all taking the
    first one."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(cpus)
    if start in ordered:
        at = ordered.index(start)
        ordered = ordered[at:] + ordered[:at]
    for cpu in ordered:
        fd = os.open(lock_dir / f"cpu-{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return cpu, fd
    return None


def runtime_threads(task_dir: Path = Path("/proc/self/task")) -> list[int]:
    found = []
    for entry in task_dir.iterdir():
        try:
            name = (entry / "comm").read_text()
        except OSError:  # the thread ended while we looked
            continue
        if name.startswith(RUNTIME_THREAD_PREFIX):
            found.append(int(entry.name))
    return found


async def pin_runtime(cpu: int, timeout: float = 10.0, step: float = 0.02) -> list[int]:
    """Wait for the runtime threads to exist, then pin every one of them to `cpu`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (threads := runtime_threads()):
        if loop.time() >= deadline:
            log.warning("cpu_affinity: no %s* threads appeared; not pinned", RUNTIME_THREAD_PREFIX)
            return []
        await asyncio.sleep(step)
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError as exc:  # e.g. a seccomp profile or cpuset that forbids it
            log.warning("cpu_affinity: cannot pin thread %d to CPU %d (%s)", tid, cpu, exc)
            return []
    log.info("cpu_affinity: worker %d runtime threads pinned to CPU %d", os.getpid(), cpu)
    return threads


@contextlib.asynccontextmanager
async def runtime_affinity(mode: str, workers: int, lock_dir: Path) -> AsyncIterator[None]:
    """Hold a CPU for this worker's runtime threads while the server runs."""
    cpus = os.sched_getaffinity(0)
    claim = None
    if should_pin(mode, workers, cpus):
        try:
            claim = claim_cpu(lock_dir, cpus, start=current_cpu())
        except OSError as exc:
            log.warning("cpu_affinity: cannot lock a CPU in %s (%s); not pinned", lock_dir, exc)
    else:
        log.info(
            "cpu_affinity: %s, worker %d left unpinned (%d CPUs, %d workers)",
            mode,
            os.getpid(),
            len(cpus),
            workers,
        )
    if claim is None:
        yield
        return
    cpu, fd = claim
    try:
        async with running(pin_runtime(cpu)):
            yield
    finally:
        os.close(fd)
