"""What each OCI handler receives: the authorized request and shared collaborators.

`Registry` is built once per app by `v2_routes.build_registry` (no module-level state) and
holds, as named fields, every collaborator and setting the handlers use; `Ctx`
is built per request by a dispatcher (`oci.v2_routes`, `oci.extension_routes`) after the
repository name has been validated and the route's declared access authorized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.auth.identity import UserInfo
from imageregistry.clock import Clock
from imageregistry.content.digest import Digest
from imageregistry.content.push import ManifestPusher
from imageregistry.metadata.db import Database
from imageregistry.metadata.manifest_pull import PulledManifest
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata
from imageregistry.notifications.notifier import Notifier
from imageregistry.oci.gate import RegistryGate
from imageregistry.oci.pull import ManifestPull, Refused
from imageregistry.oci.token import TokenIssuer
from imageregistry.storage.driver import BlobStore

P = ParamSpec("P")
T = TypeVar("T")


class BlobLinks(Protocol):
    """The blob port's signed links (`blobport.links.BlobLinks`), as `oci` sees them: the
    two ports share no modules (docs/architecture.md#package-layout-srcimageregistry)."""

    def url_for(self, digest: Digest, request_host: str, size: int | None = None) -> str: ...


@dataclass(frozen=True)
class Registry:
    """The OCI surface's collaborators, handed over explicitly (docs/architecture.md#wiring):
    handlers read named fields, never the server's `Services`."""

    gate: RegistryGate
    meta: RegistryMetadata
    manifests: ManifestMetadata
    pusher: ManifestPusher
    pull: ManifestPull  # the one manifest pull decision (shared with `oci.inline_pull`)
    db: Database
    blobs: BlobStore
    clock: Clock
    tokens: TokenIssuer  # what `/v2/token` uses
    upload_max_open_per_user: int  # open upload sessions per identity; 0 = no cap
    upload_max_staged_bytes_per_user: int  # staged bytes per identity; 0 = no cap
    blob_links: BlobLinks | None = None  # set when the blob port is on
    notifier: Notifier | None = None  # None: no event notifications

    def now(self) -> datetime:
        return self.clock()


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
