"""The audit log file: whole lines from several processes at once, rotation by size
coordinated through the lock file, and a retention count."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from pathlib import Path

from imageregistry.observability.auditlog import CoalescingWriter, RotatingFileWriter

PROCESSES = 4
LINES = 1500


def _line(worker: int, index: int) -> bytes:
    # ~300 bytes, so a rotation happens every ~200 lines at 64 KiB
    return json.dumps({"worker": worker, "index": index, "pad": "x" * 256}).encode() + b"\n"


def _write_many(path: str, max_bytes: int, max_backups: int, worker: int) -> None:
    writer = RotatingFileWriter(Path(path), max_bytes, max_backups)
    for index in range(LINES):
        writer.write(_line(worker, index))
    writer.close()


def _run_workers(path: Path, max_bytes: int, max_backups: int) -> None:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_many, args=(str(path), max_bytes, max_backups, worker))
        for worker in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "."))


def test_concurrent_workers_lose_and_tear_no_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _run_workers(path, 64 * 1024, 0)  # 0: keep every rotated file
    backups = [p for p in _files(path) if p.suffix != ".lock"]
    assert len(backups) >= 10  # ~1.9 MB in 64 KiB files: rotated many times
    seen: set[tuple[int, int]] = set()
    for file in [path, *backups]:
        for line in file.read_bytes().splitlines():
            entry = json.loads(line)  # a torn or interleaved line would not parse
            seen.add((entry["worker"], entry["index"]))
    assert seen == {(w, i) for w in range(PROCESSES) for i in range(LINES)}
    # each file stayed near the limit: a worker looks at the size every 4 KiB it wrote
    for file in backups:
        assert file.stat().st_size < 64 * 1024 + PROCESSES * 4096 + 4096


def test_rotation_keeps_the_configured_number_of_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _run_workers(path, 64 * 1024, 3)
    names = sorted(p.name for p in _files(path))
    assert names == ["audit.log.1", "audit.log.2", "audit.log.3", "audit.log.lock"]
    # the kept files are the newest: the last line every worker wrote is in the live file
    # or the first backup, and the oldest lines are gone
    recent = path.read_bytes() + (tmp_path / "audit.log.1").read_bytes()
    kept = (
        b"".join((tmp_path / f"audit.log.{i}").read_bytes() for i in (1, 2, 3)) + path.read_bytes()
    )
    indexes = {json.loads(line)["index"] for line in kept.splitlines()}
    assert LINES - 1 in indexes and 0 not in indexes
    assert any(json.loads(line)["index"] == LINES - 1 for line in recent.splitlines())


def test_no_rotation_without_a_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = RotatingFileWriter(path, 0, 3)
    for index in range(2000):
        writer.write(_line(0, index))
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.log"]
    assert len(path.read_bytes().splitlines()) == 2000


def test_a_writer_reopens_the_file_another_rotated(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    first = RotatingFileWriter(path, 16 * 1024, 5)
    second = RotatingFileWriter(path, 16 * 1024, 5)
    for index in range(200):  # 60 KB: several rotations, alternating writers
        (first if index % 2 else second).write(_line(index % 2, index))
    first.close()
    second.close()
    total = [path, *(p for p in _files(path) if p.suffix != ".lock")]
    lines = [json.loads(line) for f in total for line in f.read_bytes().splitlines()]
    assert sorted(e["index"] for e in lines) == list(range(200))
    assert path.stat().st_size < 16 * 1024 + 2 * 1024 + 1024


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, line: bytes) -> None:
        self.writes.append(line)

    def close(self) -> None:
        self.writes.append(b"<closed>")


def test_lines_wait_for_the_flush_interval_and_leave_in_one_write_in_order() -> None:
    inner = Recorder()
    writer = CoalescingWriter(inner, delay=0.05, limit=1024)

    async def requests() -> None:
        writer.write(b"a\n")
        writer.write(b"b\n")
        await asyncio.sleep(0)
        assert inner.writes == []  # not yet: when the interval is over
        while not inner.writes:
            await asyncio.sleep(0.01)
        assert inner.writes == [b"a\nb\n"]
        writer.write(b"c\n")
        await asyncio.to_thread(writer.write, b"d\n")  # another thread: at once, after c
        assert inner.writes == [b"a\nb\n", b"c\nd\n"]
        writer.write(b"x" * 1023 + b"\n")  # the size limit: at once
        assert inner.writes[-1] == b"x" * 1023 + b"\n"
        writer.write(b"e\n")

    asyncio.run(requests())
    writer.close()  # what still waits is written on the way out
    assert inner.writes[-2:] == [b"e\n", b"<closed>"]


def test_lines_from_the_loop_and_threads_at_once_are_each_written_once_in_order() -> None:
    """The loop appends its lines without the lock while other threads write theirs out
    (with whatever waits): no line is lost, none written twice, each source's in order."""
    inner = Recorder()
    writer = CoalescingWriter(inner, delay=0.001, limit=4096)
    per_thread = 3000

    def thread_lines(name: str) -> None:
        for index in range(per_thread):
            writer.write(f"{name} {index}\n".encode())

    async def loop_lines() -> None:
        threads = [asyncio.to_thread(thread_lines, f"t{n}") for n in range(3)]
        gathered = asyncio.gather(*threads)
        index = 0
        while not gathered.done() or index < per_thread:
            writer.write(f"loop {index}\n".encode())
            index += 1
            if index % 50 == 0:
                await asyncio.sleep(0)
        await gathered

    asyncio.run(loop_lines())
    writer.close()
    lines = b"".join(inner.writes[:-1]).decode().splitlines()
    by_source: dict[str, list[int]] = {}
    for line in lines:
        name, index = line.split()
        by_source.setdefault(name, []).append(int(index))
    assert sorted(by_source) == ["loop", "t0", "t1", "t2"]
    for name, indexes in by_source.items():
        assert indexes == list(range(len(indexes))), name
    assert all(len(by_source[f"t{n}"]) == per_thread for n in range(3))
