"""Who asked what, from where: the small request-scoped record every main-port request
carries, filled in by each surface's one authentication and authorization seam.

`MetricsMiddleware` (the single pass every main-port request takes) makes one
`RequestInfo` per request and puts it in a context variable; the seams note the caller
(`note_user`, `note_unauthenticated`) and the request's own authorization decision
(`note_decision`: the first one wins, so a secondary check such as a mount's pull of the
source never replaces the push it belongs to). Readers — the audit log
(`observability.audit`), and anything else that must name the actor and the source of a
change — take it with `current_info()` and read it; none of them is imported here, so the
seams cost a context-variable read and a few attribute stores. Worker threads that
Starlette starts copy the context, and with it the reference to the same record.

Header-derived values (`source_ips`, `user_agent`) are computed when read, from the
headers the middleware kept in its one pass over them (`source`) or else from the ASGI
scope, so a request nobody audits never parses them.
"""

from __future__ import annotations

import base64
import binascii
from contextvars import ContextVar
from typing import Any, Protocol

from imageregistry.auth.identity import (
    ANONYMOUS_USER,
    GROUP_UNAUTHENTICATED,
    Attributes,
    UserInfo,
)


class DecisionListener(Protocol):
    """Told when a request's own authorization decision is known (the audit log decides
    its level then, so it can write the `RequestReceived` stage and keep the body), and
    given the decoded request object."""

    def decided(self, info: RequestInfo) -> None: ...

    def request_object(self, info: RequestInfo, body: Any) -> None: ...


# The headers the source fields are made of (`RequestInfo.source_and_agent`).
SOURCE_HEADERS = frozenset((b"user-agent", b"x-forwarded-for", b"x-real-ip"))


class RequestInfo:
    """One main-port request: its id, what it asked, who asked and what they were told."""

    __slots__ = (
        "allowed",
        "attributes",
        "audit",
        "authenticated",
        "impersonated",
        "listener",
        "object_name",
        "reason",
        "received",
        "request_id",
        "scope",
        "source",
        "user",
    )

    def __init__(self, scope: Any, request_id: str, received: float) -> None:
        self.scope = scope
        self.request_id = request_id
        self.received = received  # seconds since the epoch
        self.user: UserInfo | None = None  # as authenticated (before impersonation)
        self.impersonated: UserInfo | None = None  # the identity the request acts as, if other
        self.authenticated = True  # False: credentials were presented and refused
        self.attributes: Attributes | None = None  # the request's own access review
        self.allowed: bool | None = None  # its outcome; None: not decided
        self.reason = ""
        self.object_name = ""  # a create's object name, from its body (its path has none)
        self.listener: DecisionListener | None = None
        self.audit: Any = None  # private state of the audit log
        # the request's `SOURCE_HEADERS` in order, when the middleware kept them
        self.source: list[tuple[bytes, bytes]] | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def uri(self) -> str:
        """The request URI as the client sent it (path and query)."""
        raw = self.scope.get("raw_path")
        path = bytes(raw).decode("latin-1") if raw else str(self.scope.get("path", ""))
        query = self.scope.get("query_string") or b""
        return f"{path}?{bytes(query).decode('latin-1')}" if query else path

    @property
    def path(self) -> str:
        return str(self.scope.get("path", ""))

    @property
    def acting_user(self) -> UserInfo | None:
        """The identity the request acts as: the impersonated one, else the caller."""
        return self.impersonated or self.user

    @property
    def user_agent(self) -> str:
        return self.source_and_agent()[1]

    @property
    def source_ips(self) -> list[str]:
        return self.source_and_agent()[0]

    def source_and_agent(self) -> tuple[list[str], str]:
        """The source addresses as kube-apiserver lists them — `X-Forwarded-For`, then
        `X-Real-Ip` unless already listed, then the connection's address unless it is the
        last one listed (all but the connection's address are the client's word) — and the
        `User-Agent`, in one pass over the headers."""
        forwarded: list[str] = []
        real = agent = ""
        headers = self.source if self.source is not None else self.scope["headers"]
        for name, value in headers:
            if name == b"user-agent":
                agent = bytes(value).decode("latin-1")
            elif name == b"x-forwarded-for":
                text = bytes(value).decode("latin-1")
                forwarded.extend(p.strip() for p in text.split(",") if p.strip())
            elif name == b"x-real-ip":
                real = bytes(value).decode("latin-1").strip()
        ips = forwarded[:16]
        if real and real not in ips:
            ips.append(real)
        client = self.scope.get("client")
        peer = str(client[0]) if client else ""
        if peer and (not ips or ips[-1] != peer):
            ips.append(peer)
        return ips, agent


current: ContextVar[RequestInfo | None] = ContextVar("imageregistry_request_info", default=None)


def current_info() -> RequestInfo | None:
    return current.get()


def note_user(user: UserInfo, impersonated: UserInfo | None = None) -> None:
    """The caller as authenticated, and the identity it impersonates (if any)."""
    info = current.get()
    if info is not None:
        info.user = user
        info.impersonated = impersonated if impersonated is not user else None


def note_unauthenticated(authorization: str | None, claimed: str | None = None) -> UserInfo:
    """Credentials were presented and refused. The request is recorded under the user
    name a Basic header (or the OAuth2 form's `username`, `claimed`) claims, never
    anything else from them, in `system:unauthenticated` only; a Bearer token or a
    malformed header is recorded as `system:anonymous`. Returns that identity."""
    name = _checked_name(claimed) if claimed is not None else _claimed_name(authorization)
    user = UserInfo(username=name, groups=(GROUP_UNAUTHENTICATED,))
    info = current.get()
    if info is not None:
        info.user = user
        info.impersonated = None
        info.authenticated = False
    return user


def note_decision(attrs: Attributes, allowed: bool | None, reason: str = "") -> None:
    """The request's own access review and its outcome (`None`: never decided, e.g. the
    credentials were refused first). Only the first decision of a request counts."""
    info = current.get()
    if info is None or info.attributes is not None:
        return
    info.attributes = attrs
    info.allowed = allowed
    info.reason = reason
    if info.listener is not None:
        info.listener.decided(info)


def note_request_object(body: Any) -> None:
    """The API object a request sent, decoded (JSON or protobuf), for an audit log that
    keeps request bodies; nothing is kept otherwise."""
    info = current.get()
    if info is not None and info.listener is not None:
        info.listener.request_object(info, body)


def _claimed_name(authorization: str | None) -> str:
    if not authorization:
        return ANONYMOUS_USER
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return ANONYMOUS_USER
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ANONYMOUS_USER
    return _checked_name(decoded.partition(":")[0])


def _checked_name(name: str) -> str:
    if not name or len(name) > 253 or _looks_like_token(name):
        return ANONYMOUS_USER
    return name


def _looks_like_token(name: str) -> bool:
    """A token pasted into the user-name field must not reach a log."""
    from imageregistry.auth.tokens import OPAQUE_PREFIX, REFRESH_PREFIX

    # every JWT starts with the base64 of '{"'
    return name.startswith((OPAQUE_PREFIX, REFRESH_PREFIX, "eyJ"))
