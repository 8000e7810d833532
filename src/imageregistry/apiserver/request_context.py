"""Who is asking, per request: authentication, impersonation, then authorization.

These are steps 2 and 3 of the API's pipeline, and the API dispatcher (`api_dispatch.py`)
is their one caller on `/api`, `/apis` and `/openapi`. `/metrics` uses them too.

The bearer credential is authenticated (401 Status if it is presented but invalid). kubectl
`--as`/`--as-group`/`--as-uid` send `Impersonate-User`, one `Impersonate-Group` header per group,
and `Impersonate-Uid` on every request (docs/kubectl.md#auth-can-i); each is allowed only with the
`impersonate` verb on `users`/`serviceaccounts`, `groups`, `uids` (kube's rules), and the
service-account groups are derived on the server because kubectl does not send them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers

from imageregistry import apigroups
from imageregistry.apiserver.status import (
    ApiError,
    bad_request,
    forbidden,
    service_unavailable,
    too_many_requests,
    unauthorized,
)
from imageregistry.auth.authn import Authenticator, TooManyFailedLogins, Unauthenticated
from imageregistry.auth.authorizer import Authorizer, Verdict
from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.auth.identity import (
    Attributes,
    UserInfo,
    parse_service_account,
    with_derived_groups,
)
from imageregistry.auth.resolver import forbidden_message
from imageregistry.observability.requestinfo import (
    note_decision,
    note_unauthenticated,
    note_user,
)

_EXTRA_PREFIX = "impersonate-extra-"


def authenticate(
    authn: Authenticator, authorization: str | None, source: str | None = None
) -> UserInfo:
    try:
        return authn.authenticate(authorization, source=source)
    except TooManyFailedLogins as exc:
        note_unauthenticated(authorization)
        raise too_many_requests(str(exc), exc.retry_after) from None
    except Unauthenticated:
        note_unauthenticated(authorization)
        raise unauthorized() from None
    except ClusterUnavailable as exc:
        raise cluster_unavailable(exc) from None


def cluster_unavailable(exc: ClusterUnavailable) -> ApiError:
    """503 ServiceUnavailable with Retry-After: the cluster could not decide (cluster mode)."""
    return service_unavailable(str(exc), exc.retry_after)


def _decide(authz: Authorizer, attrs: Attributes) -> Verdict:
    try:
        return authz.authorize(attrs)
    except ClusterUnavailable as exc:
        raise cluster_unavailable(exc) from None


def _check(
    authz: Authorizer, user: UserInfo, resource: str, name: str, namespace: str = ""
) -> None:
    attrs = Attributes.for_resource(
        user, "impersonate", "", resource, name=name, namespace=namespace
    )
    if not _decide(authz, attrs).allowed:
        raise forbidden(resource, "", name, forbidden_message(attrs))


def identify(
    authn: Authenticator,
    authz: Authorizer,
    headers: Headers,
    source: str | None = None,
    front_proxy: UserInfo | None = None,
) -> UserInfo:
    """The identity a request acts as: its credential, then any Impersonate-* headers.
    `source` is the client's address (it keys the failed-password throttle).
    `front_proxy` is the user the aggregator named for a request that came with its client
    certificate (`frontproxy/middleware.py`); it wins over the request's own credential,
    as kube's request-header authenticator comes first."""
    if front_proxy is not None:
        user = front_proxy
    else:
        user = authenticate(authn, headers.get("authorization"), source)
    extra: dict[str, list[str]] = {}
    for key, value in headers.items():
        if key.lower().startswith(_EXTRA_PREFIX):
            extra.setdefault(key[len(_EXTRA_PREFIX) :], []).append(value)
    note_user(user)
    acting = impersonate(
        authz,
        user,
        headers.get("impersonate-user"),
        headers.getlist("impersonate-group"),
        headers.get("impersonate-uid"),
        extra,
    )
    note_user(user, acting)
    return acting


def impersonate(
    authz: Authorizer,
    user: UserInfo,
    username: str | None,
    groups: Sequence[str],
    uid: str | None,
    extra: Mapping[str, Sequence[str]],
) -> UserInfo:
    """The impersonated identity, or `user` itself when no Impersonate-* header was sent."""
    if username is None:
        if groups or uid or extra:
            raise bad_request("requested impersonation of groups, uid or extra without a user")
        return user
    if not username:
        raise bad_request("Impersonate-User must not be empty")
    sa = parse_service_account(username)
    if sa is not None:
        _check(authz, user, "serviceaccounts", sa[1], sa[0])
    else:
        _check(authz, user, "users", username)
    for group in groups:
        _check(authz, user, "groups", group)
    if uid:
        _check(authz, user, "uids", uid)
    for key, values in extra.items():
        for value in values:
            attrs = Attributes.for_resource(
                user,
                "impersonate",
                apigroups.AUTHENTICATION,
                "userextras",
                subresource=key,
                name=value,
            )
            if not _decide(authz, attrs).allowed:
                raise forbidden(
                    "userextras", apigroups.AUTHENTICATION, value, forbidden_message(attrs)
                )
    return with_derived_groups(
        UserInfo(
            username=username,
            uid=uid or "",
            groups=tuple(dict.fromkeys(groups)),
            extra={k: tuple(v) for k, v in extra.items()},
        )
    )


def authorize_request(authz: Authorizer, attrs: Attributes, resource: str, group: str) -> None:
    """The request's own authorization (noted for its audit event): 403 Forbidden Status
    with kube's wording when RBAC denies it."""
    verdict = _decide(authz, attrs)
    note_decision(attrs, verdict.allowed, verdict.reason)
    if verdict.allowed:
        return
    if not attrs.is_resource_request:
        raise ApiError(403, "Forbidden", f"forbidden: {forbidden_message(attrs)}", {})
    raise forbidden(resource, group, attrs.name, forbidden_message(attrs))
