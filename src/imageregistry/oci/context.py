"""What each OCI handler receives: the authorized request and shared collaborators.

`Registry` is built once per app by `v2_routes.oci_routes` (no module-level state); `Ctx`
is built per request by a dispatcher (`oci.v2_routes`, `oci.extension_routes`) after the
repository name has been validated and the route's declared access authorized.
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
from imageregistry.metadata.manifest_pull import PulledManifest
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata
from imageregistry.oci.gate import RegistryGate
from imageregistry.oci.pull import ManifestPull, Refused
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
    """An authorized request: the dispatcher built it after the caller passed the review
    the route declares (`oci.pipeline`), so a handler never authorizes the request itself."""

    request: Request
    registry: Registry
    user: UserInfo  # the caller, as authenticated (anonymous on a `Public` route)
    target: RepoKey | None  # the path's repository; None on a route without one
    arg: str  # the digest, reference or upload id from the path ("" when none)
    secondary: tuple[RegistryAction, ...] = ()  # the reviews `also_allowed` may take
    pulled: PulledManifest | Refused | None = None  # a `PullReview`'s answer

    @property
    def repo(self) -> RepoKey:
        """The path's repository (only routes whose pattern names one have it)."""
        if self.target is None:
            raise LookupError("this route names no repository")
        return self.target

    @property
    def is_head(self) -> bool:
        return self.request.method == "HEAD"

    @property
    def may_create_namespace(self) -> bool:
        """Whether this (authorized) push may record a namespace the registry has not
        seen (`RegistryGate.may_create_namespace`): a rule on the caller, not a review."""
        return self.registry.gate.may_create_namespace(self.user)

    async def also_allowed(self, action: RegistryAction, repo: RepoKey) -> bool:
        """A secondary review the route declares (`Endpoint.secondary`): whether the caller
        may also `action` on `repo` — a mount's pull of its source repository, a pushed
        cosign signature's signing right. It answers yes or no (the handler decides what
        a no means) and is not the request's own decision, so the request record and its
        audit event keep naming the route's review. Asking for an undeclared action is a
        programming error."""
        if action not in self.secondary:
            raise LookupError(f"the route declares no secondary {action.value} review")
        return await self.registry.gate.allowed(self.request, action, repo)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking metadata call off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)
