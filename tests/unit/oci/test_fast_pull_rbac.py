"""Pulls through the fast path with the real RBAC authorizer: a RoleBinding takes effect,
and its removal takes effect, on the very next pull (the RBAC version is read by the pull
statement itself)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete
from starlette.testclient import TestClient

from imageregistry.auth.rbac_store import build_authorizer
from imageregistry.metadata.db import record_change
from imageregistry.metadata.rbac_objects import CLUSTER_ROLES, ROLE_BINDINGS
from imageregistry.metadata.tables import objects
from imageregistry.services import Services
from tests.support.rows import insert_object
from tests.unit.oci.conftest import ALICE, REPO, make_image, push_image, serve, with_authorizer

NAMESPACE = REPO.split("/")[0]


def _put(services: Services, resource: str, namespace: str, name: str, body: Any) -> None:
    with services.db.write() as conn:
        insert_object(conn, resource, namespace, name, body, datetime.now(UTC))


def _remove(services: Services, resource: str, namespace: str, name: str) -> None:
    with services.db.write() as conn:
        conn.execute(
            delete(objects).where(
                objects.c.resource == resource,
                objects.c.namespace == namespace,
                objects.c.name == name,
            )
        )
        record_change(conn, resource, namespace, name, "DELETED")


@pytest.fixture
def rbac_client(services: Services) -> Iterator[tuple[TestClient, Services]]:
    with_rbac = with_authorizer(services, build_authorizer(services.db))
    with serve(with_rbac) as client:
        yield client, with_rbac


def test_binding_grants_and_its_removal_revokes_at_once(
    rbac_client: tuple[TestClient, Services],
) -> None:
    client, services = rbac_client
    push_image(client, make_image())
    url, alice = f"/v2/{REPO}/manifests/latest", {"Authorization": f"Bearer {ALICE}"}
    assert client.get(url, headers=alice).status_code == 403
    rule = {
        "verbs": ["get"],
        "apiGroups": ["image.alauda.io"],
        "resources": ["imagestreams/layers"],
    }
    _put(services, CLUSTER_ROLES, "", "puller", {"metadata": {"name": "puller"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "alice-pulls", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "puller",
        },
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
    }
    assert client.get(url, headers=alice).status_code == 403  # role alone grants nothing
    _put(services, ROLE_BINDINGS, NAMESPACE, "alice-pulls", binding)
    for _ in range(2):  # the second answer comes from the remembered decision
        assert client.get(url, headers=alice).status_code == 200
    _remove(services, ROLE_BINDINGS, NAMESPACE, "alice-pulls")
    assert client.get(url, headers=alice).status_code == 403
    assert client.get(url).status_code == 200  # system:masters needs no binding
