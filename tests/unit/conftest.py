"""The registry's services for in-process tests of any module: SQLite in the test's temp
dir, in-memory blobs, the fake token store of `tests/unit/oci/conftest.py`, whose `serve`
puts the production app (`server.build_app`) over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imageregistry.services import Services
from tests.unit.oci.conftest import build_services


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = build_services(tmp_path)
    yield built
    built.db.dispose()
