"""Shared fixtures: a throwaway PostgreSQL per test session, and registry servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import temporary_postgres
from tests.support.server import RegistryProcess


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    with temporary_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One HTTPS registry (SQLite + filesystem) shared by the tests of a module."""
    root = tmp_path_factory.mktemp("registry")
    server = RegistryProcess(data_dir=Path(root) / "data").start()
    try:
        yield server
    finally:
        server.stop()
