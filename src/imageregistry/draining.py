"""The draining marker: how a stopping server's supervisor tells its workers.

On SIGTERM the supervisor (`cli/server_main.py`) creates the marker file before it stops
Granian; each worker's `/readyz` checks it (`health.py`) with one `stat`. A file, not a
signal: Granian keeps SIGTERM and SIGINT for itself in the workers, and a file reaches
every worker at once. A leaf module so the supervisor imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path


def draining_marker(run_dir: Path, supervisor_pid: int) -> Path:
    """The marker of the server whose supervisor is `supervisor_pid`.

    Named after that pid so two servers sharing a data dir never see each other's; the
    supervisor removes a stale one at start (a container's pid 1 is reused)."""
    return run_dir / f"draining-{supervisor_pid}"


class Draining:
    """Whether this worker's server has been told to stop."""

    def __init__(self, marker: Path) -> None:
        self._marker = marker

    def __call__(self) -> bool:
        return self._marker.exists()
