"""An in-memory RBAC object store implementing `RoleGetter` and `BindingLister` for tests.

It takes objects in their Kubernetes JSON shapes, as the real store does, and computes
aggregated ClusterRoles the way the store is expected to (on every read, which is fine here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from imageregistry.auth.aggregation import ClusterRole, aggregated_rules
from imageregistry.auth.bootstrap_roles import bootstrap_objects
from imageregistry.auth.rbac import Binding, PolicyRule, rules_from_json


class InMemoryRbac:
    def __init__(self, objects: Iterable[dict[str, Any]] = (), *, bootstrap: bool = True) -> None:
        self.cluster_roles: dict[str, ClusterRole] = {}
        self.roles: dict[tuple[str, str], tuple[PolicyRule, ...]] = {}
        self.bindings: list[Binding] = []
        self.add(*(bootstrap_objects() if bootstrap else ()), *objects)

    def add(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            kind = obj["kind"]
            if kind == "ClusterRole":
                role = ClusterRole.from_json(obj)
                self.cluster_roles[role.name] = role
            elif kind == "Role":
                meta = obj["metadata"]
                self.roles[meta["namespace"], meta["name"]] = rules_from_json(obj.get("rules"))
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                self.bindings.append(Binding.from_json(obj))
            else:
                raise ValueError(kind)

    def get_role(self, namespace: str, name: str) -> Sequence[PolicyRule] | None:
        return self.roles.get((namespace, name))

    def get_cluster_role(self, name: str) -> Sequence[PolicyRule] | None:
        role = self.cluster_roles.get(name)
        if role is None:
            return None
        return aggregated_rules(role, self.cluster_roles.values())

    def list_role_bindings(self, namespace: str) -> Iterable[Binding]:
        return [b for b in self.bindings if b.namespace == namespace]

    def list_cluster_role_bindings(self) -> Iterable[Binding]:
        return [b for b in self.bindings if b.namespace is None]


def role_binding(
    name: str, namespace: str, role: str, *subjects: dict[str, Any], kind: str = "ClusterRole"
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": list(subjects),
    }


def cluster_role_binding(name: str, role: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": list(subjects),
    }


def user(name: str) -> dict[str, Any]:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def group(name: str) -> dict[str, Any]:
    return {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def service_account(namespace: str, name: str) -> dict[str, Any]:
    # The shape `kubectl create rolebinding --serviceaccount=ns:name` sends
    # (docs/kubectl.md#create-rolebinding).
    return {"kind": "ServiceAccount", "apiGroup": "", "name": name, "namespace": namespace}
