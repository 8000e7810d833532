"""RBAC values (rules, subjects, role references, bindings) and pure rule matching.

The values are parsed from the `rbac.authorization.k8s.io/v1` JSON shapes at the codec edge
(`from_json`, tolerant of missing keys, `ValueError` on wrong types) and matched with the
Kubernetes semantics: `*` matches any verb, API group, resource or URL; a resource rule
`res/sub` matches that subresource, `*/sub` matches `sub` of any resource and, as an
extension of upstream, `res/*` matches every subresource of `res`; an empty `resourceNames`
matches any name while a non-empty one never matches a request without a name (list,
create); a non-resource URL rule matches exactly or, ending in `*`, by prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imageregistry import apigroups

from .identity import Attributes, UserInfo, service_account_username

RBAC_GROUP = apigroups.RBAC
ALL = "*"

KIND_USER = "User"
KIND_GROUP = "Group"
KIND_SERVICE_ACCOUNT = "ServiceAccount"
KIND_ROLE = "Role"
KIND_CLUSTER_ROLE = "ClusterRole"


def _strings(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return tuple(value)


def _string(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be an object")
    return value


@dataclass(frozen=True)
class PolicyRule:
    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> PolicyRule:
        d = _mapping(d, "rule")
        return cls(
            verbs=_strings(d, "verbs"),
            api_groups=_strings(d, "apiGroups"),
            resources=_strings(d, "resources"),
            resource_names=_strings(d, "resourceNames"),
            non_resource_urls=_strings(d, "nonResourceURLs"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verbs": list(self.verbs)}
        if self.api_groups or self.resources:
            out["apiGroups"] = list(self.api_groups)
        if self.resources:
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        return out


def rules_from_json(value: Any) -> tuple[PolicyRule, ...]:
    """The `rules` list of a Role/ClusterRole (None → no rules)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("rules must be a list")
    return tuple(PolicyRule.from_json(r) for r in value)


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str
    namespace: str = ""
    api_group: str = ""

    @classmethod
    def from_json(cls, d: Any) -> Subject:
        d = _mapping(d, "subject")
        return cls(
            kind=_string(d, "kind"),
            name=_string(d, "name"),
            namespace=_string(d, "namespace"),
            api_group=_string(d, "apiGroup"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "apiGroup": self.api_group, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out

    def describe(self, binding_namespace: str) -> str:
        """`User "alice"`, `ServiceAccount "builder/app"` as kube's RBAC reasons print it."""
        if self.kind == KIND_SERVICE_ACCOUNT:
            return f'{self.kind} "{self.name}/{self.namespace or binding_namespace}"'
        return f'{self.kind} "{self.name}"'


@dataclass(frozen=True)
class RoleRef:
    api_group: str
    kind: str
    name: str

    @classmethod
    def from_json(cls, d: Any) -> RoleRef:
        d = _mapping(d, "roleRef")
        return cls(
            api_group=_string(d, "apiGroup"), kind=_string(d, "kind"), name=_string(d, "name")
        )

    def to_json(self) -> dict[str, Any]:
        return {"apiGroup": self.api_group, "kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Binding:
    """A RoleBinding (namespace set) or ClusterRoleBinding (namespace None)."""

    name: str
    namespace: str | None
    subjects: tuple[Subject, ...]
    role_ref: RoleRef

    @classmethod
    def from_json(cls, d: Any) -> Binding:
        """Parse a RoleBinding/ClusterRoleBinding object (kind decides the scope)."""
        d = _mapping(d, "binding")
        meta = _mapping(d.get("metadata"), "metadata")
        subjects = d.get("subjects")
        if subjects is not None and not isinstance(subjects, list):
            raise ValueError("subjects must be a list")
        namespace: str | None = _string(meta, "namespace") or None
        if _string(d, "kind") == "ClusterRoleBinding":
            namespace = None
        return cls(
            name=_string(meta, "name"),
            namespace=namespace,
            subjects=tuple(Subject.from_json(s) for s in subjects or ()),
            role_ref=RoleRef.from_json(d.get("roleRef")),
        )

    @property
    def kind(self) -> str:
        return "ClusterRoleBinding" if self.namespace is None else "RoleBinding"

    def describe(self) -> str:
        """`RoleBinding "rb/ns" of ClusterRole "view"` as kube's RBAC reasons print it."""
        ref = f'{self.role_ref.kind} "{self.role_ref.name}"'
        if self.namespace is None:
            return f'ClusterRoleBinding "{self.name}" of {ref}'
        return f'RoleBinding "{self.name}/{self.namespace}" of {ref}'


# --- matching ---------------------------------------------------------------------------


def verb_matches(rule: PolicyRule, verb: str) -> bool:
    return ALL in rule.verbs or verb in rule.verbs


def api_group_matches(rule: PolicyRule, group: str) -> bool:
    return ALL in rule.api_groups or group in rule.api_groups


def resource_pattern_matches(pattern: str, resource: str, subresource: str) -> bool:
    """Does one rule resource entry match `resource[/subresource]`?"""
    if pattern == ALL:
        return True
    combined = f"{resource}/{subresource}" if subresource else resource
    if pattern == combined:
        return True
    if not subresource:
        return False
    # kube: `*/sub` covers `sub` of every resource; our extension: `res/*` every sub of res.
    return pattern in (f"{ALL}/{subresource}", f"{resource}/{ALL}")


def resource_matches(rule: PolicyRule, resource: str, subresource: str) -> bool:
    return any(resource_pattern_matches(p, resource, subresource) for p in rule.resources)


def resource_name_matches(rule: PolicyRule, name: str) -> bool:
    if not rule.resource_names:
        return True
    return bool(name) and name in rule.resource_names


def url_pattern_matches(pattern: str, path: str) -> bool:
    if pattern in (ALL, path):
        return True
    return pattern.endswith(ALL) and path.startswith(pattern[:-1])


def non_resource_url_matches(rule: PolicyRule, path: str) -> bool:
    return any(url_pattern_matches(p, path) for p in rule.non_resource_urls)


def rule_allows(attrs: Attributes, rule: PolicyRule) -> bool:
    """Kubernetes RuleAllows: does this one rule permit the request?"""
    if not verb_matches(rule, attrs.verb):
        return False
    if not attrs.is_resource_request:
        return non_resource_url_matches(rule, attrs.path)
    return (
        api_group_matches(rule, attrs.api_group)
        and resource_matches(rule, attrs.resource, attrs.subresource)
        and resource_name_matches(rule, attrs.name)
    )


def subject_matches(subject: Subject, user: UserInfo, binding_namespace: str) -> bool:
    """Does a binding subject name this user?

    A ServiceAccount subject without a namespace means the binding's own namespace
    (kube's defaulting); in a ClusterRoleBinding it then matches nobody.
    """
    if subject.kind == KIND_USER:
        return user.username == subject.name
    if subject.kind == KIND_GROUP:
        return subject.name in user.groups
    if subject.kind == KIND_SERVICE_ACCOUNT:
        namespace = subject.namespace or binding_namespace
        if not namespace or not subject.name:
            return False
        return user.username == service_account_username(namespace, subject.name)
    return False


def matching_subject(binding: Binding, user: UserInfo) -> Subject | None:
    """The first subject of the binding that names the user, if any."""
    for subject in binding.subjects:
        if subject_matches(subject, user, binding.namespace or ""):
            return subject
    return None
