"""What each `/v2/` handler receives: the request, the repository and shared collaborators.

`Registry` is built once per app by `routes.oci_routes` (no module-level state); `Ctx` is
built per request by the dispatcher after the repository name has been validated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.auth.identity import UserInfo
from imageregistry.content.push import ManifestPusher
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata
from imageregistry.oci.gate import RegistryGate
from imageregistry.oci.pull import ManifestPull
from imageregistry.services import Services
from imageregistry.storage.driver import BlobStore

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Registry:
    services: Services
    gate: RegistryGate
    meta: RegistryMetadata
    manifests: ManifestMetadata
    pusher: ManifestPusher
    pull: ManifestPull  # the one manifest pull decision (shared with `oci.inline_pull`)

    @classmethod
    def build(cls, services: Services, pull: ManifestPull | None = None) -> Registry:
        """`pull`: the application's one `ManifestPull` (built here when not given)."""
        if pull is None:
            pull = ManifestPull(services.db, services.authz, services.pull_times, services.clock)
        manifests = ManifestMetadata(services.db)
        return cls(
            services=services,
            gate=RegistryGate(services),
            meta=RegistryMetadata(services.db),
            manifests=manifests,
            pusher=ManifestPusher(services.blobs, manifests),
            pull=pull,
        )

    @property
    def blobs(self) -> BlobStore:
        return self.services.blobs

    def now(self) -> datetime:
        return self.services.clock()


@dataclass(frozen=True)
class Ctx:
    request: Request
    registry: Registry
    repo: RepoKey
    arg: str  # the digest, reference or upload id from the path ("" when none)

    @property
    def is_head(self) -> bool:
        return self.request.method == "HEAD"

    async def authorize(self, action: RegistryAction) -> UserInfo:
        return await self.registry.gate.authorize(self.request, action, self.repo)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking metadata call off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)
