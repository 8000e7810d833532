"""deploy/kubernetes/components/cluster-mode and overlays/cluster render, validate and agree
with the server.

No cluster can run here, so the manifests are checked as far as is possible without one:
the real `kubectl kustomize` renders `overlays/cluster` (single + the component) and the
component on `ha` together with `aggregated-api` (the whole platform setup), every object
validates against the Kubernetes 1.32 schemas offline, the ClusterRoles to apply to the
cluster carry exactly the rules of the server's own bootstrap image roles, the registry's
service account is bound to `system:auth-delegator` and has its token mounted, the pod's
settings (config file + environment) load as cluster mode, and the NetworkPolicy lets the
pod reach the API server. The behaviour itself is tests/e2e/test_cluster_mode.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imageregistry.auth.bootstrap_roles import (
    DELETER,
    PRUNER,
    PULLER,
    PUSHER,
    SIGNER,
    bootstrap_cluster_roles,
    tag_policy_aggregated_roles,
)
from imageregistry.config import load_settings
from tests.e2e.test_deploy_manifests import one, render, validate


def _check_cluster_mode(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    ours = {r["metadata"]["name"]: r for r in bootstrap_cluster_roles()}
    for name in (PULLER, PUSHER, DELETER, PRUNER, SIGNER):
        assert roles[name]["rules"] == ours[name]["rules"], (
            f"{name}: deploy/kubernetes/components/cluster-mode/image-roles.yaml differs from"
            " auth/bootstrap_roles.py; copy the rules over"
        )
    for aggregated in tag_policy_aggregated_roles():
        name = aggregated["metadata"]["name"]
        assert roles[name]["rules"] == aggregated["rules"], name
        assert roles[name]["metadata"]["labels"] == aggregated["metadata"]["labels"], name
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    namespace = deployment["metadata"]["namespace"]
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["name"] == pod["serviceAccountName"]
    assert account["automountServiceAccountToken"] is True
    assert pod["automountServiceAccountToken"] is True
    (binding,) = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": namespace}
    ]
    (reader,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert reader["metadata"]["namespace"] == "kube-system"  # where the ConfigMap is
    assert reader["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "extension-apiserver-authentication-reader",
    }
    assert reader["subjects"] == binding["subjects"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(objects, "ConfigMap")["data"]["config.yaml"])
    settings = load_settings({}, str(config_file), env=env)
    assert settings.auth_mode == "kubernetes"
    assert settings.cluster_kubeconfig == ""  # the in-cluster configuration
    policy = one(objects, "NetworkPolicy")["spec"]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert {443, 6443} <= egress_ports


def test_cluster_overlay_renders_validates_and_is_cluster_mode(tmp_path: Path) -> None:
    objects = render("cluster")
    validate(objects)
    _check_cluster_mode(objects, tmp_path)


def test_component_with_ha_and_the_aggregated_api(tmp_path: Path) -> None:
    objects = render("ha", "cluster-mode", "aggregated-api")
    validate(objects)
    _check_cluster_mode(objects, tmp_path)
    assert one(objects, "APIService")["metadata"]["name"] == "v1.image.alauda.io"


def test_embedded_overlays_stay_local_without_a_token(tmp_path: Path) -> None:
    """Without the component, nothing of the cluster mode leaks into the embedded overlays."""
    for overlay in ("single", "ha"):
        objects = render(overlay)
        assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
        assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
