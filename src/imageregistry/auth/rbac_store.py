"""RBAC over the generic `objects` table: the authorizer the server uses, and its cache.

Every write to a Role, ClusterRole, RoleBinding or ClusterRoleBinding appends a row to the
`changes` log, so the highest change id of those four resources is a version of "the RBAC
data". `ObjectsRbacStore.current()` reads that version with one indexed query (four
`max(id)` lookups on `ix_changes_resource (resource, id)`) and hands out an `RbacSnapshot`
for it (the statements are `metadata.rbac_objects`): a memo that reads bindings and roles
lazily with indexed lookups on (resource, namespace, name) — all ClusterRoleBindings, one
namespace's RoleBindings, one role per matching binding — parses them once, and remembers
whole decisions. A snapshot is never used once the version moved, so replicas sharing a
database stay correct and no decision outlives a change; data read into a snapshot is at
least as new as its version. A decision on the registry hot path therefore costs one cheap
query however many bindings exist.
Aggregated ClusterRoles are resolved when read (they are rare and small). `RbacAuthorizer`
adapts this to the `Authorizer` protocol; `system:masters` is the superuser group and needs
no query at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imageregistry.auth.aggregation import ClusterRole, aggregated_rules
from imageregistry.auth.authorizer import Verdict
from imageregistry.auth.identity import GROUP_MASTERS, Attributes
from imageregistry.auth.rbac import Binding, PolicyRule, rules_from_json
from imageregistry.auth.resolver import Decision, RuleResolver
from imageregistry.metadata.db import Database
from imageregistry.metadata.rbac_objects import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    ROLE_BINDINGS,
    ROLES,
    object_bodies,
    object_body,
    rbac_version,
)
from imageregistry.metadata.rbac_objects import (
    VERSION_COLUMNS as VERSION_COLUMNS,  # what `oci.pull` embeds, beside `decide_at`
)

MAX_REMEMBERED_DECISIONS = 10_000
DecisionKey = tuple[Any, ...]


def _bindings(bodies: Sequence[Any], kind: str) -> list[Binding]:
    out = []
    for body in bodies:
        try:
            out.append(Binding.from_json({**body, "kind": kind}))
        except ValueError:
            continue  # a malformed stored object must not break every decision
    return out


def decision_key(attrs: Attributes) -> DecisionKey:
    """What an RBAC decision depends on (not the uid or `extra` of the user)."""
    return (
        attrs.user.username,
        attrs.user.groups,
        attrs.verb,
        attrs.api_group,
        attrs.resource,
        attrs.subresource,
        attrs.name,
        attrs.namespace,
        attrs.is_resource_request,
        attrs.path,
    )


class _Missing:
    """Marks "looked up, not there" in the memo dicts."""


_MISSING = _Missing()


class RbacSnapshot:
    """RoleGetter + BindingLister for one RBAC version, reading lazily and parsing once.

    Dict reads and writes are atomic under the GIL, so concurrent worker threads may share
    a snapshot; two threads filling the same entry both store equal values.
    """

    def __init__(self, db: Database, version: tuple[int, ...]) -> None:
        self._db = db
        self.version = version
        self._cluster_bindings: list[Binding] | None = None
        self._bindings: dict[str, list[Binding]] = {}
        self._roles: dict[tuple[str, str], Sequence[PolicyRule] | _Missing] = {}
        self._cluster_roles: dict[str, Sequence[PolicyRule] | _Missing] = {}
        self._decisions: dict[DecisionKey, Decision] = {}
        self.resolver = RuleResolver(self, self)

    def _load_role(self, namespace: str, name: str) -> Sequence[PolicyRule] | _Missing:
        body = object_body(self._db, ROLES, namespace, name)
        if body is None:
            return _MISSING
        try:
            return rules_from_json(body.get("rules"))
        except ValueError:
            return ()

    def _load_cluster_role(self, name: str) -> Sequence[PolicyRule] | _Missing:
        body = object_body(self._db, CLUSTER_ROLES, "", name)
        if body is None:
            return _MISSING
        try:
            role = ClusterRole.from_json(body)
            if not role.is_aggregated:
                return role.rules
            others = [ClusterRole.from_json(b) for b in object_bodies(self._db, CLUSTER_ROLES, "")]
            return aggregated_rules(role, others)
        except ValueError:
            return ()

    def get_role(self, namespace: str, name: str) -> Sequence[PolicyRule] | None:
        key = (namespace, name)
        rules = self._roles.get(key)
        if rules is None:
            rules = self._roles[key] = self._load_role(namespace, name)
        return None if isinstance(rules, _Missing) else rules

    def get_cluster_role(self, name: str) -> Sequence[PolicyRule] | None:
        rules = self._cluster_roles.get(name)
        if rules is None:
            rules = self._cluster_roles[name] = self._load_cluster_role(name)
        return None if isinstance(rules, _Missing) else rules

    def list_role_bindings(self, namespace: str) -> list[Binding]:
        found = self._bindings.get(namespace)
        if found is None:
            found = _bindings(object_bodies(self._db, ROLE_BINDINGS, namespace), "RoleBinding")
            self._bindings[namespace] = found
        return found

    def list_cluster_role_bindings(self) -> list[Binding]:
        if self._cluster_bindings is None:
            self._cluster_bindings = _bindings(
                object_bodies(self._db, CLUSTER_ROLE_BINDINGS, ""), "ClusterRoleBinding"
            )
        return self._cluster_bindings

    def authorize(self, attrs: Attributes) -> Decision:
        key = decision_key(attrs)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self.resolver.authorize(attrs)
            if len(self._decisions) >= MAX_REMEMBERED_DECISIONS:
                self._decisions.clear()  # bounded memory; refilled by the next requests
            self._decisions[key] = decision
        return decision


class ObjectsRbacStore:
    """RoleGetter + BindingLister reading the objects table, always at the current version."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._snapshot: RbacSnapshot | None = None

    def version(self) -> tuple[int, ...]:
        """The newest change id of each RBAC resource (0 where none)."""
        return rbac_version(self._db)

    def current(self) -> RbacSnapshot:
        """The snapshot for the RBAC data as it is now (a new one whenever it changed)."""
        return self.at(self.version())

    def at(self, version: tuple[int, ...]) -> RbacSnapshot:
        """The snapshot for `version`, read by the caller (see `VERSION_COLUMNS`)."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.version != version:
            snapshot = RbacSnapshot(self._db, version)
            self._snapshot = snapshot
        return snapshot

    def get_role(self, namespace: str, name: str) -> Sequence[PolicyRule] | None:
        return self.current().get_role(namespace, name)

    def get_cluster_role(self, name: str) -> Sequence[PolicyRule] | None:
        return self.current().get_cluster_role(name)

    def list_role_bindings(self, namespace: str) -> list[Binding]:
        return self.current().list_role_bindings(namespace)

    def list_cluster_role_bindings(self) -> list[Binding]:
        return self.current().list_cluster_role_bindings()


class RbacAuthorizer:
    """The `Authorizer` of the server: Kubernetes RBAC plus the system:masters superuser."""

    def __init__(self, store: ObjectsRbacStore) -> None:
        self.store = store

    def decide(self, attrs: Attributes) -> Decision:
        if GROUP_MASTERS in attrs.user.groups:
            return Decision(allowed=True)
        return self.store.current().authorize(attrs)

    def decide_at(self, attrs: Attributes, version: tuple[int, ...]) -> Decision:
        """`decide` at the RBAC version the caller read with `VERSION_COLUMNS` in its own
        statement (one query fewer); not counted by `CountingAuthorizer`."""
        if GROUP_MASTERS in attrs.user.groups:
            return Decision(allowed=True)
        return self.store.at(version).authorize(attrs)

    def authorize(self, attrs: Attributes) -> Verdict:
        decision = self.decide(attrs)
        return Verdict(decision.allowed, decision.reason)


def build_resolver(db: Database) -> RuleResolver:
    store = ObjectsRbacStore(db)
    return RuleResolver(store, store)


def build_authorizer(db: Database) -> RbacAuthorizer:
    return RbacAuthorizer(ObjectsRbacStore(db))
