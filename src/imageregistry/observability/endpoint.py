"""`GET /metrics`, authorized like kube-apiserver's: `get` on the non-resource URL
`/metrics`.

The caller is authenticated like any API request (a wrong credential is a 401 Status) and
RBAC decides; the bootstrap ClusterRole `system:monitoring` grants exactly this, so a
Prometheus service account is bound to it (docs/operations.md, "Metrics"). Anonymous
requests are refused unless someone binds the role to `system:unauthenticated`. The same
`Scraper` answers on the main port and on `metrics_listen` (`observability.listener`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imageregistry.apiserver.request_context import authorize_request, identify
from imageregistry.apiserver.status import ApiError
from imageregistry.auth.authn import Authenticator
from imageregistry.auth.authorizer import Authorizer
from imageregistry.auth.identity import Attributes
from imageregistry.httpinput import client_host
from imageregistry.observability.metrics import CONTENT_TYPE, Metrics

PATH = "/metrics"
JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]


class Scraper:
    """Takes the authenticator and authorizer it asks, not the server's `Services`
    (docs/architecture.md#wiring)."""

    def __init__(self, authn: Authenticator, authz: Authorizer, metrics: Metrics) -> None:
        self._authn = authn
        self._authz = authz
        self._metrics = metrics

    def _authorize(self, headers: Headers, source: str | None) -> None:
        user = identify(self._authn, self._authz, headers, source)
        authorize_request(self._authz, Attributes.for_path(user, "get", PATH), "", "")

    async def answer(self, headers: Headers, source: str | None) -> Answer:
        try:
            await run_in_threadpool(self._authorize, headers, source)
        except ApiError as error:
            body = json.dumps(error.to_status(), separators=(",", ":")).encode()
            return Answer(error.code, body, JSON, error.headers())
        body = await run_in_threadpool(self._metrics.render)
        return Answer(200, body, CONTENT_TYPE, {})


def metrics_routes(scraper: Scraper) -> list[Route]:
    async def scrape(request: Request) -> Response:
        answer = await scraper.answer(request.headers, client_host(request.scope))
        return Response(
            answer.body, answer.status, dict(answer.headers), media_type=answer.content_type
        )

    return [Route(PATH, scrape, methods=["GET"])]
