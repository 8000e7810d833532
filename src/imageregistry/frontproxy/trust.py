"""Where the front-proxy contract's CA, allowed names and header names come from.

`requestheader_client_ca_file`, when set, is the CA (re-read when the file changes) and the
`requestheader_*` settings are the rest. In cluster mode without it, the cluster's
ConfigMap `kube-system/extension-apiserver-authentication` gives them, as kube's extension
API servers read it (`auth/cluster/requestheader.py`); a setting given explicitly (allowed
names not empty, header names other than the defaults) still wins. The ConfigMap is read
once here, so a registry that cannot read it does not start (`serve` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imageregistry.auth.cluster import kubeconfig
from imageregistry.auth.cluster.client import ClusterClient
from imageregistry.auth.cluster.requestheader import ConfigMapCABundle, read
from imageregistry.auth.requestheader import (
    DEFAULT_EXTRA_HEADERS_PREFIX,
    DEFAULT_GROUP_HEADERS,
    DEFAULT_USERNAME_HEADERS,
    CABundle,
    CABundleFile,
    HeaderNames,
    RequestHeaderConfig,
)
from imageregistry.config import Settings


@dataclass(frozen=True)
class FrontProxyTrust:
    ca: CABundle
    config: RequestHeaderConfig

    def header_names(self) -> HeaderNames:
        c = self.config
        return HeaderNames(c.username_headers, c.group_headers, c.extra_headers_prefix)


def _pick(
    setting: tuple[str, ...], default: tuple[str, ...], cluster: tuple[str, ...]
) -> tuple[str, ...]:
    if setting != default or not cluster:
        return setting
    return cluster


def front_proxy_trust(settings: Settings) -> FrontProxyTrust | None:
    """The trust of `front_proxy_listen`, or None when that port is off. Raises
    `RequestHeaderConfigError` (or OSError for the file) when it cannot be had."""
    if not settings.front_proxy_listen:
        return None
    if settings.requestheader_client_ca_file:
        ca_file = CABundleFile(Path(settings.requestheader_client_ca_file))
        config = RequestHeaderConfig(
            client_cas=ca_file.cas,
            allowed_names=settings.requestheader_allowed_names,
            username_headers=settings.requestheader_username_headers,
            group_headers=settings.requestheader_group_headers,
            extra_headers_prefix=settings.requestheader_extra_headers_prefix,
        )
        return FrontProxyTrust(ca_file, config)
    client = ClusterClient(
        kubeconfig.load(settings.cluster_kubeconfig), settings.cluster_timeout_seconds
    )
    first = read(client)
    bundle = ConfigMapCABundle(client, first, allowed_names=settings.requestheader_allowed_names)
    config = RequestHeaderConfig(
        client_cas=bundle.cas,
        allowed_names=bundle.allowed_names,
        username_headers=_pick(
            settings.requestheader_username_headers,
            DEFAULT_USERNAME_HEADERS,
            first.username_headers,
        ),
        group_headers=_pick(
            settings.requestheader_group_headers, DEFAULT_GROUP_HEADERS, first.group_headers
        ),
        extra_headers_prefix=_pick(
            settings.requestheader_extra_headers_prefix,
            DEFAULT_EXTRA_HEADERS_PREFIX,
            first.extra_headers_prefix,
        ),
    )
    return FrontProxyTrust(bundle, config)
