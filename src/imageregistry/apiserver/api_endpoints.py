"""The handlers of the Kubernetes-style API's routes, which run once a request is authorized.

Each method is the handler of one kind of route in `api_routes.py`. It receives an
`AuthorizedRequest`: the dispatcher (`api_dispatch.py`) has already authenticated the
caller, applied any impersonation, and authorized the route's action. No handler authorizes
its own request. The few second reviews Kubernetes semantics need are admission steps, named
in `admission.py`. A handler raises `ApiError` (or lets any other exception through); the
dispatcher renders every failure once (`responses.render`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imageregistry.apiserver import discovery, openapi
from imageregistry.apiserver.api_actions import AuthorizedRequest, Target, not_found
from imageregistry.apiserver.codec import MAX_BODY_BYTES
from imageregistry.apiserver.collaborators import ApiCollaborators
from imageregistry.apiserver.resource import RequestContext, ResourceHandler
from imageregistry.apiserver.resource_verbs import ResourceVerbs
from imageregistry.apiserver.resources.namespaces import record_cluster_namespace
from imageregistry.apiserver.responses import json_response
from imageregistry.apiserver.status import (
    method_not_allowed,
    service_unavailable,
    too_many_requests,
)
from imageregistry.apiserver.usage import UsageReports
from imageregistry.apiserver.watch import WatchResponse, WatchStream
from imageregistry.changefeed import WatchLimitExceeded
from imageregistry.httpinput import parse_int, read_body

# Deleting these ends the tokens of the service accounts in them (authn.py's cache).
IDENTITY_HOLDERS = {("", "serviceaccounts"), ("", "namespaces")}

MAX_WATCH_SECONDS = 1800
WATCH_RETRY_AFTER = 5  # seconds a client over a watch cap is asked to wait


class ApiEndpoints:
    def __init__(self, api: ApiCollaborators, handlers: Sequence[ResourceHandler]) -> None:
        self.api = api
        self.handlers = list(handlers)
        self.cluster_mode = api.cluster_mode
        self.usage = UsageReports(api.db)

    # --- discovery and OpenAPI -------------------------------------------------------

    async def document(self, authorized: AuthorizedRequest) -> Response:
        request, parts = authorized.request, list(authorized.info.match.path.parts)
        if parts in (["api"], ["apis"]) and discovery.wants_aggregated(
            request.headers.get("accept", "")
        ):
            listing = discovery.aggregated(parts == ["api"], self.handlers)
            return Response(
                json.dumps(listing, separators=(",", ":")),
                200,
                {"Vary": "Accept"},
                media_type=discovery.AGGREGATED_TYPE,
            )
        body = self._document(parts, request)
        if body is None:
            raise not_found()
        return json_response(body)

    def _document(self, parts: list[str], request: Request) -> dict[str, Any] | None:
        if parts == ["api"]:
            return discovery.api_versions(request.url.netloc)
        if parts == ["api", "v1"]:
            return discovery.resource_list("", self.handlers)
        if parts == ["apis"]:
            return discovery.api_group_list(self.handlers)
        if parts[0] == "apis" and parts[1] in discovery.groups(self.handlers):
            if len(parts) == 2:
                return discovery.api_group(parts[1])
            if parts[2] == "v1":
                return discovery.resource_list(parts[1], self.handlers)
        if parts == ["openapi", "v3"]:
            return openapi.index(self.handlers)
        if parts[0] == "openapi" and len(parts) > 2 and parts[1] == "v3":
            return openapi.document_for("/".join(parts[2:]), self.handlers)
        return None

    # --- usage reports ---------------------------------------------------------------

    async def image_usage(self, authorized: AuthorizedRequest) -> Response:
        return await self.usage.images(authorized.info.match.namespace)

    async def stream_usage(self, authorized: AuthorizedRequest) -> Response:
        return await self.usage.streams(authorized.info.match.namespace)

    # --- resources -------------------------------------------------------------------

    async def resource(self, authorized: AuthorizedRequest) -> Response:
        request, user, info = authorized.request, authorized.user, authorized.info
        target, verb = info.match.target, info.action.verb
        assert target is not None  # a resource route always resolves one
        query = request.query_params
        dry_run = "All" in query.getlist("dryRun")
        ctx = RequestContext(
            user, self.api.authz, self.api.clock, dry_run, query.get("fieldManager", "")
        )
        if self.cluster_mode and target.namespace and verb in ("create", "update", "patch"):
            await run_in_threadpool(
                record_cluster_namespace, self.api.db, target.namespace, self.api.clock
            )
        has_body = request.method in ("POST", "PUT", "PATCH", "DELETE")
        raw = await read_body(request, MAX_BODY_BYTES) if has_body else b""
        verbs = ResourceVerbs(target.handler, ctx, request)
        if verb == "watch":
            return self._watch(target, ctx, verbs, request)
        response = await run_in_threadpool(verbs.run, verb, target, raw)
        resource = target.handler.info
        if (
            verb in ("delete", "deletecollection")
            and (resource.group, resource.plural) in IDENTITY_HOLDERS
        ):
            self.api.authn.forget_cached_identities()
        return response

    def _watch(
        self, target: Target, ctx: RequestContext, verbs: ResourceVerbs, request: Request
    ) -> Response:
        info = target.handler.info
        if "watch" not in info.verbs:
            # the stream would fail only after its 200 headers are sent
            raise method_not_allowed("watch", info.plural)
        query = request.query_params
        stream = WatchStream(
            self.api.db,
            self.api.changes,
            target.handler,
            ctx,
            target.namespace,
            verbs.list_options(),
            verbs.watch_renderer(),
            bookmarks=query.get("allowWatchBookmarks") in ("true", "1"),
        )
        timeout = _timeout_seconds(query.get("timeoutSeconds") or "")
        if not self.api.changes.is_running:
            raise service_unavailable("watch is not available while the server starts or stops")
        try:  # the last step: nothing may fail between taking the slot and the response
            slot = self.api.watches.admit(ctx.user.username)
        except WatchLimitExceeded as exc:
            raise too_many_requests(str(exc), WATCH_RETRY_AFTER) from None
        return WatchResponse(stream.events(timeout), slot)


def _timeout_seconds(text: str) -> float:
    """A watch's `timeoutSeconds`: a non-negative integer, as in kube's ListOptions (int64);
    0 or absent means the server default."""
    seconds = parse_int(text or "0", "timeoutSeconds")
    return float(min(seconds, MAX_WATCH_SECONDS) or MAX_WATCH_SECONDS)
