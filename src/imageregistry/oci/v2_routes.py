"""The `/v2/` surface: its route table (`V2_ROUTES`) and its dispatcher (`OciDispatcher`).

Every route of OCI distribution-spec v1.1 is one `Route` below, each method of it one
`Endpoint` naming its handler and the access it needs; `OciDispatcher` runs the chain of
`oci.pipeline` for each request (docs/architecture.md#request-pipelines). Repository names
contain `/`, so routing is done on the *raw* request path rather than by Starlette's
decoded path parameters: a percent-encoded or dot-dot name can then never be normalised
into a different repository (it is `NAME_INVALID`), while the last segment (a digest, tag
or upload id) is percent-decoded. `registry_routes` mounts the dispatcher at `/v2` after
extra routes (the signature extension's, `oci.extension_routes`); `build_registry` is the
one place in `oci` that takes the server's `Services` apart (docs/architecture.md#wiring).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.content.push import ManifestPusher
from imageregistry.content.reference import InvalidName, Repository, parse_repository
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.registry_manifests import ManifestMetadata
from imageregistry.oci import blobs, manifests, referrers, tags, uploads
from imageregistry.oci.context import Ctx, Registry
from imageregistry.oci.errors import RegistryError, render
from imageregistry.oci.gate import Origin, RegistryGate
from imageregistry.oci.pipeline import (
    AUTHENTICATED,
    PUBLIC,
    Endpoint,
    PrefixRoute,
    PullReview,
    Review,
    ReviewByReference,
    Route,
    authorize,
    find_endpoint,
    raw_path,
)
from imageregistry.oci.pull import ManifestPull
from imageregistry.oci.token import TokenIssuer, token_endpoint
from imageregistry.services import Services

PULL, PUSH = RegistryAction.PULL, RegistryAction.PUSH
_NAME = r"^/v2/(?P<name>.+)"
_ARG = r"(?P<arg>[^/]+)$"


async def ping(_ctx: Ctx) -> Response:
    """`GET /v2/`: the caller is logged in (the dispatcher answered 401 otherwise)."""
    return JSONResponse({})


async def token(ctx: Ctx) -> Response:
    return await token_endpoint(ctx.request, ctx.registry.tokens)


_BLOB = Route(
    "/v2/{name}/blobs/{digest}",
    re.compile(_NAME + r"/blobs/" + _ARG),
    {
        "GET": Endpoint(blobs.get_blob, Review(PULL)),
        "HEAD": Endpoint(blobs.get_blob, Review(PULL)),
        "DELETE": Endpoint(blobs.delete_blob, Review(RegistryAction.DELETE_DIGEST)),
    },
)

# Order matters: the first match wins (`blobs/uploads/` must win over `blobs/<digest>`).
V2_ROUTES: tuple[Route, ...] = (
    Route(
        "/v2/",
        re.compile(r"\A/v2/?\Z"),
        {"GET": Endpoint(ping, AUTHENTICATED), "HEAD": Endpoint(ping, AUTHENTICATED)},
    ),
    Route(
        "/v2/token",
        re.compile(r"\A/v2/token\Z"),
        {
            "GET": Endpoint(token, PUBLIC),
            "HEAD": Endpoint(token, PUBLIC),
            "POST": Endpoint(token, PUBLIC),
        },
    ),
    Route(
        "/v2/_catalog",
        re.compile(r"\A/v2/_catalog\Z"),
        {
            "GET": Endpoint(tags.catalog, Review(RegistryAction.CATALOG)),
            "HEAD": Endpoint(tags.catalog, Review(RegistryAction.CATALOG)),
        },
    ),
    Route(
        "/v2/{name}/tags/list",
        re.compile(_NAME + r"/tags/list$"),
        {"GET": Endpoint(tags.list_tags, Review(PULL))},
    ),
    Route(
        "/v2/{name}/manifests/{reference}",
        re.compile(_NAME + r"/manifests/" + _ARG),
        {
            "GET": Endpoint(manifests.get_manifest, PullReview()),
            "HEAD": Endpoint(manifests.get_manifest, PullReview()),
            # A pushed cosign signature also needs the signing right (`content.push`).
            "PUT": Endpoint(manifests.put_manifest, Review(PUSH), (RegistryAction.SIGN,)),
            "DELETE": Endpoint(
                manifests.delete_manifest,
                ReviewByReference(
                    tag=RegistryAction.DELETE_TAG, digest=RegistryAction.DELETE_DIGEST
                ),
            ),
        },
    ),
    Route(
        "/v2/{name}/blobs/uploads/",
        re.compile(_NAME + r"/blobs/uploads/?$"),
        # A cross-repository mount also needs pull on its source (`?from=`); without it
        # the POST opens a normal upload session.
        {"POST": Endpoint(uploads.start_upload, Review(PUSH), (PULL,))},
    ),
    Route(
        "/v2/{name}/blobs/uploads/{uuid}",
        re.compile(_NAME + r"/blobs/uploads/" + _ARG),
        {
            "GET": Endpoint(uploads.upload_status, Review(PUSH)),
            "PATCH": Endpoint(uploads.patch_upload, Review(PUSH)),
            "PUT": Endpoint(uploads.put_upload, Review(PUSH)),
            "DELETE": Endpoint(uploads.cancel_upload, Review(PUSH)),
        },
    ),
    _BLOB,
    Route(
        "/v2/{name}/referrers/{digest}",
        re.compile(_NAME + r"/referrers/" + _ARG),
        {"GET": Endpoint(referrers.list_referrers, Review(PULL))},
    ),
)


class OciDispatcher:
    """The `/v2/` chain: route → authorization of the declared access → handler →
    `oci.errors.render`; every answer, errors included, carries
    `Docker-Distribution-API-Version` and the surface's extra headers."""

    def __init__(self, registry: Registry, headers: Mapping[str, str]) -> None:
        self.registry = registry
        self.headers = {"Docker-Distribution-API-Version": "registry/2.0", **headers}

    async def handle(self, request: Request) -> Response:
        try:
            response = await self._dispatch(request)
        except Exception as exc:
            response = render(exc, request)  # the surface's one error renderer
        response.headers.update(self.headers)
        return response

    async def _dispatch(self, request: Request) -> Response:
        path = raw_path(request)
        route, matched, endpoint = find_endpoint(V2_ROUTES, request, path, "registry")
        repo = None
        if route.names_repository:
            parsed = _repository(request, matched.group("name"), route)
            repo = RepoKey(parsed.namespace, parsed.stream)
        arg = unquote(matched.groupdict().get("arg") or "")
        registry = self.registry
        # Where a request's route template, declared access and outcome are all known.
        grant = await authorize(registry.gate, registry.pull, request, endpoint.access, repo, arg)
        ctx = Ctx(request, registry, grant.user, repo, arg, endpoint.secondary, grant.pulled)
        return await endpoint.handler(ctx)


