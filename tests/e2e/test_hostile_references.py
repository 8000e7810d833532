"""Hostile references, replayed with the real kubectl against a server subprocess.

A RoleBinding (or ClusterRoleBinding) may only name a role that exists, unless its creator
holds `bind` on that role: otherwise a namespace admin could pre-bind a role a cluster admin
creates later. And no API path may make an image stream reference an image its caller could
not pull: a namespace-scoped pruner writing `imagestreams/status`, an ImageStreamTag, an
ImageStreamMapping or a prune undo would otherwise copy another namespace's image into a
stream whose readers then see its manifest and config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kubectl_support import Kubectl, add_user_token
from tests.support.server import RegistryProcess

RBAC = "rbac.authorization.k8s.io/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("references") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def k(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    kubectl = Kubectl(server, tmp_path_factory.mktemp("kube-cache"))
    kubectl.ok("api-resources")  # discovery cached as admin: later refusals are the request's
    return kubectl


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def _apply(k: Kubectl, obj: dict[str, object], token: str | None = None) -> str:
    return k.ok("create", "-f", "-", token=token, stdin=yaml.safe_dump(obj))


def _cluster_role(name: str, rules: list[dict[str, object]]) -> dict[str, object]:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


# --- bindings to roles that do not exist (issue 14, finding 6) ---------------------------------


def test_namespace_admin_cannot_prebind_a_role_created_later(
    k: Kubectl, server: RegistryProcess
) -> None:
    k.ok("create", "ns", "prebind")
    k.ok(
        "create",
        "rolebinding",
        "carol-admin",
        "--clusterrole=admin",
        "--user=carol",
        "-n",
        "prebind",
    )
    carol = add_user_token(server, "carol")

    err = k.fails(
        "create", "rolebinding", "later", "--clusterrole=future-admin", "--user=carol",
        "-n", "prebind", token=carol,
    )  # fmt: skip
    assert 'clusterroles.rbac.authorization.k8s.io "future-admin" not found' in err
    err = k.fails(
        "create", "rolebinding", "later-role", "--role=future-role", "--user=carol",
        "-n", "prebind", token=carol,
    )  # fmt: skip
    assert 'roles.rbac.authorization.k8s.io "future-role" not found' in err

    # the cluster admin creates the role later: carol did not get it in advance
    _apply(
        k, _cluster_role("future-admin", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
    )
    assert "later" not in k.ok("get", "rolebinding", "-n", "prebind", "-o", "name")
    assert k.run("auth", "can-i", "delete", "namespaces", token=carol).stdout.strip() == "no"
    # and binding it now is the ordinary escalation refusal
    err = k.fails(
        "create", "rolebinding", "later", "--clusterrole=future-admin", "--user=carol",
        "-n", "prebind", token=carol,
    )  # fmt: skip
    assert "attempting to grant RBAC permissions not currently held" in err


def test_cluster_binding_to_a_missing_role_needs_bind(k: Kubectl, server: RegistryProcess) -> None:
    _apply(
        k,
        _cluster_role(
            "binding-writer",
            [{"verbs": ["create", "get"], "apiGroups": ["rbac.authorization.k8s.io"],
              "resources": ["clusterrolebindings"]}],
        ),
    )  # fmt: skip
    k.ok(
        "create", "clusterrolebinding", "erin-writer", "--clusterrole=binding-writer", "--user=erin"
    )
    erin = add_user_token(server, "erin")
    err = k.fails(
        "create", "clusterrolebinding", "erin-later", "--clusterrole=not-yet", "--user=erin",
        token=erin,
    )  # fmt: skip
    assert 'clusterroles.rbac.authorization.k8s.io "not-yet" not found' in err
    assert "erin-later" not in k.ok("get", "clusterrolebinding", "-o", "name")

    # `bind` on that role name is what kube asks for to bind a role that is not there yet
    _apply(
        k,
        _cluster_role(
            "not-yet-binder",
            [{"verbs": ["bind"], "apiGroups": ["rbac.authorization.k8s.io"],
              "resources": ["clusterroles"], "resourceNames": ["not-yet"]}],
        ),
    )  # fmt: skip
    k.ok(
        "create", "clusterrolebinding", "erin-binder", "--clusterrole=not-yet-binder", "--user=erin"
    )
    out = k.ok(
        "create", "clusterrolebinding", "erin-later", "--clusterrole=not-yet", "--user=erin",
        token=erin,
    )  # fmt: skip
    assert "clusterrolebinding.rbac.authorization.k8s.io/erin-later created" in out
    # a cluster admin (system:masters) may pre-bind too, as in Kubernetes
    k.ok(
        "create",
        "rolebinding",
        "admin-later",
        "--clusterrole=also-not-yet",
        "--user=x",
        "-n",
        "prebind",
    )
