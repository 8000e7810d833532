"""Send a huge request body to a server subprocess and measure what it cost the worker.

The large-body checks of the hostile suites stream hundreds of MiB from a generator (so the
test itself holds one chunk at a time), either with a `Content-Length` or chunked, and
bound the worker's resident memory: `VmHWM`, the peak since the worker started, so a
body buffered and freed again within the request still counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
MIB = 1 << 20


def stream(total: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """`total` bytes (a multiple of `chunk`) in `chunk`-sized pieces; one piece is reused."""
    piece = b"x" * chunk
    for _ in range(total // chunk):
        yield piece


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """`field` of /proc/<pid>/status (VmRSS: now; VmHWM: peak) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no {field} in /proc/{pid}/status")


def body_headers(total: int, declared: bool, content_type: str) -> dict[str, str]:
    """Headers of a streamed body: with `Content-Length` when `declared`, else httpx sends
    it chunked (`Transfer-Encoding: chunked`, as a client that does not know the size)."""
    headers = {"Content-Type": content_type}
    if declared:
        headers["Content-Length"] = str(total)
    return headers
