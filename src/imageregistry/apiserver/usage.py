"""Usage endpoints behind `ac adm top`: one request answers the whole report.

`GET /apis/image.alauda.io/v1/imageusages` and `.../imagestreamusages` (and the
namespace-scoped `/namespaces/NS/...` variants) return a list whose items are computed by
`metadata.usage` with set-based SQL. The body is streamed with one item per line, so the
server never holds the JSON of 100,000 images in memory and the client can parse it as it
arrives. Access: the cluster-wide report needs `list images`; a namespace report needs
`list imagestreams` in that namespace (behaviour.md §3 roles).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from json.encoder import encode_basestring_ascii as quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from imageregistry.apiserver.request_context import authenticate, authorize_request, impersonate
from imageregistry.apiserver.status import ApiError
from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.auth.identity import Attributes, UserInfo
from imageregistry.metadata.usage import ImageUsage, StreamUsage, image_usage, stream_usage
from imageregistry.services import Services

PREFIX = f"/apis/{IMAGE_GROUP}/v1"
API_VERSION = f"{IMAGE_GROUP}/v1"
_BATCH = 1000
_EXTRA = "impersonate-extra-"


def _time(value: datetime | None) -> str:
    return quote(value.strftime("%Y-%m-%dT%H:%M:%SZ")) if value is not None else "null"


def image_line(row: ImageUsage) -> str:
    """One ImageUsage item as compact JSON.

    Written by hand rather than through `json.dumps(dict)`: building and encoding 100,000
    dicts was a third of the report's server time. Strings still go through the stdlib's
    JSON string encoder, so escaping is exactly `json.dumps`'s.
    """
    streams = ",".join(
        f'{{"namespace":{quote(s.namespace)},"name":{quote(s.stream)},'
        f'"tags":[{",".join(map(quote, s.tags))}]}}'
        for s in row.streams
    )
    return (
        f'{{"name":{quote(row.name)},"imageStreamTags":[{streams}],'
        f'"parents":[{",".join(map(quote, row.parents))}],"lastPulled":{_time(row.last_pulled)},'
        f'"metadata":{"true" if row.metadata else "false"},"storage":{row.storage},'
        f'"layers":{row.layers}}}'
    )


def stream_line(row: StreamUsage) -> str:
    item = {
        "namespace": row.namespace,
        "name": row.name,
        "storage": row.storage,
        "images": row.images,
        "layers": row.layers,
    }
    return json.dumps(item, separators=(",", ":"))


def stream_list(kind: str, lines: Iterable[str], total: int | None = None) -> Iterator[bytes]:
    """A Kubernetes-style List written one item per line (clients may parse by line).

    Every item line after the first starts with the separating comma, so a client can
    collect any run of lines, drop the first comma and parse them as one JSON array.
    `total` (the item count, for progress bars) is written in the head when known.
    """
    head: dict[str, object] = {"kind": kind, "apiVersion": API_VERSION, "metadata": {}}
    if total is not None:
        head["total"] = total
    yield (json.dumps(head, separators=(",", ":"))[:-1] + ',"items":[\n').encode()
    batch: list[str] = []
    first = True
    for line in lines:
        batch.append(line if first else "," + line)
        first = False
        if len(batch) >= _BATCH:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()
    yield b"]}\n"


class _Usage:
    """Authenticates, impersonates and authorizes exactly like every other API request
    (`apiserver/request_context.py`), so `--as` works and a denial is the standard Status."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _user(self, request: Request) -> UserInfo:
        headers = request.headers
        user = authenticate(self.services.authn, headers.get("authorization"))
        extra: dict[str, list[str]] = {}
        for key, value in headers.items():
            if key.startswith(_EXTRA):
                extra.setdefault(key[len(_EXTRA) :], []).append(value)
        return impersonate(
            self.services.authz,
            user,
            headers.get("impersonate-user"),
            headers.getlist("impersonate-group"),
            headers.get("impersonate-uid"),
            extra,
        )

    def _authorize(self, request: Request, resource: str, namespace: str) -> None:
        """The cluster report needs `list images`; a namespace report `list imagestreams`."""
        user = self._user(request)
        listed = "images" if not namespace else "imagestreams"
        attrs = Attributes.for_resource(user, "list", IMAGE_GROUP, listed, namespace=namespace)
        authorize_request(self.services.authz, attrs, listed, IMAGE_GROUP)

    async def images(self, request: Request) -> Response:
        namespace = request.path_params.get("namespace", "")
        try:
            await run_in_threadpool(self._authorize, request, "imageusages", namespace)
        except ApiError as err:
            return JSONResponse(err.to_status(), status_code=err.code)

        def body() -> Iterator[bytes]:
            # Runs in Starlette's thread pool (a synchronous body): the queries finish and
            # the connection closes before the first item line is written.
            with self.services.db.read() as conn:
                rows = image_usage(conn, namespace or None)
            yield from stream_list("ImageUsageList", map(image_line, rows), len(rows))

        return StreamingResponse(body(), media_type="application/json")

    async def streams(self, request: Request) -> Response:
        namespace = request.path_params.get("namespace", "")
        try:
            await run_in_threadpool(self._authorize, request, "imagestreamusages", namespace)
        except ApiError as err:
            return JSONResponse(err.to_status(), status_code=err.code)

        def rows() -> list[StreamUsage]:
            with self.services.db.read() as conn:
                return stream_usage(conn, namespace or None)

        found = await run_in_threadpool(rows)
        return StreamingResponse(
            stream_list("ImageStreamUsageList", map(stream_line, found), len(found)),
            media_type="application/json",
        )


def usage_routes(services: Services) -> list[BaseRoute]:
    usage = _Usage(services)
    return [
        Route(f"{PREFIX}/imageusages", usage.images, methods=["GET"]),
        Route(f"{PREFIX}/namespaces/{{namespace}}/imageusages", usage.images, methods=["GET"]),
        Route(f"{PREFIX}/imagestreamusages", usage.streams, methods=["GET"]),
        Route(
            f"{PREFIX}/namespaces/{{namespace}}/imagestreamusages", usage.streams, methods=["GET"]
        ),
    ]
