"""Kubeconfig files for the registry's own access to a cluster (`cluster_kubeconfig`)."""

from __future__ import annotations

from pathlib import Path

import yaml


def token_kubeconfig(path: Path, server: str, token: str) -> Path:
    """A kubeconfig at `path` naming one cluster at `server` (plain HTTP, a fake
    kube-apiserver on loopback) and one user who presents `token`; returns `path`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "registry", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "registry"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path
