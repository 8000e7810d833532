"""Manifest GET/HEAD in one worker-thread hop, and a raw ASGI fast path for it.

`ManifestPulls.serve` does everything a successful pull needs — authentication (cached
per process by `auth.authn`), the RBAC decision, the manifest lookup (one statement, see
`metadata.manifest_pull`), the namespace signature policy (issue 6 item 4) and the
throttled `last_pulled` write — in one synchronous call, so a pull costs one hop off the
event loop. It answers None whenever anything is not simply "allowed and found"; the
general path (`manifests.get_manifest` through the Starlette router) then repeats the
steps one by one to render the exact OCI error (401 with a challenge, 403 `DENIED`,
`NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, the policy refusal).

`oci_asgi(services, next_app)` puts that fast path in front of any ASGI app: successful
manifest GET/HEADs are answered directly (with the headers every `/v2/` answer carries),
everything else goes to `next_app` unchanged, marked so the fast attempt is not repeated.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from imageregistry.auth.authn import Unauthenticated
from imageregistry.auth.authorizer import RegistryAction, registry_attributes
from imageregistry.auth.identity import anonymous
from imageregistry.content.reference import parse_manifest_reference, parse_repository
from imageregistry.metadata.manifest_pull import ManifestPuller, PulledManifest
from imageregistry.metadata.registry import MetadataError, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata, ManifestUnknown
from imageregistry.oci.errors import RegistryError
from imageregistry.services import Services

FAST_TRIED = "imageregistry.fast_pull_tried"  # scope key: the fast path already said no
API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")
SUPPORTS_SIGNATURES_HEADER = (b"x-registry-supports-signatures", b"1")
_MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<arg>[^/]+)$")


class ManifestPulls:
    """The pull decision and lookup, shared by the fast path and the general handler."""

    def __init__(self, services: Services, manifests: ManifestMetadata) -> None:
        self.services = services
        self.manifests = manifests
        self.puller = ManifestPuller(services.db)

    def serve(
        self,
        authorization: str | None,
        repo: RepoKey,
        digest: str | None,
        tag: str | None,
        mark: bool,
    ) -> PulledManifest | None:
        """The manifest, when the caller may pull it and it exists; None otherwise."""
        services = self.services
        try:
            user = services.authn.authenticate(authorization) if authorization else anonymous()
        except Unauthenticated:
            return None
        attrs = registry_attributes(user, RegistryAction.PULL, repo.namespace, repo.name)
        if not services.authz.authorize(attrs).allowed:
            return None
        pulled = self.puller.find(repo.namespace, repo.name, digest, tag)
        if pulled is None or self.puller.policy_refusal(repo.namespace, pulled):
            return None
        if mark:
            self.puller.mark_pulled(pulled, services.clock())
        return pulled

    def resolve(
        self, repo: RepoKey, digest: str | None, tag: str | None, mark: bool
    ) -> PulledManifest:
        """For an authorized caller: the manifest, or the error saying why there is none."""
        pulled = self.puller.find(repo.namespace, repo.name, digest, tag)
        if pulled is None:
            self.manifests.get(repo, digest, tag)  # raises NameUnknown / ManifestUnknown
            pulled = self.puller.find(repo.namespace, repo.name, digest, tag)
            if pulled is None:  # gone again between the two reads
                raise ManifestUnknown(f"manifest {tag or digest} not found in {repo}")
        reason = self.puller.policy_refusal(repo.namespace, pulled)
        if reason:
            raise RegistryError("DENIED", reason)
        if mark:
            self.puller.mark_pulled(pulled, self.services.clock())
        return pulled


def manifest_headers(pulled: PulledManifest) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", pulled.media_type.encode("latin-1")),
        (b"content-length", str(len(pulled.content)).encode()),
        (b"docker-content-digest", pulled.digest.encode("latin-1")),
        API_VERSION_HEADER,
        SUPPORTS_SIGNATURES_HEADER,
    ]


def _authorization(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            return bytes(value).decode("latin-1")
    return None


def _target(scope: Scope) -> tuple[RepoKey, str | None, str | None] | None:
    raw = scope.get("raw_path")
    path = bytes(raw).split(b"?", 1)[0].decode("latin-1") if raw else str(scope.get("path", ""))
    match = _MANIFEST_PATH.match(path)
    if match is None:
        return None
    try:
        repo = parse_repository(match.group("name"))
        ref = parse_manifest_reference(unquote(match.group("arg")))
    except (ValueError, RegistryError, MetadataError):
        return None  # the general path explains what is wrong with the name
    return RepoKey(repo.namespace, repo.stream), str(ref.digest) if ref.digest else None, ref.tag


class FastPull:
    """Answers successful manifest GET/HEADs straight from ASGI; False means "not handled"."""

    def __init__(self, pulls: ManifestPulls) -> None:
        self.pulls = pulls

    async def try_serve(self, scope: Scope, send: Send) -> bool:
        method = scope.get("method")
        if scope["type"] != "http" or method not in ("GET", "HEAD") or scope.get(FAST_TRIED):
            return False
        target = _target(scope)
        if target is None:
            return False
        repo, digest, tag = target
        head = method == "HEAD"
        pulled = await run_in_threadpool(
            self.pulls.serve, _authorization(scope), repo, digest, tag, not head
        )
        if pulled is None:
            return False
        start = {"type": "http.response.start", "status": 200, "headers": manifest_headers(pulled)}
        await send(start)
        await send({"type": "http.response.body", "body": b"" if head else pulled.content})
        return True


def oci_asgi(services: Services, next_app: ASGIApp) -> ASGIApp:
    """`next_app` with successful manifest pulls answered before it is even called."""
    fast = FastPull(
        ManifestPulls(services, ManifestMetadata(services.db, services.settings.gc_grace_seconds))
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await fast.try_serve(scope, send):
            return
        if scope["type"] == "http":
            scope = {**scope, FAST_TRIED: True}
        await next_app(scope, receive, send)

    return app
