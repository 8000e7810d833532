"""The blob port's route table and chain (docs/architecture.md#request-pipelines): every
route declares its access, and a request whose link does not pass never reaches the handler
that opens and sends the file. Real HTTP against the port's server on a loopback socket,
over a filesystem blob store.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.blobport.links import BlobLinks
from imageregistry.blobport.port_routes import BLOB_PORT_ROUTES, SignedLink
from imageregistry.blobport.server import BlobPortServer
from imageregistry.content.digest import Digest
from imageregistry.storage.filesystem import FilesystemBlobStore

BLOB = b"the bytes of one layer"
DIGEST = Digest.parse("sha256:" + hashlib.sha256(BLOB).hexdigest())


def test_every_route_declares_its_access() -> None:
    assert BLOB_PORT_ROUTES
    for route in BLOB_PORT_ROUTES:
        assert isinstance(route.access, SignedLink), route.template
        # A link is minted only after the main port's pull review: it grants reads only.
        assert route.access.actions == (RegistryAction.PULL,)
        assert set(route.endpoints) == {"GET", "HEAD"}
    # The template the port's request metrics are labelled with.
    assert [route.template for route in BLOB_PORT_ROUTES] == ["/blobs/{digest}"]


async def _chunks() -> AsyncIterator[bytes]:
    yield BLOB


async def _stored(root: Path) -> FilesystemBlobStore:
    store = FilesystemBlobStore(root, fsync=False, direct_io=False)
    await store.start_upload("u1")
    await store.append_upload("u1", 0, _chunks())
    await store.commit_upload("u1", DIGEST)
    return store


@pytest.mark.parametrize("link", ["forged", "expired", "other-key"])
def test_a_refused_link_never_reaches_the_handler(tmp_path: Path, link: str) -> None:
    async def scenario() -> None:
        store = await _stored(tmp_path)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        links = BlobLinks(b"k" * 32, f"127.0.0.1:{port}")
        server = BlobPortServer(listener, links, store)
        accepting = asyncio.create_task(server.accept_forever())
        try:
            valid = links.url_for(DIGEST, "127.0.0.1", len(BLOB))
            refused = {
                "forged": valid.replace("signature=", "signature=x"),
                "expired": BlobLinks(b"k" * 32, links.listen, clock=lambda: 0).url_for(
                    DIGEST, "127.0.0.1", len(BLOB)
                ),
                "other-key": BlobLinks(b"o" * 32, links.listen).url_for(
                    DIGEST, "127.0.0.1", len(BLOB)
                ),
            }[link]
            async with httpx.AsyncClient(timeout=30) as client:
                r = await client.get(refused)
                assert r.status_code == 403
                assert r.json()["errors"][0]["code"] == "DENIED"
                assert BLOB not in r.content
                # The same blob through a link that passes: the handler sends it.
                ok = await client.get(valid)
                assert ok.status_code == 200 and ok.content == BLOB
        finally:
            accepting.cancel()
            await server.close(1.0)

    asyncio.run(scenario())
