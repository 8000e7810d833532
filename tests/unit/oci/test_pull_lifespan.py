"""The SQLite connection the event loop reads manifest pulls through is the app's: the
production app (`server.build_app`) closes it when it shuts down, so a stopped app leaves
no open database connection behind (docs/architecture.md, "The manifest pull")."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from imageregistry.server import build_app
from tests.unit.oci.conftest import REPO, build_services


def _connections() -> list[sqlite3.Connection]:
    return [o for o in gc.get_objects() if isinstance(o, sqlite3.Connection)]


def _is_open(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError as exc:
        return "closed" not in str(exc)
    return True


def test_stopping_the_app_closes_every_connection_pulls_opened(tmp_path: Path) -> None:
    services = build_services(tmp_path)
    before = {id(c) for c in _connections()}
    with TestClient(build_app(services)) as client:
        # An anonymous caller needs no I/O to identify, so the pull is decided on the
        # event loop (and refused: the router then answers 401).
        r = client.get(f"/v2/{REPO}/manifests/latest")
        assert r.status_code == 401
        opened = [c for c in _connections() if id(c) not in before]
        assert any(_is_open(c) for c in opened)
    left_open = [c for c in opened if _is_open(c)]
    if left_open:
        pytest.fail(f"{len(left_open)} SQLite connection(s) left open after shutdown")
