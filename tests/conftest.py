"""Shared fixtures: a throwaway PostgreSQL per test session, and registry servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import temporary_postgres
from tests.support.server import RegistryProcess

_KINDS = ("unit", "contract", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its directory (`unit`, `contract`, `e2e`) and the soak modules `soak`."""
    for item in items:
        parts = item.path.parts
        for kind in _KINDS:
            if kind in parts:
                item.add_marker(kind)
        if item.path.name.startswith("test_soak"):
            item.add_marker("soak")


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
