"""The one request pipeline of the Kubernetes-style API (`/api`, `/apis`, `/openapi`).

Every request of this surface, the usage reports included, runs the same chain:

1. request info: the route table (`api_routes.py`) finds the route and the `ApiAction`
   the route declares. A request that no route can serve carries its refusal instead: 400 for
   U+0000 in the path or query, 404 for an unknown path or resource, 405 for a method.
2. authentication: the credential, or the front proxy's user, then any Impersonate-*
   headers, which need the `impersonate` verb (`request_context.identify`). 401 comes
   first, so a caller without credentials learns nothing about paths: a refusal from step 1
   is raised only after this step.
3. authorization: the route's action, as the access review of the authenticated user,
   asked of the server's one authorizer (`request_context.authorize_request`). That is local
   RBAC, or a SubjectAccessReview to the cluster in cluster mode. A denial is the 403
   Status, and the decision is noted on the request's record for the audit log.
4. the route's handler, with an `AuthorizedRequest` (`api_endpoints.py`).
5. one error renderer: any exception from any step becomes a `Status` (`responses.render`).

Steps 2 and 3 share one worker-thread hop. After step 3 the dispatcher knows the request's
action and its decision, so metrics or an audit event per request belong in
`ApiDispatcher.handle`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imageregistry.apiserver.api_actions import (
    ApiPath,
    ApiRequestInfo,
    ApiRoute,
    AuthorizedRequest,
    Handler,
    not_found,
)
from imageregistry.apiserver.collaborators import ApiCollaborators
from imageregistry.apiserver.request_context import authorize_request, identify
from imageregistry.apiserver.responses import render
from imageregistry.apiserver.status import ApiError, bad_request
from imageregistry.auth.identity import UserInfo
from imageregistry.frontproxy.middleware import front_proxy_user
from imageregistry.httpinput import client_host


class ApiDispatcher:
    def __init__(self, api: ApiCollaborators, routes: Sequence[ApiRoute]) -> None:
        self.api = api
        self.routes = tuple(routes)

    async def handle(self, request: Request) -> Response:
        try:
            found = self.request_info(request)
            user = await run_in_threadpool(self.admit, request, found)
            assert not isinstance(found, ApiError)  # `admit` raised it
            info, handler = found
            return await handler(AuthorizedRequest(request, user, info))
        except Exception as exc:
            return render(exc)

    # --- 1. request info -------------------------------------------------------------

    def request_info(self, request: Request) -> tuple[ApiRequestInfo, Handler] | ApiError:
        """The route and action of `request`, or the refusal of a request no route serves."""
        try:
            path = ApiPath.of(request.url.path)
            if "\x00" in path.raw or any("\x00" in v for v in request.query_params.values()):
                # names and selectors reach SQL, and PostgreSQL text cannot hold U+0000
                raise bad_request("the request path and query may not contain the character U+0000")
            for route in self.routes:
                match = route.match(request, path)
                if match is not None:
                    info = ApiRequestInfo(route.name, route.action(request, match), match)
                    return info, route.handler
            raise not_found()
        except ApiError as refusal:
            return refusal

    # --- 2. authentication, 3. authorization -----------------------------------------

    def admit(self, request: Request, found: tuple[ApiRequestInfo, Handler] | ApiError) -> UserInfo:
        """Who asks (401 before anything else), then whether they may: the route's action."""
        user = identify(
            self.api.authn,
            self.api.authz,
            request.headers,
            client_host(request.scope),
            front_proxy_user(request.scope),
        )
        if isinstance(found, ApiError):
            raise found
        attrs = found[0].action.attributes(user)
        authorize_request(self.api.authz, attrs, attrs.resource, attrs.api_group)
        return user
