"""RBAC over the generic `objects` table: the authorizer the server uses.

`ObjectsRbacStore` implements the resolver's `RoleGetter` and `BindingLister` with indexed
lookups on (resource, namespace, name): one query for the ClusterRoleBindings (a handful),
one for the RoleBindings of the request's namespace, and one per matching binding for its
role, so a decision costs the same with 10,000 RoleBindings spread over 1,000 namespaces as
with ten. Aggregated ClusterRoles are resolved when read (they are rare and small).
`RbacAuthorizer` adapts the resolver to the `Authorizer` protocol; `system:masters` is the
superuser group. `ObjectsServiceAccounts` lets the authenticator refuse tokens of deleted
service accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from imageregistry.auth.aggregation import ClusterRole, aggregated_rules
from imageregistry.auth.authorizer import Verdict
from imageregistry.auth.identity import Attributes
from imageregistry.auth.rbac import Binding, PolicyRule, rules_from_json
from imageregistry.auth.resolver import Decision, RuleResolver
from imageregistry.metadata.db import Database
from imageregistry.metadata.tables import objects

ROLES = "roles.rbac.authorization.k8s.io"
CLUSTER_ROLES = "clusterroles.rbac.authorization.k8s.io"
ROLE_BINDINGS = "rolebindings.rbac.authorization.k8s.io"
CLUSTER_ROLE_BINDINGS = "clusterrolebindings.rbac.authorization.k8s.io"


def _bindings(bodies: Sequence[Any], kind: str) -> list[Binding]:
    out = []
    for body in bodies:
        try:
            out.append(Binding.from_json({**body, "kind": kind}))
        except ValueError:
            continue  # a malformed stored object must not break every decision
    return out


class ObjectsRbacStore:
    """RoleGetter + BindingLister reading the objects table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _body(self, resource: str, namespace: str, name: str) -> Any:
        with self._db.read() as conn:
            return conn.execute(
                select(objects.c.body).where(
                    objects.c.resource == resource,
                    objects.c.namespace == namespace,
                    objects.c.name == name,
                )
            ).scalar()

    def _bodies(self, resource: str, namespace: str) -> list[Any]:
        with self._db.read() as conn:
            return list(
                conn.execute(
                    select(objects.c.body).where(
                        objects.c.resource == resource, objects.c.namespace == namespace
                    )
                ).scalars()
            )

    def get_role(self, namespace: str, name: str) -> Sequence[PolicyRule] | None:
        body = self._body(ROLES, namespace, name)
        if body is None:
            return None
        try:
            return rules_from_json(body.get("rules"))
        except ValueError:
            return ()

    def get_cluster_role(self, name: str) -> Sequence[PolicyRule] | None:
        body = self._body(CLUSTER_ROLES, "", name)
        if body is None:
            return None
        try:
            role = ClusterRole.from_json(body)
            if not role.is_aggregated:
                return role.rules
            others = [ClusterRole.from_json(b) for b in self._bodies(CLUSTER_ROLES, "")]
            return aggregated_rules(role, others)
        except ValueError:
            return ()

    def list_role_bindings(self, namespace: str) -> list[Binding]:
        return _bindings(self._bodies(ROLE_BINDINGS, namespace), "RoleBinding")

    def list_cluster_role_bindings(self) -> list[Binding]:
        return _bindings(self._bodies(CLUSTER_ROLE_BINDINGS, ""), "ClusterRoleBinding")


class RbacAuthorizer:
    """The `Authorizer` of the server: Kubernetes RBAC plus the system:masters superuser."""

    def __init__(self, resolver: RuleResolver) -> None:
        self.resolver = resolver

    def decide(self, attrs: Attributes) -> Decision:
        return self.resolver.authorize(attrs)

    def authorize(self, attrs: Attributes) -> Verdict:
        decision = self.resolver.authorize(attrs)
        return Verdict(decision.allowed, decision.reason)


class ObjectsServiceAccounts:
    """`ServiceAccountChecker` for the authenticator."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def service_account_exists(self, namespace: str, name: str) -> bool:
        with self._db.read() as conn:
            row = conn.execute(
                select(objects.c.id).where(
                    objects.c.resource == "serviceaccounts",
                    objects.c.namespace == namespace,
                    objects.c.name == name,
                )
            ).first()
        return row is not None


def build_resolver(db: Database) -> RuleResolver:
    store = ObjectsRbacStore(db)
    return RuleResolver(store, store)


def build_authorizer(db: Database) -> RbacAuthorizer:
    return RbacAuthorizer(build_resolver(db))
