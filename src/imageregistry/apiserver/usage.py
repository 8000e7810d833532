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
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from imageregistry.apiserver.status import ApiError, forbidden, unauthorized
from imageregistry.auth.authn import Unauthenticated
from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.auth.identity import Attributes, UserInfo
from imageregistry.metadata.usage import ImageUsage, StreamUsage, image_usage, stream_usage
from imageregistry.services import Services

PREFIX = f"/apis/{IMAGE_GROUP}/v1"
API_VERSION = f"{IMAGE_GROUP}/v1"


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def image_item(row: ImageUsage) -> dict[str, Any]:
    return {
        "name": row.name,
        "imageStreamTags": [
            {"namespace": s.namespace, "name": s.stream, "tags": list(s.tags)} for s in row.streams
        ],
        "parents": list(row.parents),
        "lastPulled": _time(row.last_pulled),
        "metadata": row.metadata,
        "storage": row.storage,
        "layers": row.layers,
    }


def stream_item(row: StreamUsage) -> dict[str, Any]:
    return {
        "namespace": row.namespace,
        "name": row.name,
        "storage": row.storage,
        "images": row.images,
        "layers": row.layers,
    }


def stream_list(kind: str, items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """A Kubernetes-style List written one item per line (clients may parse by line)."""
    head = {"kind": kind, "apiVersion": API_VERSION, "metadata": {}}
    yield (json.dumps(head, separators=(",", ":"))[:-1] + ',"items":[\n').encode()
    batch: list[str] = []
    first = True
    for item in items:
        line = json.dumps(item, separators=(",", ":"))
        batch.append(line if first else "," + line)
        first = False
        if len(batch) >= 500:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()
    yield b"]}\n"


class _Usage:
    def __init__(self, services: Services) -> None:
        self.services = services

    def _user(self, request: Request) -> UserInfo:
        try:
            return self.services.authn.authenticate(request.headers.get("authorization"))
        except Unauthenticated:
            raise unauthorized() from None

    def _authorize(self, request: Request, resource: str, namespace: str) -> None:
        user = self._user(request)
        listed = "images" if not namespace else "imagestreams"
        attrs = Attributes.for_resource(user, "list", IMAGE_GROUP, listed, namespace=namespace)
        if not self.services.authz.authorize(attrs).allowed:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            why = (
                f'User "{user.username}" cannot list resource "{listed}" in API group '
                f'"{IMAGE_GROUP}"{where}'
            )
            raise forbidden(resource, IMAGE_GROUP, "", why)

    async def images(self, request: Request) -> Response:
        namespace = request.path_params.get("namespace", "")
        try:
            self._authorize(request, "imageusages", namespace)
        except ApiError as err:
            return JSONResponse(err.to_status(), status_code=err.code)

        def rows() -> Iterator[dict[str, Any]]:
            with self.services.db.read() as conn:
                for row in image_usage(conn, namespace or None):
                    yield image_item(row)

        return StreamingResponse(
            stream_list("ImageUsageList", rows()), media_type="application/json"
        )

    async def streams(self, request: Request) -> Response:
        namespace = request.path_params.get("namespace", "")
        try:
            self._authorize(request, "imagestreamusages", namespace)
        except ApiError as err:
            return JSONResponse(err.to_status(), status_code=err.code)
        with self.services.db.read() as conn:
            rows = stream_usage(conn, namespace or None)
        return StreamingResponse(
            stream_list("ImageStreamUsageList", (stream_item(r) for r in rows)),
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
