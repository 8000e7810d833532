"""Who is asking and what they ask for: the values every authorization decision is made on.

`UserInfo` mirrors Kubernetes' user.Info (username, uid, groups, extra) and `Attributes`
mirrors authorizer.Attributes (a resource request or a non-resource URL request). The
helpers here apply the Kubernetes group conventions: every authenticated identity is in
`system:authenticated`, the anonymous one is `system:anonymous` in `system:unauthenticated`,
and a service account `system:serviceaccount:<ns>:<name>` is also in `system:serviceaccounts`
and `system:serviceaccounts:<ns>`. kubectl's `--as` does not send those derived groups, so
impersonation must derive them on the server (`with_derived_groups`), as kube-apiserver does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

ANONYMOUS_USER = "system:anonymous"
GROUP_AUTHENTICATED = "system:authenticated"
GROUP_UNAUTHENTICATED = "system:unauthenticated"
GROUP_MASTERS = "system:masters"
GROUP_SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

_EMPTY_EXTRA: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True)
class UserInfo:
    """An authenticated (or anonymous) identity; `extra` is excluded from hashing."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY_EXTRA, hash=False)

    def in_group(self, group: str) -> bool:
        return group in self.groups

    @property
    def is_anonymous(self) -> bool:
        return self.username == ANONYMOUS_USER


@dataclass(frozen=True)
class Attributes:
    """One request to authorize: a resource request or a non-resource `path` request.

    `api_group` is "" for the core group; `namespace` is "" for cluster-scoped resources
    and cluster-wide lists; `name` is "" for list/create/watch-all.
    """

    user: UserInfo
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    is_resource_request: bool = True
    path: str = ""

    @classmethod
    def for_resource(
        cls,
        user: UserInfo,
        verb: str,
        api_group: str,
        resource: str,
        *,
        subresource: str = "",
        name: str = "",
        namespace: str = "",
    ) -> Attributes:
        return cls(user, verb, api_group, resource, subresource, name, namespace, True, "")

    @classmethod
    def for_path(cls, user: UserInfo, verb: str, path: str) -> Attributes:
        return cls(user=user, verb=verb, is_resource_request=False, path=path)

    @property
    def combined_resource(self) -> str:
        """`resource/subresource` as RBAC rules spell it (kube's combined resource)."""
        if self.subresource:
            return f"{self.resource}/{self.subresource}"
        return self.resource


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def anonymous() -> UserInfo:
    return UserInfo(username=ANONYMOUS_USER, groups=(GROUP_UNAUTHENTICATED,))


def authenticated(
    username: str,
    groups: Iterable[str] = (),
    *,
    uid: str = "",
    extra: Mapping[str, tuple[str, ...]] | None = None,
) -> UserInfo:
    """A user proven by a credential: their groups plus the derived ones."""
    user = UserInfo(
        username=username,
        uid=uid,
        groups=_unique(groups),
        extra=MappingProxyType(dict(extra)) if extra else _EMPTY_EXTRA,
    )
    return with_derived_groups(user)


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (GROUP_SERVICE_ACCOUNTS, f"{GROUP_SERVICE_ACCOUNTS}:{namespace}")


def service_account(namespace: str, name: str, *, uid: str = "") -> UserInfo:
    return authenticated(service_account_username(namespace, name), uid=uid)


def parse_service_account(username: str) -> tuple[str, str] | None:
    """`system:serviceaccount:<ns>:<name>` → (ns, name); None for anything else."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, sep, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    if not sep or not namespace or not name or ":" in name:
        return None
    return namespace, name


def with_derived_groups(user: UserInfo) -> UserInfo:
    """Add the groups Kubernetes derives from the username.

    Service accounts gain `system:serviceaccounts` and `system:serviceaccounts:<ns>`.
    The anonymous user gains `system:unauthenticated`; everyone else gains
    `system:authenticated` unless the caller explicitly put them in
    `system:unauthenticated` (kube-apiserver's impersonation rule).
    """
    groups = list(user.groups)
    sa = parse_service_account(user.username)
    if sa is not None:
        groups.extend(service_account_groups(sa[0]))
    if user.is_anonymous:
        if GROUP_AUTHENTICATED not in groups:
            groups.append(GROUP_UNAUTHENTICATED)
    elif GROUP_UNAUTHENTICATED not in groups:
        groups.append(GROUP_AUTHENTICATED)
    return replace(user, groups=_unique(groups))
