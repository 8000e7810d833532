"""`rbac.authorization.k8s.io/v1` Roles, ClusterRoles, RoleBindings, ClusterRoleBindings.

Validation follows kube's: rules need verbs and either resources (with API groups) or, for
ClusterRoles only, non-resource URLs; bindings need a roleRef (immutable after creation) and
well-formed subjects. Escalation prevention (kube's RBAC registry): a Role may only be written
by someone who already holds every rule in it or has `escalate` on it, and a binding only by
someone who holds the referenced role's rules in that namespace or has `bind` on the role —
which is what stops a namespace admin from binding `cluster-admin`. A binding to a role that
does not exist is NotFound unless the caller has `bind` on it, so nobody can pre-bind a role
someone else creates later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceInfo
from imageregistry.apiserver.status import FieldCause, bad_request, forbidden, invalid, not_found
from imageregistry.apiserver.store import StoredResource
from imageregistry.apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, created_age
from imageregistry.apiserver.validation import path_segment_name
from imageregistry.auth.escalation import covers, escalation_message
from imageregistry.auth.rbac import (
    KIND_CLUSTER_ROLE,
    KIND_GROUP,
    KIND_ROLE,
    KIND_SERVICE_ACCOUNT,
    KIND_USER,
    RBAC_GROUP,
    Binding,
    PolicyRule,
    rules_from_json,
)
from imageregistry.auth.rbac_store import ObjectsRbacStore
from imageregistry.auth.resolver import RuleResolver
from imageregistry.metadata.db import Database

RULE = {
    "verbs": ANY,
    "apiGroups": ANY,
    "resources": ANY,
    "resourceNames": ANY,
    "nonResourceURLs": ANY,
}
SUBJECT = {"kind": ANY, "apiGroup": ANY, "name": ANY, "namespace": ANY}
ROLE_REF = {"apiGroup": ANY, "kind": ANY, "name": ANY}
AGGREGATION = {"clusterRoleSelectors": ANY}
FULL_AUTHORITY = (
    PolicyRule(verbs=("*",), api_groups=("*",), resources=("*",)),
    PolicyRule(verbs=("*",), non_resource_urls=("*",)),
)


def _rule_causes(raw: Any, allow_urls: bool) -> tuple[list[PolicyRule], list[FieldCause]]:
    try:
        rules = list(rules_from_json(raw))
    except ValueError as exc:
        return [], [FieldCause("rules", f"Invalid value: {exc}")]
    causes = []
    for i, rule in enumerate(rules):
        where = f"rules[{i}]"
        if not rule.verbs:
            causes.append(
                FieldCause(
                    f"{where}.verbs",
                    "Required value: verbs must contain at least one value",
                    "FieldValueRequired",
                )
            )
        if rule.non_resource_urls and not allow_urls:
            causes.append(
                FieldCause(
                    f"{where}.nonResourceURLs",
                    "Invalid value: namespaced rules cannot apply to non-resource URLs",
                )
            )
        if rule.non_resource_urls and rule.resources:
            causes.append(
                FieldCause(
                    f"{where}.nonResourceURLs",
                    "Invalid value: rules cannot apply to both regular resources and "
                    "non-resource URLs",
                )
            )
        if not rule.non_resource_urls and not rule.resources:
            causes.append(
                FieldCause(
                    f"{where}.resources",
                    "Required value: resource rules must supply at least one resource",
                    "FieldValueRequired",
                )
            )
        if rule.resources and not rule.api_groups:
            causes.append(
                FieldCause(
                    f"{where}.apiGroups",
                    "Required value: resource rules must supply at least one api group",
                    "FieldValueRequired",
                )
            )
    return rules, causes


class _RbacBase(StoredResource):
    name_check = staticmethod(path_segment_name)

    def __init__(self, db: Database, resolver: RuleResolver) -> None:
        super().__init__(db)
        self.resolver = resolver
        self.roles = ObjectsRbacStore(db)

    def _require_covered(
        self, ctx: RequestContext, name: str, namespace: str, rules: Sequence[PolicyRule]
    ) -> None:
        held = self.resolver.rules_for(ctx.user, namespace)
        ok, uncovered = covers(held, rules)
        if not ok:
            raise forbidden(
                self.info.plural, self.info.group, name, escalation_message(ctx.user, uncovered)
            )


class _RoleBase(_RbacBase):
    columns = (NAME_COLUMN, Column("Created At", type="date"))
    allow_urls = False

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        meta = obj["metadata"]
        return [meta["name"], meta.get("creationTimestamp", "")]

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        return _rule_causes(obj.get("rules"), self.allow_urls)[1]

    def admit(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        if ctx.admission_allows(
            "escalate", RBAC_GROUP, self.info.plural, name=meta["name"], namespace=namespace
        ):
            return
        rules = _rule_causes(obj.get("rules"), True)[0]
        self._require_covered(ctx, meta["name"], namespace, rules)
        agg = obj.get("aggregationRule")
        if agg.get("clusterRoleSelectors") if isinstance(agg, dict) else agg:
            # A selector can gather any role's rules (cluster-admin's included) while the
            # role's own `rules` stay empty, so, like kube's ClusterRole storage, using it
            # needs every permission there is, not just the listed rules.
            held = self.resolver.rules_for(ctx.user, namespace)
            if not covers(held, FULL_AUTHORITY)[0]:
                raise forbidden(
                    self.info.plural,
                    self.info.group,
                    meta["name"],
                    "must have cluster-admin privileges to use the aggregationRule",
                )


class Roles(_RoleBase):
    info = ResourceInfo(RBAC_GROUP, "roles", "role", "Role", True)
    schema = object_schema(rules=[RULE])


class ClusterRoles(_RoleBase):
    info = ResourceInfo(RBAC_GROUP, "clusterroles", "clusterrole", "ClusterRole", False)
    schema = object_schema(rules=[RULE], aggregationRule=AGGREGATION)
    allow_urls = True


def _names(subjects: Sequence[Any], kind: str, namespaced: bool) -> str:
    out = []
    for s in subjects:
        if isinstance(s, dict) and s.get("kind") == kind:
            out.append(
                f"{s.get('namespace', '')}/{s.get('name', '')}"
                if namespaced
                else str(s.get("name", ""))
            )
    return ", ".join(out)


def _subject_causes(subjects: Any, cluster_scoped: bool) -> list[FieldCause]:
    if subjects is None:
        return []
    if not isinstance(subjects, list):
        return [FieldCause("subjects", "Invalid value: must be a list")]
    causes = []
    for i, s in enumerate(subjects):
        where = f"subjects[{i}]"
        if not isinstance(s, dict):
            causes.append(FieldCause(where, "Invalid value: must be an object"))
            continue
        kind, name = s.get("kind"), s.get("name")
        if kind not in (KIND_USER, KIND_GROUP, KIND_SERVICE_ACCOUNT):
            causes.append(
                FieldCause(
                    f"{where}.kind",
                    f'Unsupported value: "{kind}": supported values: '
                    '"Group", "ServiceAccount", "User"',
                    "FieldValueNotSupported",
                )
            )
        if not isinstance(name, str) or not name:
            causes.append(FieldCause(f"{where}.name", "Required value", "FieldValueRequired"))
        if kind == KIND_SERVICE_ACCOUNT and cluster_scoped and not s.get("namespace"):
            causes.append(FieldCause(f"{where}.namespace", "Required value", "FieldValueRequired"))
        if kind in (KIND_USER, KIND_GROUP) and s.get("apiGroup", RBAC_GROUP) not in (
            RBAC_GROUP,
            "",
        ):
            causes.append(
                FieldCause(
                    f"{where}.apiGroup",
                    f'Unsupported value: "{s.get("apiGroup")}"',
                    "FieldValueNotSupported",
                )
            )
    return causes


class _BindingBase(_RbacBase):
    columns = (
        NAME_COLUMN,
        Column("Role", description="Role or ClusterRole bound"),
        AGE_COLUMN,
        Column("Users", priority=1),
        Column("Groups", priority=1),
        Column("ServiceAccounts", priority=1),
    )
    cluster_scoped = False

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        ref = obj.get("roleRef") or {}
        subjects = obj.get("subjects") or []
        return [
            obj["metadata"]["name"],
            f"{ref.get('kind', '')}/{ref.get('name', '')}",
            created_age(obj, now),
            _names(subjects, KIND_USER, False),
            _names(subjects, KIND_GROUP, False),
            _names(subjects, KIND_SERVICE_ACCOUNT, True),
        ]

    def prepare(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ref = obj.get("roleRef")
        if isinstance(ref, dict) and not ref.get("apiGroup"):
            ref["apiGroup"] = RBAC_GROUP
        if old is not None and obj.get("roleRef") != old.get("roleRef"):
            raise invalid(
                self.info.kind,
                RBAC_GROUP,
                obj["metadata"]["name"],
                [FieldCause("roleRef", "Invalid value: cannot change roleRef")],
            )

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        ref = obj.get("roleRef")
        if not isinstance(ref, dict):
            return [FieldCause("roleRef", "Required value", "FieldValueRequired")]
        kinds = (KIND_CLUSTER_ROLE,) if self.cluster_scoped else (KIND_ROLE, KIND_CLUSTER_ROLE)
        causes = []
        if ref.get("kind") not in kinds:
            allowed = ", ".join(f'"{k}"' for k in kinds)
            causes.append(
                FieldCause(
                    "roleRef.kind",
                    f'Unsupported value: "{ref.get("kind")}": supported values: {allowed}',
                    "FieldValueNotSupported",
                )
            )
        if ref.get("apiGroup") != RBAC_GROUP:
            causes.append(
                FieldCause(
                    "roleRef.apiGroup",
                    f'Unsupported value: "{ref.get("apiGroup")}": supported values: "{RBAC_GROUP}"',
                    "FieldValueNotSupported",
                )
            )
        if not isinstance(ref.get("name"), str) or not ref.get("name"):
            causes.append(FieldCause("roleRef.name", "Required value", "FieldValueRequired"))
        return causes + _subject_causes(obj.get("subjects"), self.cluster_scoped)

    def admit(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        try:
            binding = Binding.from_json(obj)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        ref = binding.role_ref
        namespace = binding.namespace or ""
        plural = "clusterroles" if ref.kind == KIND_CLUSTER_ROLE else "roles"
        if ctx.admission_allows("bind", RBAC_GROUP, plural, name=ref.name, namespace=namespace):
            return
        if ref.kind == KIND_CLUSTER_ROLE:
            rules = self.roles.get_cluster_role(ref.name)
        else:
            rules = self.roles.get_role(namespace, ref.name)
        if rules is None:
            # A missing role grants nothing today but whatever it is created with later, so
            # it cannot count as covered (kube answers NotFound unless the caller has `bind`).
            raise not_found(plural, RBAC_GROUP, ref.name)
        self._require_covered(ctx, binding.name, namespace, rules)


class RoleBindings(_BindingBase):
    info = ResourceInfo(RBAC_GROUP, "rolebindings", "rolebinding", "RoleBinding", True)
    schema = object_schema(subjects=[SUBJECT], roleRef=ROLE_REF)


class ClusterRoleBindings(_BindingBase):
    info = ResourceInfo(
        RBAC_GROUP, "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False
    )
    schema = object_schema(subjects=[SUBJECT], roleRef=ROLE_REF)
    cluster_scoped = True
