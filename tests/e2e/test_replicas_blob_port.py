"""Blob-port links across replicas: two plain-HTTP replicas with `--blob-listen` over one
PostgreSQL database and one shared blob directory (the filesystem driver on a volume
both mount). A link minted by one replica's main port is served by the other replica's
blob port, because the link key is the registry's (docs/operations.md, "Several
replicas"); a link with another signature is refused there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.postgres import create_database, free_port
from tests.support.server import RegistryProcess

MiB = 1 << 20


@pytest.fixture(scope="module")
def pair(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    database = create_database(postgres_server, "replicas_blob_port")
    root = tmp_path_factory.mktemp("blob-port-replicas")
    a, b = (
        RegistryProcess(
            data_dir=root / name,
            plain_http=True,
            database=database,
            extra_args=[
                *("--storage", str(root / "shared-blobs")),
                *("--blob-listen", f"127.0.0.1:{free_port()}"),
            ],
        )
        for name in ("a", "b")
    )
    with a.start(timeout=120), b.start(timeout=120):
        yield a, b


def _blob_port(server: RegistryProcess) -> int:
    return int(server.extra_args[-1].rsplit(":", 1)[1])


def test_a_link_minted_on_one_replica_is_served_by_the_others_blob_port(
    pair: tuple[RegistryProcess, RegistryProcess],
) -> None:
    data = os.urandom(2 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    a, b = pair
    with a.client(a.admin_token) as on_a:
        pushed = on_a.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=data)
        assert pushed.status_code == 201, pushed.text
    for minter, server in ((a, b), (b, a)):
        with minter.client(minter.admin_token) as client:
            answer = client.get(f"/v2/team/app/blobs/{digest}")
        assert answer.status_code == 307, answer.text
        link = urlsplit(answer.headers["location"])
        assert link.port == _blob_port(minter)
        elsewhere = f"http://127.0.0.1:{_blob_port(server)}{link.path}?{link.query}"
        served = httpx.get(elsewhere, timeout=60)
        assert served.status_code == 200
        assert served.content == data
        forged = elsewhere.replace("signature=", "signature=0")
        assert httpx.get(forged, timeout=60).status_code in (400, 403)
