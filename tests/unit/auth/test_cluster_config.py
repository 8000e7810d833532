"""Cluster mode's own parts without a cluster: the kubeconfig / in-cluster loader, the
decision cache, and the settings."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from imageregistry.auth.cluster.cache import DecisionCache
from imageregistry.auth.cluster.kubeconfig import KubeconfigError, in_cluster, load
from imageregistry.config import ConfigurationError, load_settings
from imageregistry.pki import ensure_tls
from tests.support.server import refused_serve


def _kubeconfig(path: Path, cluster: Mapping[str, object], user: Mapping[str, object]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    conn = load(str(_kubeconfig(tmp_path / "k", {"server": "http://h:1"}, {"tokenFile": "token"})))
    assert conn.bearer() == "first"
    replacement = tmp_path / "token.new"
    replacement.write_text("second")
    os.replace(replacement, token)  # as the kubelet swaps a projected token
    assert conn.bearer() == "second"


def test_client_certificate_data_and_ca_data_load(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls", ["127.0.0.1"])

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    ca = b64(files.ca_cert)
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority-data": ca}
    user = {"client-certificate-data": b64(files.cert), "client-key-data": b64(files.key)}
    conn = load(str(_kubeconfig(tmp_path / "k", cluster, user)))
    assert conn.server == "https://127.0.0.1:6443"
    assert conn.bearer() == ""
    assert not list(tmp_path.glob("**/cluster-client-*"))  # the PEM copies are gone


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"exec": {"command": "aws"}}, "exec and auth-provider"),
        ({"client-certificate-data": "bm90"}, "go together"),
        ({"client-key-data": "!!"}, "not base64"),
    ],
)
def test_unusable_users_are_refused(tmp_path: Path, user: dict[str, object], message: str) -> None:
    path = _kubeconfig(tmp_path / "k", {"server": "https://h:6443"}, user)
    with pytest.raises(KubeconfigError, match=message):
        load(str(path))


def test_in_cluster_needs_the_service_environment_and_mount(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster({}, tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeconfigError, match="automountServiceAccountToken"):
        in_cluster(env, tmp_path)
    files = ensure_tls(tmp_path / "tls", ["127.0.0.1"])
    (tmp_path / "ca.crt").write_bytes(files.ca_cert.read_bytes())
    (tmp_path / "token").write_text("sa-token\n")
    conn = in_cluster(env, tmp_path)
    assert (conn.server, conn.bearer()) == ("https://10.96.0.1:443", "sa-token")
    v6 = in_cluster({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert v6.server == "https://[fd00::1]:443"


def test_the_cache_keeps_outcomes_for_their_own_lifetimes_and_is_bounded() -> None:
    now = [0.0]
    cache: DecisionCache[str] = DecisionCache(10, 2, size=2, monotonic=lambda: now[0])
    cache.put("yes", "allowed", positive=True)
    cache.put("no", "denied", positive=False)
    now[0] = 3
    assert (cache.get("yes"), cache.get("no")) == ("allowed", None)
    cache.put("a", "1", positive=True)
    cache.put("b", "2", positive=True)  # "yes" is the least recently used: out
    assert cache.get("yes") is None and len(cache) == 2
    off: DecisionCache[str] = DecisionCache(0, 0, size=10)
    off.put("k", "v", positive=True)
    assert off.get("k") is None


def test_settings() -> None:
    env = {"IMAGE_REGISTRY_AUTH_MODE": "kubernetes", "IMAGE_REGISTRY_CLUSTER_AUDIENCES": "a,b"}
    settings = load_settings({}, env=env)
    assert (settings.auth_mode, settings.cluster_audiences) == ("kubernetes", ("a", "b"))
    with pytest.raises(ConfigurationError, match="auth_mode"):
        load_settings({"auth_mode": "ldap"}, env={})
    with pytest.raises(ConfigurationError, match="htpasswd_file"):
        load_settings({"auth_mode": "kubernetes", "htpasswd_file": "/x"}, env={})
    with pytest.raises(ConfigurationError, match="cluster_kubeconfig is set"):
        load_settings({"cluster_kubeconfig": "/x"}, env={})


def test_serve_refuses_to_start_without_a_cluster_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    result = refused_serve(tmp_path / "data", "--auth-mode", "kubernetes", env=env)
    assert result.returncode != 0
    assert "KUBERNETES_SERVICE_HOST" in result.stderr
