"""`InlinePullLayer`: successful manifest pulls answered in front of the router.

A manifest GET by tag is the registry's most frequent request. This layer runs the one
pull decision, `oci.pull.ManifestPull.pull`, before the router and answers it directly
when it yields a manifest. When that needs nothing that can wait — the credentials are in
the authentication cache, the metadata is SQLite (WAL readers never wait for writers) and
the authorizer decides locally (`ManifestPull.decides_inline`) — it runs right on the
event loop, without a thread hop (measured: twice the requests per second of the hop);
otherwise authentication and the pull run in one worker-thread hop
(`oci.gate.RegistryGate.run_as`, as the router's dispatcher does), so cluster mode and
PostgreSQL never decide on the event loop. The layer makes no decision of its own:
whatever `pull` refuses goes on to the router unchanged (with the caller it authenticated
remembered on the request), where the dispatcher runs the same `pull` (the route's
`oci.pipeline.PullReview`) and `oci.manifests.get_manifest` renders the refusal. Refused
credentials and unexpected exceptions are rendered here by `oci.errors.render`, like any
other `/v2/` error. Composed in `server.build_app` (docs/architecture.md, "Request flow").
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.content.reference import parse_manifest_reference, parse_repository
from imageregistry.metadata.manifest_pull import PulledManifest
from imageregistry.metadata.registry import MetadataError, RepoKey
from imageregistry.notifications.notifier import Notifier
from imageregistry.oci import notify
from imageregistry.oci.conditional import digest_etag, etag_matches
from imageregistry.oci.errors import RegistryError, render
from imageregistry.oci.gate import RegistryGate
from imageregistry.oci.pull import (
    API_VERSION_HEADER,
    SUPPORTS_SIGNATURES_HEADER,
    ManifestPull,
    manifest_headers,
)

_MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<arg>[^/]+)$")
_TARGET_CACHE_LIMIT = 1024
Target = tuple[RepoKey, str | None, str | None]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _target(scope: Scope) -> Target | None:
    raw = scope.get("raw_path")
    path = bytes(raw).split(b"?", 1)[0].decode("latin-1") if raw else str(scope.get("path", ""))
    match = _MANIFEST_PATH.match(path)
    if match is None:
        return None
    try:
        repo = parse_repository(match.group("name"))
        ref = parse_manifest_reference(unquote(match.group("arg")))
    except (ValueError, RegistryError, MetadataError):
        return None  # the router explains what is wrong with the name
    return RepoKey(repo.namespace, repo.stream), str(ref.digest) if ref.digest else None, ref.tag


class InlinePullLayer:
    """ASGI middleware; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        pull: ManifestPull,
        gate: RegistryGate,
        notifier: Notifier | None,
    ) -> None:
        self.app = app
        self.pull = pull
        self.gate = gate
        self.notifier = notifier
        # path -> what it names: a client pulls the same few tags over and over, and
        # parsing and checking the name is a good part of this layer's own time
        self._targets: dict[Any, Target | None] = {}

    def _target(self, scope: Scope) -> Target | None:
        key = scope.get("raw_path") or scope.get("path", "")
        try:
            return self._targets[key]
        except KeyError:
            pass
        if len(self._targets) >= _TARGET_CACHE_LIMIT:
            self._targets.clear()
        target = self._targets[key] = _target(scope)
        return target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and "/manifests/" in scope["path"]
        ):
            try:
                if await self._answer(scope, send):
                    return
            except Exception as exc:  # before anything was sent: the surface's own envelope
                await render(exc, Request(scope))(scope, receive, _with_v2_headers(send))
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        """Answer the pull when `pull` yields the manifest; False: hand it to the router."""
        target = self._target(scope)
        if target is None:
            return False
        repo, digest, tag = target
        head, pull = scope["method"] == "HEAD", self.pull
        user = None
        if pull.decides_inline:
            user = self.gate.authn.cached(_header(scope, b"authorization"))
        if user is not None:
            pulled = pull.pull(user, repo, digest, tag, record=not head, on_loop=True)
        else:
            user, pulled = await self.gate.run_as(
                Request(scope),
                RegistryAction.PULL,
                repo,
                lambda user: pull.pull(user, repo, digest, tag, record=not head, explain=False),
            )
        if not isinstance(pulled, PulledManifest):
            return False
        if etag_matches(_header(scope, b"if-none-match"), digest_etag(pulled.digest)):
            headers, status, body = manifest_headers(pulled, body=False), 304, b""
        else:
            headers, status, body = manifest_headers(pulled), 200, b"" if head else pulled.content
            if self.notifier is not None:  # GET and HEAD, as distribution reports them
                size = len(pulled.content)
                notify.manifest_pulled(
                    self.notifier, scope, user, repo, pulled.digest, pulled.media_type, size, tag
                )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


def _with_v2_headers(send: Send) -> Send:
    """The headers the router and `SignatureHeaderMiddleware` add to every `/v2/` answer."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), API_VERSION_HEADER, SUPPORTS_SIGNATURES_HEADER]
            message = {**message, "headers": headers}
        await send(message)

    return sending
