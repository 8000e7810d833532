"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on a free port.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` system user (from the Debian package; `nobody` where it is missing) via `runuser`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, and one this process has not handed out
    before: the kernel may offer a just-released port again, and a test asking for two
    ports in a row (a server's main and front-proxy ports) must get two."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _db_user() -> str:
    """The unprivileged account the server runs as when tests run as root."""
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def _as_db_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", _db_user(), "--", *argv]
    return argv


@dataclass
class PostgresCluster:
    """A running throwaway cluster that a test may stop and start again (an outage)."""

    url: str
    data: Path
    opts: str
    log: Path

    def stop(self) -> None:
        subprocess.run(
            _as_db_user(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )

    def start(self) -> None:
        subprocess.run(
            _as_db_user(
                [
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-o",
                    self.opts,
                    "-w",
                    "-l",
                    str(self.log),
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )


@contextmanager
def temporary_postgres() -> Iterator[str]:
    """Yield a SQLAlchemy-ready URL of a fresh PostgreSQL cluster; stop it afterwards."""
    with postgres_cluster() as cluster:
        yield cluster.url


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A fresh PostgreSQL cluster on a free port, removed afterwards."""
    if shutil.which("initdb") is None:
        raise RuntimeError("initdb not on PATH: install PostgreSQL 15 server binaries")
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, _db_user())
        root.chmod(0o755)
    port = free_port()
    subprocess.run(
        _as_db_user(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    cluster = PostgresCluster(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data, opts, root / "log"
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create database `name` on the server behind `url`; return its URL."""
    import psycopg

    base = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


@contextmanager
def hot_standby(primary: PostgresCluster) -> Iterator[PostgresCluster]:
    """A streaming replica of `primary` (pg_basebackup -R), read-only as every hot standby
    is; same databases, its own port. Removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="pgstandby-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, _db_user())
        root.chmod(0o755)
    port = free_port()
    primary_port = primary.url.rsplit(":", 1)[1].split("/", 1)[0]
    source = ["-h", "127.0.0.1", "-p", primary_port, "-U", "postgres"]
    subprocess.run(
        _as_db_user(
            [
                "pg_basebackup",
                *source,
                "-D",
                str(data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300"
    standby = PostgresCluster(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data, opts, root / "log"
    )
    standby.start()
    try:
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(root, ignore_errors=True)


def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    """The URL of a new, empty database of `kind`: "sqlite" (a file in `tmp_path`) or
    "postgresql" (a database of its own on the session's server, the `postgres_server`
    fixture, which starts it at first use)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    server: str = request.getfixturevalue("postgres_server")
    return create_database(server, f"contract_{uuid.uuid4().hex[:12]}")
