"""Where audit events go: one line per `write`, to a file rotated by size or to stdout.

Every Granian worker process opens the file itself, once, with `O_APPEND`, and writes whole
event lines with a single `write(2)` — the lines its event loop produced within
`FLUSH_SECONDS` together, or sooner once they reach `FLUSH_BYTES` (`CoalescingWriter`) —
so the kernel appends them whole at the end of the file and lines of several workers never
interleave (local filesystems; not NFS). An event is therefore in the file at most
`FLUSH_SECONDS` after its request ended, and every pending one when the server stops.
Rotation is coordinated through `FILE.lock`: a worker whose own writes would add more than
a sixteenth of the maximum size (at most 64 KiB) since its last look checks the file's
size first; when it is over
`--audit-log-maxsize`, the worker takes an exclusive `flock` on the lock file and looks
again. If the file under the name is still the one it writes to, it renames `FILE.N-1` to
`FILE.N` ... `FILE` to `FILE.1` (dropping the oldest beyond `--audit-log-maxbackup`) and
opens a new `FILE`; if another worker already did, it just opens the new file. A worker
therefore keeps appending to the file it has open until its next look (at most that
sixteenth of the size later); those lines end up in `FILE.1`, never lost. The file may
grow past the limit by that much per worker.

`-` writes to standard output instead (what kube-apiserver's `--audit-log-path -` does);
a line longer than the pipe buffer (4 KiB) may then interleave with another worker's when
stdout is a pipe, which is why a file is the recommended target.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

from imageregistry.configerror import ConfigurationError

log = logging.getLogger(__name__)
MEGABYTE = 1024 * 1024
_MAX_CHECK_INTERVAL = 64 * 1024
_ERROR_LOG_SECONDS = 60.0
# How long an event may wait in memory, and how much may wait, before it is written.
FLUSH_SECONDS = 0.1
FLUSH_BYTES = 64 * 1024


class AuditLogError(ConfigurationError):
    """The audit log cannot be opened (a configuration problem, reported at start)."""


class EventWriter(Protocol):
    def write(self, line: bytes) -> None: ...

    def close(self) -> None: ...


class _Complaints:
    """Logs a failed write at most once a minute; the event itself is dropped (the request
    it describes has been answered already)."""

    def __init__(self) -> None:
        self._last = 0.0
        self.dropped = 0

    def failed(self, exc: OSError) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last >= _ERROR_LOG_SECONDS:
            self._last = now
            log.error("audit log write failed (%s); %d event(s) dropped so far", exc, self.dropped)


def _write_all(fd: int, line: bytes) -> None:
    written = os.write(fd, line)
    while written < len(line):  # only when the disk fills up mid-line
        line = line[written:]
        written = os.write(fd, line)


class StdoutWriter:
    def __init__(self) -> None:
        self._complaints = _Complaints()

    def write(self, line: bytes) -> None:
        try:
            _write_all(1, line)
        except OSError as exc:
            self._complaints.failed(exc)

    def close(self) -> None:
        return None


class RotatingFileWriter:
    """Appends lines to `path`; rotates it at `max_bytes` (0: never), keeping
    `max_backups` old files (0: all of them)."""

    def __init__(self, path: Path, max_bytes: int, max_backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_backups = max_backups
        self._check_interval = max(1, min(_MAX_CHECK_INTERVAL, max_bytes // 16))
        self._since_check = self._check_interval  # look at the size before the first line
        self._lock = threading.Lock()
        self._complaints = _Complaints()
        self._fd = self._open()
        self._lock_fd = (
            os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if max_bytes
            else -1
        )

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, line: bytes) -> None:
        with self._lock:
            try:
                if self.max_bytes and self._since_check + len(line) > self._check_interval:
                    self._since_check = 0
                    self._rotate_if_full()
                _write_all(self._fd, line)
                self._since_check += len(line)
            except OSError as exc:
                self._complaints.failed(exc)

    def _rotate_if_full(self) -> None:
        if os.fstat(self._fd).st_size < self.max_bytes:
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            mine = os.fstat(self._fd)
            try:
                named = os.stat(self.path)
            except FileNotFoundError:
                named = None
            if named is not None and (named.st_ino, named.st_dev) == (mine.st_ino, mine.st_dev):
                if named.st_size < self.max_bytes:
                    return
                self._shift_backups()
            fd = self._open()  # the new file (ours, or the one another worker made)
            os.close(self._fd)
            self._fd = fd
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _shift_backups(self) -> None:
        """FILE.N-1 → FILE.N ... FILE → FILE.1; the oldest beyond `max_backups` goes."""
        last = self.max_backups
        if last == 0:  # keep all: shift every existing backup up by one
            last = 1
            while self.backup(last).exists():
                last += 1
        else:
            with contextlib.suppress(FileNotFoundError):
                self.backup(last).unlink()
        for index in range(last - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.backup(index), self.backup(index + 1))
        os.rename(self.path, self.backup(1))

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._lock_fd = -1


class CoalescingWriter:
    """Lines written on the event loop wait up to `delay` seconds (or until `limit` bytes
    wait) and then leave in one `write(2)`, so a busy worker pays one system call for many
    requests instead of one each (docs/benchmarks.md, "Audit on the manifest GET"); still
    only whole lines, so the `O_APPEND` guarantee holds. Written from any other thread, a
    line goes out at once, after any pending ones, in order. `close` writes whatever waits.

    The loop's own writes (every request's `ResponseComplete`) take no lock: only the
    loop's thread appends to the pending list, and whoever writes it out (the loop's timer,
    another thread, `close`) does so under the lock by copying the lines there and then
    deleting exactly those from the front of the same list — each one step under the GIL,
    so a line the loop appends meanwhile stays for the next write, neither lost nor
    written twice."""

    def __init__(
        self, inner: EventWriter, delay: float = FLUSH_SECONDS, limit: int = FLUSH_BYTES
    ) -> None:
        self._inner = inner
        self._delay = delay
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: list[bytes] = []  # appended to by the loop's thread only
        self._size = 0  # of what the loop appended since its last flush (read by it only)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop lines wait for
        self._loop_thread = -1  # ... and its thread

    def _on_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop lines may wait for when it runs in this thread, else None. The first
        loop seen is kept while it runs (`asyncio.get_running_loop` costs a `getpid(2)`
        whenever its per-thread cache misses, which under Granian is most requests)."""
        loop = self._loop
        if loop is not None and self._loop_thread == threading.get_ident() and loop.is_running():
            return loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return None
        with self._lock:
            if loop is not None and loop.is_running() and loop is not running:
                return None  # another loop's lines go out at once, like other threads'
            self._flush_locked()  # lines left by a loop that stopped go first
            self._timer = None
            self._loop, self._loop_thread = running, threading.get_ident()
        return running

    def write(self, line: bytes) -> None:
        loop = self._on_loop()
        if loop is None:
            with self._lock:
                self._flush_locked(line)
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self, line: bytes = b"") -> None:
        """Writes the pending lines, then `line`, in one write; with the lock held."""
        pending = self._pending
        count = len(pending)
        if count:
            lines = pending[:count]
            del pending[:count]
            if threading.get_ident() == self._loop_thread:
                self._size = 0
            if line:
                lines.append(line)
            self._inner.write(lines[0] if len(lines) == 1 else b"".join(lines))
        elif line:
            self._inner.write(line)

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_locked()
        self._inner.close()


def open_writer(path: str, max_megabytes: int, max_backups: int) -> EventWriter:
    """The writer for `--audit-log-path` (`-`: standard output, one line per write, so
    lines stay within the pipe's atomic size)."""
    if path == "-":
        return StdoutWriter()
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return CoalescingWriter(RotatingFileWriter(target, max_megabytes * MEGABYTE, max_backups))
    except OSError as exc:
        raise AuditLogError(f"audit log {path}: {exc.strerror}") from None
