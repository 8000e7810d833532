"""The one manifest pull: `ManifestPull.pull(user, repository, reference)`.

Every manifest GET/HEAD is decided here, whichever way it arrives (the `/v2/` dispatcher,
for the route's `oci.pipeline.PullReview`, or the layer that answers on the event loop,
`oci.inline_pull`): authorize the pull with the server's authorizer, look the manifest up
(one statement, `metadata.manifest_pull`, which also reads the namespace signature policy
and, with the local RBAC authorizer, the RBAC version the decision is taken at), apply the
signature policy and note the pull time (no I/O: `metadata.manifest_pull.PullTimes`
writes them in batches). The answer is the manifest or a `Refused` saying why, so each
caller renders the same outcome its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from imageregistry.auth.authorizer import (
    Authorizer,
    MastersOnlyAuthorizer,
    RegistryAction,
    registry_attributes,
)
from imageregistry.auth.identity import UserInfo
from imageregistry.auth.rbac_store import VERSION_COLUMNS, RbacAuthorizer
from imageregistry.metadata.db import Database
from imageregistry.metadata.manifest_pull import ManifestPuller, PulledManifest, PullTimes
from imageregistry.metadata.registry import MetadataError, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata, ManifestUnknown
from imageregistry.observability.requestinfo import note_decision, note_user
from imageregistry.oci.conditional import digest_etag
from imageregistry.oci.errors import RegistryError

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")
SUPPORTS_SIGNATURES_HEADER = (b"x-registry-supports-signatures", b"1")


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a pull is not answered with a manifest.

    `denied`: the authorizer said no (`reason` is its reason); the caller answers 401 with
    a challenge to an anonymous caller, 403 `DENIED` otherwise. Else `error` is the OCI
    error to answer (`NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, or the signature policy's
    `DENIED`)."""

    denied: bool
    reason: str = ""
    error: Exception | None = None


class ManifestPull:
    """The pull decision and lookup; one per application (its SQLite connection for the
    event loop is closed by `close`, from the app's lifespan)."""

    def __init__(
        self,
        db: Database,
        authz: Authorizer,
        pull_times: PullTimes,
        clock: Callable[[], datetime],
    ) -> None:
        self.authz = authz
        self.clock = clock
        self._manifests = ManifestMetadata(db)
        self._rbac = authz if isinstance(authz, RbacAuthorizer) else None
        columns = VERSION_COLUMNS if self._rbac is not None else ()
        self.puller = ManifestPuller(db, pull_times, columns)
        # Whether a pull may run on the event loop: the decision reads nothing that can
        # wait (SQLite in WAL mode never blocks a reader, the local authorizers decide in
        # memory or from that same database). A remote authorizer (SubjectAccessReview in
        # cluster mode) and PostgreSQL round trips always run in a worker thread.
        self.decides_inline = db.is_sqlite and isinstance(
            authz, RbacAuthorizer | MastersOnlyAuthorizer
        )

    def pull(
        self,
        user: UserInfo,
        repo: RepoKey,
        digest: str | None,
        tag: str | None,
        *,
        record: bool,
        on_loop: bool = False,
        explain: bool = True,
    ) -> PulledManifest | Refused:
        """The manifest `user` pulls by `tag` (or `digest`), or why not.

        `record`: note the pull time (a GET; a HEAD does not). `on_loop`: the caller is the
        event loop thread (only when `decides_inline`). A miss is explained (which name is
        unknown) only with `explain` and off the loop; otherwise its `Refused` has no
        `error` (the caller hands the request to the router, which explains it)."""
        attrs = registry_attributes(user, RegistryAction.PULL, repo.namespace, repo.name)
        note_user(user)
        found = self.puller.find(repo.namespace, repo.name, digest, tag, on_loop=on_loop)
        if found is not None and self._rbac is not None:
            decision = self._rbac.decide_at(attrs, found.extras)
            allowed, reason = decision.allowed, decision.reason
        else:
            verdict = self.authz.authorize(attrs)
            allowed, reason = verdict.allowed, verdict.reason
        note_decision(attrs, allowed, reason)
        if not allowed:
            return Refused(denied=True, reason=reason)
        if found is None:
            if on_loop or not explain:
                return Refused(denied=False)
            explained = self._explain_miss(repo, digest, tag)
            if isinstance(explained, Refused):
                return explained
            found = explained
        refusal = self.puller.policy_refusal(repo.namespace, found)
        if refusal:
            return Refused(denied=False, error=RegistryError("DENIED", refusal))
        if record:
            self.puller.mark_pulled(found, self.clock())
        return found

    def _explain_miss(
        self, repo: RepoKey, digest: str | None, tag: str | None
    ) -> PulledManifest | Refused:
        """Why the pull statement found nothing (unknown repository, tag or manifest), or
        the manifest when it appeared meanwhile."""
        try:
            self._manifests.get(repo, digest, tag)  # raises NameUnknown / ManifestUnknown
        except MetadataError as exc:
            return Refused(denied=False, error=exc)
        found = self.puller.find(repo.namespace, repo.name, digest, tag)
        if found is None:  # gone again between the two reads
            missing = ManifestUnknown(f"manifest {tag or digest} not found in {repo}")
            return Refused(denied=False, error=missing)
        return found

    def close(self) -> None:
        """Close the event loop's own SQLite connection (from the app's lifespan)."""
        self.puller.close()


_HEADERS_LIMIT = 1024
_headers: dict[tuple[str, str, int, bool], tuple[tuple[bytes, bytes], ...]] = {}


def manifest_headers(pulled: PulledManifest, *, body: bool = True) -> list[tuple[bytes, bytes]]:
    """Headers of a manifest answer; without ``body`` (a 304) no entity headers. Made once
    per manifest and kept (bounded): the same few manifests are pulled over and over. A new
    list each time, so the caller may extend it."""
    key = (pulled.digest, pulled.media_type, len(pulled.content), body)
    made = _headers.get(key)
    if made is None:
        if len(_headers) >= _HEADERS_LIMIT:
            _headers.clear()
        made = _headers[key] = tuple(_manifest_headers(pulled, body))
    return list(made)


def _manifest_headers(pulled: PulledManifest, body: bool) -> list[tuple[bytes, bytes]]:
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
