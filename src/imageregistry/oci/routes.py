"""The `/v2/` surface: one dispatcher matching OCI distribution-spec v1.1 endpoints.

Repository names contain `/`, so routing is done here on the *raw* request path rather
than by Starlette's decoded path parameters: a percent-encoded or dot-dot name can then
never be normalised into a different repository (it is `NAME_INVALID`), while the last
segment (a digest, tag or upload id) is percent-decoded. Every handler raises; this
module renders `RegistryError`s and the domain errors of the layers below in one place
and adds `Docker-Distribution-API-Version` to every answer. `oci_routes` accepts extra
routes (the signature extension `/extensions/v2/...` plugs in there).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from imageregistry.content.reference import InvalidName, Repository, parse_repository
from imageregistry.metadata.registry import RepoKey
from imageregistry.oci import blobs, manifests, referrers, tags, uploads
from imageregistry.oci.context import Ctx, Registry
from imageregistry.oci.errors import RegistryError, render
from imageregistry.oci.gate import challenge_headers
from imageregistry.oci.pull import ManifestPull
from imageregistry.oci.token import token_endpoint
from imageregistry.services import Services

Handler = Callable[[Ctx], Awaitable[Response]]
_NAME = r"^/v2/(?P<name>.+)"
_ARG = r"(?P<arg>[^/]+)$"
_BLOB = re.compile(_NAME + r"/blobs/" + _ARG)

# Order matters: `blobs/uploads/` must win over `blobs/<digest>`.
ENDPOINTS: tuple[tuple[re.Pattern[str], dict[str, Handler]], ...] = (
    (re.compile(_NAME + r"/tags/list$"), {"GET": tags.list_tags}),
    (
        re.compile(_NAME + r"/manifests/" + _ARG),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (re.compile(_NAME + r"/blobs/uploads/?$"), {"POST": uploads.start_upload}),
    (
        re.compile(_NAME + r"/blobs/uploads/" + _ARG),
        {
            "GET": uploads.upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.put_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    (_BLOB, {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob}),
    (re.compile(_NAME + r"/referrers/" + _ARG), {"GET": referrers.list_referrers}),
)


class PrefixRoute(Route):
    """Every request at `prefix` or below it, whatever its method or decoded path, so the
    endpoint answers unknown methods and paths with the OCI envelope. Starlette's
    `{rest:path}` pattern stops at a newline (`/v2/a%0a/b` would get a plain-text 404)
    and its method check answers a plain-text 405."""

    def __init__(self, prefix: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(prefix, endpoint)
        self.methods = None  # (Starlette defaults a function endpoint to GET only)
        self.path_regex = re.compile(rf"^{re.escape(prefix)}(?:/.*)?$", re.DOTALL)


def raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes | bytearray) and raw:
        return bytes(raw).split(b"?", 1)[0].decode("latin-1")
    return request.url.path


class Dispatcher:
    def __init__(self, registry: Registry, headers: Mapping[str, str]) -> None:
        self.registry = registry
        self.headers = {"Docker-Distribution-API-Version": "registry/2.0", **headers}

    async def handle(self, request: Request) -> Response:
        try:
            response = await self._dispatch(request)
        except Exception as exc:
            response = render(exc, request)
        response.headers.update(self.headers)
        return response

    async def _dispatch(self, request: Request) -> Response:
        path = raw_path(request)
        if path in ("/v2", "/v2/"):
            if request.method not in ("GET", "HEAD"):
                raise unsupported(request, allow=("GET", "HEAD"))
            if (await self.registry.gate.user(request)).is_anonymous:
                raise RegistryError(
                    "UNAUTHORIZED",
                    headers=challenge_headers(request, self.registry.services, None, None),
                )
            return JSONResponse({})
        if path == "/v2/token":
            if request.method not in ("GET", "HEAD", "POST"):
                raise unsupported(request, allow=("GET", "HEAD", "POST"))
            return await token_endpoint(request, self.registry.services)
        if path == "/v2/_catalog":
            if request.method not in ("GET", "HEAD"):
                raise unsupported(request)
            return await tags.catalog(request, self.registry)
        for pattern, handlers in ENDPOINTS:
            match = pattern.match(path)
            if match is None:
                continue
            handler = handlers.get(request.method)
            if handler is None:
                raise unsupported(request, allow=sorted(handlers))
            repo = _repository(request, match.group("name"), pattern)
            arg = unquote(match.groupdict().get("arg") or "")
            ctx = Ctx(request, self.registry, RepoKey(repo.namespace, repo.stream), arg)
            return await handler(ctx)
        raise RegistryError("NAME_UNKNOWN", f"no registry endpoint at {path[:200]!r}")


def _repository(request: Request, name: str, pattern: re.Pattern[str]) -> Repository:
    """The validated repository; a bad name is `NAME_INVALID` (400, the message naming the
    rule) — except on a blob HEAD, which answers 404: an answer to HEAD has no body to
    carry the message, and a push client treats 404 as "upload it", so its next request
    (the upload POST) shows the user the rule instead of a bare "400 Bad Request"."""
    try:
        return parse_repository(name)
    except InvalidName as exc:
        if request.method == "HEAD" and pattern is _BLOB:
            raise RegistryError("NAME_INVALID", str(exc), status=404) from None
        raise


def unsupported(request: Request, allow: Sequence[str] = ("GET",)) -> RegistryError:
    return RegistryError(
        "UNSUPPORTED",
        f"method {request.method} is not supported here",
        headers={"Allow": ", ".join(allow)},
    )


def oci_routes(
    services: Services,
    extensions: Sequence[BaseRoute] = (),
    headers: Mapping[str, str] | None = None,
    pull: ManifestPull | None = None,
) -> list[BaseRoute]:
    """Routes of the registry: `extensions` (e.g. the signature extension routes) then
    `/v2/`; `headers` are added to every `/v2/` answer (e.g.
    `X-Registry-Supports-Signatures: 1` once that extension is mounted); `pull` is the
    application's one manifest pull (`server.build_app` shares it with the inline layer)."""
    dispatcher = Dispatcher(Registry.build(services, pull), headers or {})
    return [
        *extensions,
        PrefixRoute("/v2", dispatcher.handle),
    ]
