"""The signature extension surface, `/extensions/v2/`: its route table (`EXTENSION_ROUTES`)
and its dispatcher (`SignatureDispatcher`).

The same chain as `/v2/` (`oci.pipeline`; docs/architecture.md#request-pipelines): the
method, then the route, the digest and the repository name are checked, the access the
route declares is authorized through the registry's gate, the handler
(`oci.signatures`) runs with an authorized `Ctx`, and any exception is rendered by
`oci.errors.render`. Unlike `/v2/`, an unsupported method is refused before the path is
looked at (every route of the surface answers the same methods), and answers carry no
`Docker-Distribution-API-Version` (containers/image does not ask for it here).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.content.reference import parse_repository
from imageregistry.metadata.registry import RepoKey
from imageregistry.oci.context import Ctx, Registry
from imageregistry.oci.errors import RegistryError, render
from imageregistry.oci.pipeline import (
    Endpoint,
    PrefixRoute,
    Review,
    Route,
    authorize,
    find_endpoint,
    raw_path,
    unsupported,
)
from imageregistry.oci.signatures import get_signatures, put_signature

EXTENSION_ROUTES: tuple[Route, ...] = (
    Route(
        "/extensions/v2/{name}/signatures/{digest}",
        re.compile(r"^/extensions/v2/(?P<name>.+)/signatures/(?P<arg>sha(?:256|512):[a-f0-9]+)$"),
        {
            "GET": Endpoint(get_signatures, Review(RegistryAction.PULL)),
            "HEAD": Endpoint(get_signatures, Review(RegistryAction.PULL)),
            "PUT": Endpoint(put_signature, Review(RegistryAction.SIGN)),
        },
    ),
)
METHODS = tuple(sorted({method for route in EXTENSION_ROUTES for method in route.endpoints}))
_DIGEST = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


class SignatureDispatcher:
    """The `/extensions/v2/` chain: method → route → authorization of the declared access
    → handler → `oci.errors.render`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def handle(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except Exception as exc:
            return render(exc, request)  # the surface's one error renderer

    async def _dispatch(self, request: Request) -> Response:
        if request.method not in METHODS:
            raise unsupported(request, METHODS)
        path = raw_path(request)
        _, matched, endpoint = find_endpoint(EXTENSION_ROUTES, request, path, "signature")
        digest = matched.group("arg")
        if not _DIGEST.match(digest):
            raise RegistryError("DIGEST_INVALID", f"{digest[:150]!r} is not a valid digest")
        parsed = parse_repository(matched.group("name"))
        repo = RepoKey(parsed.namespace, parsed.stream)
        registry = self.registry
        # Where a request's route template, declared access and outcome are all known.
        grant = await authorize(
            registry.gate, registry.pull, request, endpoint.access, repo, digest
        )
        ctx = Ctx(request, registry, grant.user, repo, digest, endpoint.secondary, grant.pulled)
        return await endpoint.handler(ctx)


def signature_routes(registry: Registry) -> list[BaseRoute]:
    """The `/extensions/v2/` routes over the app's one `Registry` (shared with `/v2/`)."""
    dispatcher = SignatureDispatcher(registry)
    return [PrefixRoute("/extensions/v2", dispatcher.handle)]
