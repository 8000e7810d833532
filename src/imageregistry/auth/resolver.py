"""The RBAC rule resolver: which rules apply to a user in a namespace, and is a request allowed.

It reads roles and bindings through two narrow protocols, so the same code runs over the
database store and over in-memory fakes in tests. The walk follows kube-apiserver's RBAC
authorizer: ClusterRoleBindings apply everywhere, RoleBindings only in their own namespace
(and may reference a Role of that namespace or a ClusterRole, whose rules then apply in that
namespace only). Members of `system:masters` are allowed everything, like kube's
privileged-group authorizer; everyone else is denied unless a rule allows. An allow carries
kube's reason text (`RBAC: allowed by RoleBinding "rb/ns" of ClusterRole "view" to User "u"`);
missing roles are reported as evaluation errors, never as a failure of the whole decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .identity import GROUP_MASTERS, Attributes, UserInfo
from .rbac import (
    ALL,
    KIND_CLUSTER_ROLE,
    KIND_ROLE,
    Binding,
    PolicyRule,
    Subject,
    matching_subject,
    rule_allows,
)


class RoleGetter(Protocol):
    """Looks up the (already aggregated) rules of a Role or ClusterRole; None if absent."""

    def get_role(self, namespace: str, name: str) -> Sequence[PolicyRule] | None: ...

    def get_cluster_role(self, name: str) -> Sequence[PolicyRule] | None: ...


class BindingLister(Protocol):
    """Lists the RoleBindings of one namespace and all ClusterRoleBindings."""

    def list_role_bindings(self, namespace: str) -> Iterable[Binding]: ...

    def list_cluster_role_bindings(self) -> Iterable[Binding]: ...


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    evaluation_error: str = ""


@dataclass(frozen=True)
class ResourceRule:
    """A SelfSubjectRulesReview `resourceRules` entry."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verbs": list(self.verbs),
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
        }
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out


@dataclass(frozen=True)
class NonResourceRule:
    """A SelfSubjectRulesReview `nonResourceRules` entry."""

    verbs: tuple[str, ...]
    non_resource_urls: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"verbs": list(self.verbs), "nonResourceURLs": list(self.non_resource_urls)}


@dataclass(frozen=True)
class RulesReview:
    """What SelfSubjectRulesReview's status needs; `incomplete` when a role was missing."""

    resource_rules: tuple[ResourceRule, ...]
    non_resource_rules: tuple[NonResourceRule, ...]
    incomplete: bool = False
    evaluation_error: str = ""


@dataclass
class _Errors:
    messages: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "; ".join(dict.fromkeys(self.messages))


_SUPERUSER_RULES = (
    PolicyRule(verbs=(ALL,), api_groups=(ALL,), resources=(ALL,)),
    PolicyRule(verbs=(ALL,), non_resource_urls=(ALL,)),
)


class RuleResolver:
    """Resolves bindings to rules for authorization and rules reviews."""

    def __init__(self, roles: RoleGetter, bindings: BindingLister) -> None:
        self._roles = roles
        self._bindings = bindings

    def _role_rules(self, binding: Binding, errors: _Errors) -> Sequence[PolicyRule]:
        ref = binding.role_ref
        rules: Sequence[PolicyRule] | None = None
        if ref.kind == KIND_CLUSTER_ROLE:
            rules = self._roles.get_cluster_role(ref.name)
            missing = f'clusterrole.rbac.authorization.k8s.io "{ref.name}" not found'
        elif ref.kind == KIND_ROLE and binding.namespace is not None:
            rules = self._roles.get_role(binding.namespace, ref.name)
            missing = f'role.rbac.authorization.k8s.io "{ref.name}" not found'
        else:
            missing = f"{binding.describe()}: unsupported roleRef kind {ref.kind!r}"
        if rules is None:
            errors.messages.append(missing)
            return ()
        return rules

    def _applicable(
        self, user: UserInfo, namespace: str, errors: _Errors
    ) -> Iterator[tuple[Binding, Subject, Sequence[PolicyRule]]]:
        """Bindings naming the user, with their rules: cluster-wide first, then the namespace."""
        candidates: list[Iterable[Binding]] = [self._bindings.list_cluster_role_bindings()]
        if namespace:
            candidates.append(self._bindings.list_role_bindings(namespace))
        for group in candidates:
            for binding in group:
                if binding.namespace is not None and binding.namespace != namespace:
                    continue  # a lister that over-returns must not widen a grant
                subject = matching_subject(binding, user)
                if subject is not None:
                    yield binding, subject, self._role_rules(binding, errors)

    def authorize(self, attrs: Attributes) -> Decision:
        if GROUP_MASTERS in attrs.user.groups:
            return Decision(allowed=True)
        errors = _Errors()
        namespace = attrs.namespace if attrs.is_resource_request else ""
        for binding, subject, rules in self._applicable(attrs.user, namespace, errors):
            if any(rule_allows(attrs, rule) for rule in rules):
                who = subject.describe(binding.namespace or "")
                return Decision(True, f"RBAC: allowed by {binding.describe()} to {who}")
        return Decision(allowed=False, evaluation_error=errors.text())

    def rules_for(self, user: UserInfo, namespace: str) -> list[PolicyRule]:
        """Every rule the user holds in `namespace` ("" = cluster-wide grants only)."""
        rules, _ = self._collect(user, namespace)
        return rules

    def _collect(self, user: UserInfo, namespace: str) -> tuple[list[PolicyRule], _Errors]:
        errors = _Errors()
        rules: list[PolicyRule] = []
        if GROUP_MASTERS in user.groups:
            rules.extend(_SUPERUSER_RULES)
        for _, _, role_rules in self._applicable(user, namespace, errors):
            rules.extend(role_rules)
        return rules, errors

    def rules_review(self, user: UserInfo, namespace: str) -> RulesReview:
        """SelfSubjectRulesReview: the user's rules in `namespace`, split by kind."""
        rules, errors = self._collect(user, namespace)
        resource_rules: list[ResourceRule] = []
        non_resource_rules: list[NonResourceRule] = []
        for rule in rules:
            if rule.resources:
                resource_rules.append(
                    ResourceRule(rule.verbs, rule.api_groups, rule.resources, rule.resource_names)
                )
            if rule.non_resource_urls:
                non_resource_rules.append(NonResourceRule(rule.verbs, rule.non_resource_urls))
        return RulesReview(
            resource_rules=tuple(dict.fromkeys(resource_rules)),
            non_resource_rules=tuple(dict.fromkeys(non_resource_rules)),
            incomplete=bool(errors.messages),
            evaluation_error=errors.text(),
        )


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """kube-apiserver's forbidden text, e.g. `User "u" cannot get resource "imagestreams/layers"
    in API group "image.alauda.io" in the namespace "team-a"` (one line)."""
    user = attrs.user.username
    if not attrs.is_resource_request:
        text = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        scope = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        text = (
            f'User "{user}" cannot {attrs.verb} resource "{attrs.combined_resource}" '
            f'in API group "{attrs.api_group}" {scope}'
        )
    return f"{text}: {reason}" if reason else text
