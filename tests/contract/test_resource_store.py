"""The generic resource store and the RBAC store behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imageregistry.apiserver.resource import ListOptions, RequestContext
from imageregistry.apiserver.resources.namespaces import Namespaces
from imageregistry.apiserver.resources.rbac import ClusterRoles, RoleBindings
from imageregistry.apiserver.resources.serviceaccounts import ServiceAccounts
from imageregistry.apiserver.status import ApiError
from imageregistry.auth.identity import Attributes, authenticated, service_account
from imageregistry.auth.rbac_store import build_authorizer, build_resolver
from imageregistry.auth.tokens import TokenSigner, generate_signing_key
from imageregistry.metadata.db import Database

ADMIN = authenticated("root", ("system:masters",))
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def ctx(db: Database, user: Any = ADMIN, dry_run: bool = False) -> RequestContext:
    return RequestContext(user, build_authorizer(db), lambda: NOW, dry_run)


def binding(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
    }


def test_crud_resource_versions_and_conflicts(db: Database) -> None:
    namespaces = Namespaces(db)
    created = namespaces.create(
        ctx(db), "", {"metadata": {"name": "team-a", "labels": {"tier": "x"}}}
    )
    assert created["status"]["phase"] == "Active" and created["metadata"]["uid"]
    with pytest.raises(ApiError) as exists:
        namespaces.create(ctx(db), "", {"metadata": {"name": "team-a"}})
    assert exists.value.code == 409
    updated = namespaces.update(
        ctx(db),
        "",
        "team-a",
        {**created, "metadata": {**created["metadata"], "labels": {"tier": "y"}}},
    )
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as conflict:  # `created` now carries a stale resourceVersion
        namespaces.update(
            ctx(db),
            "",
            "team-a",
            {**created, "metadata": {**created["metadata"], "labels": {"a": "b"}}},
        )
    assert conflict.value.code == 409
    assert namespaces.get(ctx(db), "", "team-a")["metadata"]["labels"]["tier"] == "y"


def test_list_pages_and_selectors(db: Database) -> None:
    Namespaces(db).create(ctx(db), "", {"metadata": {"name": "ns1"}})
    accounts = ServiceAccounts(db, TokenSigner(generate_signing_key()), "aud")
    for i in range(5):
        accounts.create(
            ctx(db),
            "ns1",
            {"metadata": {"name": f"sa{i}", "labels": {"even": str(i % 2 == 0).lower()}}},
        )
    first = accounts.list(ctx(db), "ns1", ListOptions(limit=2))
    assert [o["metadata"]["name"] for o in first.items] == ["sa0", "sa1"] and first.continue_token
    rest = accounts.list(ctx(db), "ns1", ListOptions(limit=10, continue_token=first.continue_token))
    assert [o["metadata"]["name"] for o in rest.items] == [
        "sa2",
        "sa3",
        "sa4",
    ] and not rest.continue_token
    even = accounts.list(ctx(db), "ns1", ListOptions(label_selector="even=true"))
    assert [o["metadata"]["name"] for o in even.items] == ["sa0", "sa2", "sa4"]
    pinned = accounts.list(ctx(db), "", ListOptions(field_selector="metadata.name=sa3"))
    assert [o["metadata"]["name"] for o in pinned.items] == ["sa3"]
    generated = accounts.create(ctx(db), "ns1", {"metadata": {"generateName": "robot-"}})
    assert (
        generated["metadata"]["name"].startswith("robot-")
        and len(generated["metadata"]["name"]) == 11
    )


def test_dry_run_and_namespace_cascade(db: Database) -> None:
    namespaces = Namespaces(db)
    namespaces.create(ctx(db), "", {"metadata": {"name": "gone"}})
    bindings = RoleBindings(db, build_resolver(db))
    bindings.create(ctx(db, dry_run=True), "gone", binding("dry", "view", "alice"))
    assert bindings.list(ctx(db), "gone", ListOptions()).items == []
    bindings.create(ctx(db), "gone", binding("rb", "view", "alice"))
    namespaces.delete(ctx(db), "", "gone")
    assert bindings.list(ctx(db), "gone", ListOptions()).items == []
    with pytest.raises(ApiError) as missing:
        bindings.create(ctx(db), "gone", binding("rb", "view", "alice"))
    assert missing.value.code == 404


def test_rbac_authorizer_and_escalation(db: Database) -> None:
    Namespaces(db).create(ctx(db), "", {"metadata": {"name": "team-a"}})
    roles = ClusterRoles(db, build_resolver(db))
    roles.create(
        ctx(db),
        "",
        {
            "metadata": {"name": "puller"},
            "rules": [
                {
                    "verbs": ["get"],
                    "apiGroups": ["image.alauda.io"],
                    "resources": ["imagestreams/layers"],
                }
            ],
        },
    )
    roles.create(
        ctx(db),
        "",
        {
            "metadata": {"name": "rb-admin"},
            "rules": [
                {
                    "verbs": ["*"],
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["rolebindings"],
                }
            ],
        },
    )
    bindings = RoleBindings(db, build_resolver(db))
    bindings.create(
        ctx(db), "team-a", binding("pull", "puller", "system:serviceaccount:app:builder")
    )
    bindings.create(
        ctx(db),
        "team-a",
        {
            **binding("sa", "puller", "x"),
            "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "app"}],
        },
    )
    bindings.create(ctx(db), "team-a", binding("mgr", "rb-admin", "carol"))
    authz = build_authorizer(db)
    builder = service_account("app", "builder")
    pull = Attributes.for_resource(
        builder,
        "get",
        "image.alauda.io",
        "imagestreams",
        subresource="layers",
        name="demo",
        namespace="team-a",
    )
    assert authz.authorize(pull).allowed
    elsewhere = Attributes.for_resource(
        builder, "get", "image.alauda.io", "imagestreams", subresource="layers", namespace="team-b"
    )
    assert not authz.authorize(elsewhere).allowed
    carol = authenticated("carol")
    bindings.create(ctx(db, carol), "team-a", binding("share", "rb-admin", "dave"))  # held: allowed
    with pytest.raises(ApiError) as not_held:
        bindings.create(ctx(db, carol), "team-a", binding("pullme", "puller", "carol"))
    assert not_held.value.code == 403
    roles.create(
        ctx(db),
        "",
        {
            "metadata": {"name": "cluster-admin-like"},
            "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        },
    )
    with pytest.raises(ApiError) as refused:
        bindings.create(ctx(db, carol), "team-a", binding("grab2", "cluster-admin-like", "carol"))
    assert refused.value.code == 403 and "not currently held" in refused.value.message


def test_rbac_decisions_follow_every_change_across_replicas(db: Database) -> None:
    """Two authorizers (two replicas) on one database: a cached allow or deny never outlives
    the binding or role change that decided it, whichever replica made the change."""
    Namespaces(db).create(ctx(db), "", {"metadata": {"name": "team-a"}})
    replica_a, replica_b = build_authorizer(db), build_authorizer(db)
    pull = Attributes.for_resource(
        service_account("app", "builder"),
        "get",
        "image.alauda.io",
        "imagestreams",
        subresource="layers",
        name="demo",
        namespace="team-a",
    )
    rule = {"verbs": ["get"], "apiGroups": ["image.alauda.io"], "resources": ["imagestreams/*"]}
    roles = ClusterRoles(db, build_resolver(db))
    role = roles.create(ctx(db), "", {"metadata": {"name": "puller"}, "rules": [rule]})
    assert not replica_a.authorize(pull).allowed and not replica_b.authorize(pull).allowed
    bindings = RoleBindings(db, build_resolver(db))
    bindings.create(
        ctx(db),
        "team-a",
        {
            **binding("sa", "puller", "x"),
            "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "app"}],
        },
    )
    assert replica_a.authorize(pull).allowed and replica_b.authorize(pull).allowed
    narrowed = {**rule, "resources": ["imagestreams"]}
    role = roles.update(ctx(db), "", "puller", {**role, "rules": [narrowed]})
    assert not replica_a.authorize(pull).allowed and not replica_b.authorize(pull).allowed
    roles.update(ctx(db), "", "puller", {**role, "rules": [rule]})
    assert replica_a.authorize(pull).allowed
    bindings.delete(ctx(db), "team-a", "sa")
    assert not replica_a.authorize(pull).allowed and not replica_b.authorize(pull).allowed