def _repository(request: Request, name: str, route: Route) -> Repository:
    """The validated repository; a bad name is `NAME_INVALID` (400, the message naming the
    rule) — except on a blob HEAD, which answers 404: an answer to HEAD has no body to
    carry the message, and a push client treats 404 as "upload it", so its next request
    (the upload POST) shows the user the rule instead of a bare "400 Bad Request"."""
    try:
        return parse_repository(name)
    except InvalidName as exc:
        if request.method == "HEAD" and route is _BLOB:
            raise RegistryError("NAME_INVALID", str(exc), status=404) from None
        raise


def build_registry(services: Services, pull: ManifestPull | None = None) -> Registry:
    """The OCI surface's one `Registry`, taken apart from the server's `Services` here and
    nowhere else in `oci` (docs/architecture.md#wiring); `pull`: the application's one
    `ManifestPull` (built here when not given)."""
    settings = services.settings
    if pull is None:
        pull = ManifestPull(services.db, services.authz, services.pull_times, services.clock)
    origin = Origin(public_url=settings.public_url, listen=settings.listen)
    manifests = ManifestMetadata(services.db)
    return Registry(
        gate=RegistryGate(
            services.authn,
            services.authz,
            origin,
            cluster_namespaces=settings.auth_mode == "kubernetes",
        ),
        meta=RegistryMetadata(services.db),
        manifests=manifests,
        pusher=ManifestPusher(services.blobs, manifests),
        pull=pull,
        db=services.db,
        blobs=services.blobs,
        clock=services.clock,
        tokens=TokenIssuer(
            authn=services.authn,
            authz=services.authz,
            refresh_tokens=services.refresh_tokens,
            clock=services.clock,
            token_ttl_seconds=settings.token_ttl_seconds,
            origin=origin,
        ),
        upload_max_open_per_user=settings.upload_max_open_per_user,
        upload_max_staged_bytes_per_user=settings.upload_max_staged_bytes_per_user,
        blob_links=services.blob_links,
        notifier=services.notifier,
    )


def oci_routes(
    services: Services,
    extensions: Sequence[BaseRoute] = (),
    headers: Mapping[str, str] | None = None,
    pull: ManifestPull | None = None,
) -> list[BaseRoute]:
    """`registry_routes` over a `Registry` built from `services` (`pull`: as in
    `build_registry`)."""
    return registry_routes(build_registry(services, pull), extensions, headers)


def registry_routes(
    registry: Registry,
    extensions: Sequence[BaseRoute] = (),
    headers: Mapping[str, str] | None = None,
) -> list[BaseRoute]:
    """Routes of the registry: `extensions` (e.g. the signature extension routes) then
    `/v2/`; `headers` are added to every `/v2/` answer (e.g.
    `X-Registry-Supports-Signatures: 1` once that extension is mounted)."""
    dispatcher = OciDispatcher(registry, headers or {})
    return [
        *extensions,
        PrefixRoute("/v2", dispatcher.handle),
    ]
