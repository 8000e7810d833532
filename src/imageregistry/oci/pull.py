"""Manifest GET/HEAD in one worker-thread hop, and a raw ASGI fast path for it.

`ManifestPulls.serve` does everything a successful pull needs — authentication (cached
per process by `auth.authn`), the RBAC decision, the manifest lookup (one statement, see
`metadata.manifest_pull`, which also reads the namespace signature policy and the RBAC
version), the signature policy and noting the pull time (written later,
in batches, by `metadata.manifest_pull.PullTimes`) —
in one synchronous call, so a pull costs at most one hop off the event loop (none on the
common path, see `FastPull`). It answers None whenever anything is not simply "allowed
and found"; the general path (`manifests.get_manifest` through the Starlette router)
then repeats the steps one by one to render the exact OCI error (401 with a challenge, 403 `DENIED`,
`NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, the policy refusal).

`FastPull.try_serve` is that path at the ASGI level (`oci.signatures.
SignatureHeaderMiddleware` calls it before the router): successful manifest GET/HEADs are
answered directly, with the headers every `/v2/` answer carries; everything else goes on
to the router, marked so the fast attempt is not repeated.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.types import Scope, Send

from imageregistry.auth.authn import Unauthenticated
from imageregistry.auth.authorizer import RegistryAction, registry_attributes
from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.auth.identity import GROUP_MASTERS, Attributes, UserInfo
from imageregistry.auth.rbac_store import RBAC_RESOURCES, RbacAuthorizer, RbacSnapshot
from imageregistry.content.reference import parse_manifest_reference, parse_repository
from imageregistry.httpinput import client_host
from imageregistry.metadata.db import Database
from imageregistry.metadata.manifest_pull import ManifestPuller, PulledManifest
from imageregistry.metadata.registry import MetadataError, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata, ManifestUnknown
from imageregistry.observability.requestinfo import note_decision, note_user
from imageregistry.oci import notify
from imageregistry.oci.conditional import digest_etag, etag_matches
from imageregistry.oci.errors import RegistryError
from imageregistry.services import Services

FAST_TRIED = "imageregistry.fast_pull_tried"  # scope key: the fast path already said no
AUTH_FAILURE = "registry_auth_failure"  # request.state: the credentials the fast path refused
API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")
SUPPORTS_SIGNATURES_HEADER = (b"x-registry-supports-signatures", b"1")
_MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<arg>[^/]+)$")


# The RBAC data version as `auth.rbac_store.ObjectsRbacStore.version` reads it (newest
# change id per RBAC resource), read here inside the pull statement; keys are constants.
RBAC_VERSION_COLUMNS = tuple(
    f"(SELECT max(v.id) FROM changes v WHERE v.resource = '{key}')" for key in RBAC_RESOURCES
)


class RbacAtVersion:
    """RBAC decisions at the version the pull statement read, with the approach of
    `RbacAuthorizer`: `system:masters` needs nothing, everyone else is decided by an
    `RbacSnapshot` kept per process and replaced whenever the version moves. This saves
    the separate version query the authorizer would run, so a service account bound by a
    RoleBinding pulls as cheaply as a cluster admin."""

    def __init__(self, authorizer: RbacAuthorizer, db: Database) -> None:
        self.authorizer = authorizer
        self._db = db
        self._snapshot: RbacSnapshot | None = None

    def decide(self, attrs: Attributes, version: tuple[int, ...]) -> tuple[bool, str]:
        """(allowed, RBAC's reason)."""
        if GROUP_MASTERS in attrs.user.groups:
            return True, ""
        snapshot = self._snapshot
        if snapshot is None or snapshot.version != version:
            snapshot = self._snapshot = RbacSnapshot(self._db, version)
        decision = snapshot.authorize(attrs)
        return decision.allowed, decision.reason


class ManifestPulls:
    """The pull decision and lookup, shared by the fast path and the general handler."""

    def __init__(self, services: Services, manifests: ManifestMetadata) -> None:
        self.services = services
        self.manifests = manifests
        authz = services.authz
        if isinstance(authz, RbacAuthorizer):
            self.rbac: RbacAtVersion | None = RbacAtVersion(authz, services.db)
            self.puller = ManifestPuller(services.db, services.pull_times, RBAC_VERSION_COLUMNS)
        else:
            self.rbac = None
            self.puller = ManifestPuller(services.db, services.pull_times)

    def serve(
        self,
        authorization: str | None,
        source: str | None,
        repo: RepoKey,
        digest: str | None,
        tag: str | None,
        mark: bool,
    ) -> PulledManifest | Unauthenticated | None:
        """The manifest, when the caller may pull it and it exists; the authentication
        failure (the slow path reports it without checking the credentials again, so a
        wrong password costs one bcrypt); None otherwise."""
        return self.serve_as(authorization, source, repo, digest, tag, mark)[1]

    def serve_as(
        self,
        authorization: str | None,
        source: str | None,
        repo: RepoKey,
        digest: str | None,
        tag: str | None,
        mark: bool,
    ) -> tuple[UserInfo | None, PulledManifest | Unauthenticated | None]:
        """`serve`, and the caller it authenticated (None when it could not)."""
        try:
            user = self.services.authn.authenticate(authorization, source=source)
            pulled = self.decide(user, repo, digest, tag)
        except Unauthenticated as exc:
            return None, exc
        except ClusterUnavailable:
            return None, None  # the general path answers 503 with the reason
        if pulled is not None and mark:
            self.puller.mark_pulled(pulled, self.services.clock())
        return user, pulled

    def decide(
        self,
        user: UserInfo,
        repo: RepoKey,
        digest: str | None,
        tag: str | None,
        *,
        on_loop: bool = False,
    ) -> PulledManifest | None:
        """Authorize, look up and apply the signature policy (reads only, no writes)."""
        attrs = registry_attributes(user, RegistryAction.PULL, repo.namespace, repo.name)
        reason = ""
        if self.rbac is None:
            verdict = self.services.authz.authorize(attrs)
            if not verdict.allowed:
                return None
            reason = verdict.reason
        pulled = self.puller.find(repo.namespace, repo.name, digest, tag, on_loop=on_loop)
        if pulled is None:
            return None
        if self.rbac is not None:
            allowed, reason = self.rbac.decide(attrs, pulled.extras)
            if not allowed:
                return None
        if self.puller.policy_refusal(repo.namespace, pulled):
            return None
        # Only an answered pull is noted here; every other outcome is decided (and
        # noted) again by the general path.
        note_user(user)
        note_decision(attrs, True, reason)
        return pulled

    def inline_user(self, authorization: str | None) -> UserInfo | None:
        """The caller, when this pull may run on the event loop (see `FastPull`)."""
        return self.services.authn.cached(authorization) if self.services.db.is_sqlite else None

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


def manifest_headers(pulled: PulledManifest, *, body: bool = True) -> list[tuple[bytes, bytes]]:
    """Headers of a manifest answer; without ``body`` (a 304) no entity headers."""
    headers = [
        (b"docker-content-digest", pulled.digest.encode("latin-1")),
        (b"etag", digest_etag(pulled.digest).encode("latin-1")),
        API_VERSION_HEADER,
        SUPPORTS_SIGNATURES_HEADER,
    ]
    if body:
        headers.append((b"content-type", pulled.media_type.encode("latin-1")))
        headers.append((b"content-length", str(len(pulled.content)).encode()))
    return headers


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
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
    """Answers successful manifest GET/HEADs straight from ASGI; False means "not handled".

    On SQLite, when the credentials are already in the authentication cache, the pull runs
    on the event loop without any thread hop: what is left is the RBAC decision (memoised
    per RBAC version) and one indexed read statement, and WAL-mode readers never wait for
    writers, so that costs less than handing the work to a thread and back (measured: twice
    the requests per second). Everything that may wait — authenticating unseen credentials
    (database, ES256, bcrypt) and PostgreSQL round trips — runs in a worker thread; the pull
    time is only noted in memory here (`PullTimes`, flushed in batches).
    """

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
        head, authorization = method == "HEAD", _header(scope, b"authorization")
        pulls = self.pulls
        user = pulls.inline_user(authorization)
        if user is None:
            user, pulled = await run_in_threadpool(
                pulls.serve_as, authorization, client_host(scope), repo, digest, tag, not head
            )
            if isinstance(pulled, Unauthenticated):
                scope.setdefault("state", {})[AUTH_FAILURE] = pulled
                return False
        else:
            pulled = pulls.decide(user, repo, digest, tag, on_loop=True)
            if pulled is not None and not head:
                pulls.puller.mark_pulled(pulled, pulls.services.clock())  # no I/O
        if pulled is None:
            return False
        if etag_matches(_header(scope, b"if-none-match"), digest_etag(pulled.digest)):
            headers, status, body = manifest_headers(pulled, body=False), 304, b""
        else:
            headers, status, body = manifest_headers(pulled), 200, b"" if head else pulled.content
            notifier = pulls.services.notifier
            if notifier is not None:  # GET and HEAD, as distribution reports them
                size = len(pulled.content)
                notify.manifest_pulled(
                    notifier, scope, user, repo, pulled.digest, pulled.media_type, size, tag
                )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True
