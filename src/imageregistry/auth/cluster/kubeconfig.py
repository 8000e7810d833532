"""Where the cluster is and how the registry proves itself to it.

Two sources, as client-go has them: a kubeconfig file (`cluster_kubeconfig`; its current
context's cluster and user) or, without one, the pod's own service account
(`/var/run/secrets/kubernetes.io/serviceaccount` and `KUBERNETES_SERVICE_HOST`/`_PORT`).
Only what a server-to-server client needs is read: the server URL, the CA
(`certificate-authority[-data]`, or `insecure-skip-tls-verify`), and a bearer token
(`token` or `tokenFile`) and/or a client certificate (`client-certificate[-data]` +
`client-key[-data]`). Exec and auth-provider plugins are refused with a clear error: they
run programs, and a server has no one to log in. A token file is read again whenever it
changes, because the kubelet rotates projected service-account tokens.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imageregistry.configerror import ConfigurationError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeconfigError(ConfigurationError):
    """The cluster's address or the registry's credentials cannot be read."""


class TokenFile:
    """A token read from a file, read again when the file changes (rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        try:
            st = os.stat(self._path)
            stamp = (st.st_ino, st.st_mtime_ns)
            with self._lock:
                if stamp != self._seen:
                    self._token = self._path.read_text().strip()
                    self._seen = stamp
                return self._token
        except OSError as exc:
            raise KubeconfigError(f"cannot read token file {self._path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ClusterConnection:
    """The cluster's base URL, the TLS context to reach it, and the registry's token."""

    server: str
    tls: ssl.SSLContext | bool
    token: str = field(default="", repr=False)
    token_file: TokenFile | None = field(default=None, repr=False)

    def bearer(self) -> str:
        """The token to present, "" for none (a client certificate may suffice)."""
        if self.token_file is not None:
            return self.token_file.token()
        return self.token


def load(kubeconfig: str, env: Mapping[str, str] | None = None) -> ClusterConnection:
    """The connection from `kubeconfig`, or the in-cluster one when it is ""."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig))
    return in_cluster(os.environ if env is None else env)


def in_cluster(env: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT_DIR) -> ClusterConnection:
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeconfigError(
            "auth_mode kubernetes without cluster_kubeconfig needs the in-cluster configuration"
            " (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a pod?)"
        )
    token, ca = sa_dir / "token", sa_dir / "ca.crt"
    if not token.is_file() or not ca.is_file():
        raise KubeconfigError(
            f"the in-cluster configuration needs {token} and {ca} (automountServiceAccountToken)"
        )
    if ":" in host:
        host = f"[{host}]"  # an IPv6 service address
    context = ssl.create_default_context(cafile=str(ca))
    return ClusterConnection(f"https://{host}:{port}", context, token_file=TokenFile(token))


def _named(items: Any, name: str, kind: str, path: Path) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(kind), dict):
            return dict(item[kind])
    raise KubeconfigError(f"{path}: no {kind} named {name!r}")


def _decode(value: Any, key: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{path}: {key} is not base64") from None


def _relative(value: Any, path: Path) -> str:
    return str((path.parent / str(value)).resolve())


def from_kubeconfig(path: Path) -> ClusterConnection:
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeconfigError(f"cannot read cluster_kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"cluster_kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"cluster_kubeconfig {path} must hold a mapping")
    current = config.get("current-context")
    if not current:
        raise KubeconfigError(f"{path}: no current-context")
    context = _named(config.get("contexts"), str(current), "context", path)
    cluster = _named(config.get("clusters"), str(context.get("cluster")), "cluster", path)
    user = _named(config.get("users"), str(context.get("user")), "user", path)
    if "exec" in user or "auth-provider" in user:
        raise KubeconfigError(
            f"{path}: exec and auth-provider credentials are not supported; use a token,"
            " a tokenFile or a client certificate"
        )
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"{path}: cluster server must be an http(s) URL, got {server!r}")
    tls: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        tls = _tls_context(cluster, user, path)
    token_file = None
    if user.get("tokenFile") and not user.get("token"):
        token_file = TokenFile(Path(_relative(user["tokenFile"], path)))
    return ClusterConnection(server, tls, str(user.get("token") or ""), token_file)


def _tls_context(cluster: dict[str, Any], user: dict[str, Any], path: Path) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify") is True:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        pem = _decode(cluster["certificate-authority-data"], "certificate-authority-data", path)
        context = ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
    elif cluster.get("certificate-authority"):
        ca_file = _relative(cluster["certificate-authority"], path)
        context = ssl.create_default_context(cafile=ca_file)
    else:
        context = ssl.create_default_context()
    if cluster.get("tls-server-name"):
        raise KubeconfigError(f"{path}: tls-server-name is not supported")
    cert, key = _pem(user, "client-certificate", path), _pem(user, "client-key", path)
    if (cert is None) != (key is None):
        raise KubeconfigError(f"{path}: client-certificate and client-key go together")
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


def _pem(user: dict[str, Any], key: str, path: Path) -> bytes | None:
    if user.get(f"{key}-data"):
        return _decode(user[f"{key}-data"], f"{key}-data", path)
    if user.get(key):
        try:
            return Path(_relative(user[key], path)).read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"{path}: cannot read {key}: {exc.strerror}") from None
    return None


def _load_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` reads files only: the PEMs go through a private temporary
    directory that is gone before this returns."""
    with tempfile.TemporaryDirectory(prefix="cluster-client-") as directory:
        cert_path, key_path = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except (ssl.SSLError, OSError) as exc:
            raise KubeconfigError(f"the client certificate or key is not usable: {exc}") from None
