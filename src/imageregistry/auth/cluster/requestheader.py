"""The front-proxy contract's settings read from the cluster, as extension API servers do.

kube-apiserver publishes what its aggregator sends in the ConfigMap
`kube-system/extension-apiserver-authentication`: the request-header CA
(`requestheader-client-ca-file`, PEM) and, as JSON lists, the allowed Common Names and the
header names (`requestheader-allowed-names`, `-username-headers`, `-group-headers`,
`-extra-headers-prefix`). In cluster mode without `requestheader_client_ca_file` the
registry reads them there (its service account needs `get` on that ConfigMap: the cluster's
Role `extension-apiserver-authentication-reader`), and reads them again every
`RELOAD_SECONDS` so a rotated CA takes effect without a restart. A read that fails or gives
something unusable leaves the values in use as they were (the log says why); settings that
are given explicitly win over the ConfigMap's (docs/operations.md, "The image API as an
aggregated API").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from imageregistry.auth.cluster.client import ClusterClient
from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.auth.requestheader import (
    RELOAD_SECONDS,
    RequestHeaderConfigError,
    load_ca_bundle,
)

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
NAME = "extension-apiserver-authentication"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"
SOURCE = f"ConfigMap {NAMESPACE}/{NAME}"


@dataclass(frozen=True)
class ClusterRequestHeader:
    """What the ConfigMap says; a list the ConfigMap does not have is empty."""

    pem: bytes
    cas: tuple[x509.Certificate, ...]
    allowed_names: tuple[str, ...]
    username_headers: tuple[str, ...]
    group_headers: tuple[str, ...]
    extra_headers_prefix: tuple[str, ...]


def _string_list(data: dict[str, Any], key: str) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None or raw == "":
        return ()
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if value is None:  # JSON null: kube writes it for an unset list
        if raw == "null":
            return ()
        raise RequestHeaderConfigError(f"{SOURCE}: {key} is not a JSON list of strings")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestHeaderConfigError(f"{SOURCE}: {key} is not a JSON list of strings")
    return tuple(v for v in value if v)


def parse(configmap: dict[str, Any]) -> ClusterRequestHeader:
    """The request-header settings of the ConfigMap object, or RequestHeaderConfigError."""
    data = configmap.get("data")
    if not isinstance(data, dict):
        raise RequestHeaderConfigError(f"{SOURCE} has no data")
    pem = data.get("requestheader-client-ca-file")
    if not isinstance(pem, str) or not pem.strip():
        raise RequestHeaderConfigError(
            f"{SOURCE} has no requestheader-client-ca-file: the cluster's API server does"
            " not configure a front proxy (set requestheader_client_ca_file instead)"
        )
    raw = pem.encode()
    return ClusterRequestHeader(
        pem=raw,
        cas=load_ca_bundle(raw, f"{SOURCE} requestheader-client-ca-file"),
        allowed_names=_string_list(data, "requestheader-allowed-names"),
        username_headers=_string_list(data, "requestheader-username-headers"),
        group_headers=_string_list(data, "requestheader-group-headers"),
        extra_headers_prefix=_string_list(data, "requestheader-extra-headers-prefix"),
    )


def read(client: ClusterClient) -> ClusterRequestHeader:
    """GET and parse the ConfigMap; RequestHeaderConfigError says why it cannot be used."""
    try:
        configmap = client.get(PATH, "ConfigMap")
    except ClusterUnavailable as exc:
        raise RequestHeaderConfigError(f"{SOURCE}: {exc}") from None
    return parse(configmap)


class ConfigMapCABundle:
    """The request-header CA (and allowed names) from the cluster, with the interface of
    `auth.requestheader.CABundleFile`: `refresh` (called on every request) only reports
    the generation; `poll` (called off the event loop by the front-proxy listener) reads
    the ConfigMap again when `interval` has passed."""

    def __init__(
        self,
        client: ClusterClient,
        first: ClusterRequestHeader,
        *,
        allowed_names: tuple[str, ...] = (),
        interval: float = RELOAD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`allowed_names`, when not empty, is the explicit setting and wins over the
        ConfigMap's."""
        self._client = client
        self._explicit_names = allowed_names
        self._interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.current = first
        self.generation = 0
        self._next = monotonic() + interval

    @property
    def pem(self) -> bytes:
        return self.current.pem

    @property
    def cas(self) -> tuple[x509.Certificate, ...]:
        return self.current.cas

    @property
    def allowed_names(self) -> tuple[str, ...]:
        return self._explicit_names or self.current.allowed_names

    def refresh(self) -> int:
        return self.generation

    def poll(self) -> int:
        """Read the ConfigMap again if it is time to; the generation after that."""
        now = self._monotonic()
        with self._lock:
            if now < self._next:
                return self.generation
            self._next = now + self._interval
            try:
                fresh = read(self._client)
            except RequestHeaderConfigError as exc:
                log.warning("%s cannot be used (%s); the values read before stay", SOURCE, exc)
                return self.generation
            if (fresh.pem, fresh.allowed_names) != (self.current.pem, self.current.allowed_names):
                self.current = fresh
                self.generation += 1
                log.info("%s re-read: %d CA(s)", SOURCE, len(fresh.cas))
            return self.generation
