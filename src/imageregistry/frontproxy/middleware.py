"""Every request passes here first: the front proxy's user is taken, its headers removed.

A request whose ASGI scope carries a TLS client chain (`scope["extensions"]["tls"]`, which
`frontproxy/listener.py` sets) that `RequestHeaderAuthenticator` accepts is the
aggregator's: the user named by `X-Remote-User` & co. is stored in the scope under
`USER_KEY` and `identify` (`apiserver/request_context.py`) uses it instead of the request's
own credentials. Whatever the connection, the contract's headers are then removed from
the scope, so no handler can read a forged `X-Remote-User`, `X-Remote-Group` or
`X-Remote-Extra-*`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from imageregistry.auth.identity import UserInfo
from imageregistry.auth.requestheader import HeaderNames, RequestHeaderAuthenticator

USER_KEY = "imageregistry.front_proxy_user"


def front_proxy_user(scope: Mapping[str, Any]) -> UserInfo | None:
    """The user the front proxy authenticated for this request, or None."""
    user = scope.get(USER_KEY)
    return user if isinstance(user, UserInfo) else None


def tls_client_chain(scope: Mapping[str, Any]) -> Sequence[str]:
    """The client certificate chain (PEM, leaf first) of the ASGI TLS extension, or ()."""
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls") if isinstance(extensions, Mapping) else None
    chain = tls.get("client_cert_chain") if isinstance(tls, Mapping) else None
    if not isinstance(chain, Sequence) or isinstance(chain, str | bytes):
        return ()
    return tuple(c for c in chain if isinstance(c, str))


class FrontProxyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        headers: HeaderNames,
        authenticator: RequestHeaderAuthenticator | None = None,
    ) -> None:
        self.app = app
        self.headers = headers
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers") or []
        user = None
        if self.authenticator is not None:
            chain = tls_client_chain(scope)
            if chain:
                user = self.authenticator.authenticate(chain, raw)
        stripped = self.headers.strip(raw)
        if stripped is not None or user is not None:
            scope = dict(scope)
            if stripped is not None:
                scope["headers"] = stripped
            if user is not None:
                scope[USER_KEY] = user
        await self.app(scope, receive, send)
