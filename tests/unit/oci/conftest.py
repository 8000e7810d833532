"""An in-process registry app for endpoint tests: SQLite in a temp dir, in-memory blobs.

The app is the production one (`server.build_app`: every surface, every middleware, the
lifespan), so endpoint tests go through the same chain a served request does; only the
services under it are small (in-memory blobs, a fake token store).

Authorization is the real masters-only seam: `ADMIN` (system:masters) may do anything,
`ALICE` is authenticated but denied, and no header is the anonymous user.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from imageregistry.auth.authn import Authenticator
from imageregistry.auth.authorizer import Authorizer, MastersOnlyAuthorizer
from imageregistry.auth.tokens import TokenSigner, generate_signing_key, hash_token
from imageregistry.changefeed import ChangeFeed, WatchSlots
from imageregistry.config import Settings
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.server import build_app
from imageregistry.services import Services
from imageregistry.storage.memory import InMemoryBlobStore

ADMIN = "admin-token"
ALICE = "alice-token"
REPO = "team/app"


class FakeTokens:
    def __init__(self) -> None:
        self.known = {
            hash_token(ADMIN): ("system:admin", ("system:masters",)),
            hash_token(ALICE): ("alice", ()),
        }

    def lookup_token(self, token_sha256: str) -> tuple[str, tuple[str, ...], None] | None:
        found = self.known.get(token_sha256)
        return None if found is None else (*found, None)


def build_services(tmp: Path) -> Services:
    db = Database(open_engine(f"sqlite:///{tmp / 'registry.db'}"))
    authn = Authenticator(FakeTokens(), TokenSigner(generate_signing_key()), "test-audience")
    return Services(
        settings=Settings(data_dir=tmp, plain_http=True),
        db=db,
        blobs=InMemoryBlobStore(),
        authn=authn,
        authz=MastersOnlyAuthorizer(),
        clock=lambda: datetime.now(UTC),
        changes=ChangeFeed(db),
        watches=WatchSlots(per_user=100, total=1000),
    )


def with_authorizer(services: Services, authz: Authorizer) -> Services:
    """`services` deciding with `authz`, with a change feed of its own (each app's lifespan
    runs the feed of its services; two apps must not share one)."""
    return dataclasses.replace(services, authz=authz, changes=ChangeFeed(services.db))


def _credentials(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def serve(services: Services, token: str | None = ADMIN) -> Iterator[TestClient]:
    """A client of the production app over `services`, its lifespan running, sending
    `token` (None: no credentials)."""
    with TestClient(build_app(services), headers=_credentials(token)) as client:
        yield client


def alongside(
    client: TestClient, token: str | None = None, app: ASGIApp | None = None
) -> TestClient:
    """Another client of the app `client` serves (or of `app`, a part of it), on the same
    event loop, so the lifespan `client` started is the one running: sending `token`
    (None: no credentials)."""
    other = TestClient(app or client.app, headers=_credentials(token))
    other.portal = client.portal
    return other


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with serve(services) as c:
        yield c


@pytest.fixture
def anon(client: TestClient) -> TestClient:
    """No credentials, to the app `client` serves."""
    return alongside(client)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Image:
    config: bytes
    layers: tuple[bytes, ...]
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha(self.manifest)


def make_image(
    seed: str = "a", *, media_type: str = "application/vnd.oci.image.manifest.v1+json"
) -> Image:
    config = json.dumps(
        {
            "created": "2024-05-01T10:00:00.123456789Z",
            "architecture": "amd64",
            "os": "linux",
            "author": "tester",
            "config": {"Env": ["A=1"], "Cmd": ["sh"], "Labels": {"k": "v"}, "User": ""},
            "rootfs": {"type": "layers", "diff_ids": []},
            "seed": seed,
        }
    ).encode()
    layers = (f"layer-one-{seed}".encode(), f"layer-two-{seed}".encode())
    oci = media_type.startswith("application/vnd.oci")
    config_type = (
        "application/vnd.oci.image.config.v1+json"
        if oci
        else "application/vnd.docker.container.image.v1+json"
    )
    layer_type = (
        "application/vnd.oci.image.layer.v1.tar+gzip"
        if oci
        else "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": sha(config), "size": len(config)},
            "layers": [
                {"mediaType": layer_type, "digest": sha(layer), "size": len(layer)}
                for layer in layers
            ],
            "annotations": None,
        }
    ).encode()
    return Image(config, layers, manifest)


def push_blob(client: TestClient, data: bytes, repo: str = REPO) -> None:
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha(data)}, content=data)
    assert r.status_code == 201, r.text


def push_image(client: TestClient, image: Image, ref: str = "latest", repo: str = REPO) -> str:
    for blob in (image.config, *image.layers):
        push_blob(client, blob, repo)
    media_type = json.loads(image.manifest)["mediaType"]
    r = client.put(
        f"/v2/{repo}/manifests/{ref}",
        content=image.manifest,
        headers={"Content-Type": media_type},
    )
    assert r.status_code == 201, r.text
    return image.digest
