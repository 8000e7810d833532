"""The front-proxy contract of Kubernetes extension API servers (request-header authentication).

kube-apiserver's aggregator proxies `/apis/image.alauda.io/...` to us over TLS with its
front-proxy client certificate and names the user it already authenticated in headers:
`X-Remote-User`, one `X-Remote-Group` per group and `X-Remote-Extra-<key>` per extra value
(names configurable like kube-apiserver's `--requestheader-*-headers` flags). Those headers
are believed only when the connection's client certificate chains to the request-header CA
and, when `allowed_names` is not empty, its Common Name is one of them (an empty list means
any certificate that CA signed, as in Kubernetes). On any other request they are ignored
and `strip` removes them, so a forged `X-Remote-User` never grants anything: the request is
then authenticated by its own credentials (or is anonymous).

The chain comes from the ASGI TLS extension (`scope["extensions"]["tls"]
["client_cert_chain"]`, PEM, leaf first), which `frontproxy/listener.py` fills in with
whatever chain the client presented (its handshake judges nothing, so a certificate of
another CA is served as anonymous, as kube-apiserver does); this module is where the chain
is verified, with `cryptography`. Verification results
are remembered per chain (bounded, never past the leaf's expiry): the aggregator presents the
same certificate on every request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from imageregistry.auth.identity import UserInfo, authenticated
from imageregistry.clock import Clock, system_clock
from imageregistry.configerror import ConfigurationError

log = logging.getLogger(__name__)

# The defaults of Kubernetes' generic API server (k8s.io/apiserver) for extension servers.
DEFAULT_USERNAME_HEADERS = ("X-Remote-User",)
DEFAULT_GROUP_HEADERS = ("X-Remote-Group",)
DEFAULT_EXTRA_HEADERS_PREFIX = ("X-Remote-Extra-",)

_CACHE_SIZE = 256
_CACHE_SECONDS = 300.0
_MAX_CHAIN = 8
RELOAD_SECONDS = 10.0
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


class RequestHeaderConfigError(ConfigurationError):
    """The request-header CA bundle or settings cannot be used."""


def load_ca_bundle(pem: bytes, source: str) -> tuple[x509.Certificate, ...]:
    try:
        cas = tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise RequestHeaderConfigError(f"{source}: not a PEM certificate bundle ({exc})") from None
    return cas  # never empty: cryptography refuses a bundle without a certificate


class CABundle(Protocol):
    """Where the request-header CA comes from: a file (`CABundleFile`) or the cluster's
    ConfigMap (`auth/cluster/requestheader.py`). `refresh` is cheap and called per request;
    `poll` may block (file system, network) and is called off the event loop."""

    @property
    def pem(self) -> bytes: ...
    @property
    def cas(self) -> tuple[x509.Certificate, ...]: ...
    @property
    def generation(self) -> int: ...
    @property
    def allowed_names(self) -> tuple[str, ...] | None:
        """The allowed names that come with the CA; None: the configured ones stay."""
        ...

    def refresh(self) -> int: ...
    def poll(self) -> int: ...


class CABundleFile:
    """The request-header CA bundle file, re-read when it changes, as kube-apiserver reloads
    its CA files: a mounted ConfigMap is updated in place when the cluster rotates the CA.
    The file's identity (inode, mtime, size; a ConfigMap volume swaps a symlink) is looked
    at most every `interval` seconds; a changed file that cannot be read or parsed leaves
    the bundle in use as it was (and the log says why)."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = RELOAD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.pem = path.read_bytes()
        self.cas = load_ca_bundle(self.pem, str(path))
        self.generation = 0
        self._next = monotonic() + interval

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self) -> int:
        """The bundle's generation, after looking at the file if it is time to."""
        now = self._monotonic()
        if now < self._next:
            return self.generation
        with self._lock:
            if now < self._next:
                return self.generation
            self._next = now + self._interval
            try:
                stamp = self._stat()
                if stamp == self._stamp:
                    return self.generation
                pem = self.path.read_bytes()
                cas = load_ca_bundle(pem, str(self.path))
            except (OSError, RequestHeaderConfigError) as exc:
                log.warning(
                    "requestheader_client_ca_file %s changed but cannot be used (%s);"
                    " the bundle read before stays in use",
                    self.path,
                    exc,
                )
                return self.generation
            self._stamp, self.pem, self.cas = stamp, pem, cas
            self.generation += 1
            log.info("requestheader_client_ca_file %s re-read: %d CA(s)", self.path, len(cas))
            return self.generation

    def poll(self) -> int:
        return self.refresh()

    @property
    def allowed_names(self) -> tuple[str, ...] | None:
        return None  # a file is only the CA


@dataclass(frozen=True)
class RequestHeaderConfig:
    """What `--requestheader-*` configure: the CA, the allowed names, the header names."""

    client_cas: tuple[x509.Certificate, ...]
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = DEFAULT_USERNAME_HEADERS
    group_headers: tuple[str, ...] = DEFAULT_GROUP_HEADERS
    extra_headers_prefix: tuple[str, ...] = DEFAULT_EXTRA_HEADERS_PREFIX


class HeaderNames:
    """Which request headers belong to the contract (lower-case, as ASGI carries them)."""

    def __init__(
        self, username: Iterable[str], group: Iterable[str], extra_prefix: Iterable[str]
    ) -> None:
        self.username = tuple(h.lower() for h in username if h)
        self.group = tuple(h.lower() for h in group if h)
        self.extra_prefix = tuple(p.lower() for p in extra_prefix if p)
        # Bytes, as ASGI carries header names: `strip` runs on every request of every port.
        self._exact = frozenset(h.encode("latin-1") for h in self.username + self.group)
        self._prefixes = tuple(p.encode("latin-1") for p in self.extra_prefix)
        self._starts = tuple(self._exact) + self._prefixes

    def is_contract_header(self, name: bytes) -> bool:
        name = name.lower()
        return name in self._exact or name.startswith(self._prefixes)

    def strip(self, raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
        """The ASGI header list without the contract's headers; None if it has none.

        ASGI servers lower-case header names, so the common case (no such header) is one
        `startswith` per header (about 1 us for a typical request)."""
        starts = self._starts
        for key, _ in raw:
            if key.startswith(starts):
                break
        else:
            return None
        contract = self.is_contract_header
        return [(k, v) for k, v in raw if not contract(k)]

    def user(self, raw: Sequence[tuple[bytes, bytes]]) -> UserInfo | None:
        """The user the headers name, or None when no username header has a value (kube's
        request-header authenticator then does not authenticate the request at all)."""
        values: dict[str, list[str]] = {}
        for key, value in raw:
            values.setdefault(key.decode("latin-1").lower(), []).append(
                value.decode("utf-8", "replace")
            )
        # As kube: the first value of the first username header that has one; every
        # non-empty group value; extra keys lower-cased, then percent-decoded.
        username = next((values[h][0] for h in self.username if values.get(h, [""])[0]), None)
        if username is None:
            return None
        groups = [v for h in self.group for v in values.get(h, ()) if v]
        extra: dict[str, list[str]] = {}
        for name, vals in values.items():
            for prefix in self.extra_prefix:
                if name.startswith(prefix) and len(name) > len(prefix):
                    escaped = name[len(prefix) :]
                    if _BAD_ESCAPE.search(escaped) is None:  # kube skips undecodable keys
                        extra.setdefault(unquote(escaped), []).extend(vals)
                    break
        return authenticated(username, groups, extra={k: tuple(v) for k, v in extra.items()})


def _is_ca(_policy: object, _cert: x509.Certificate, value: x509.BasicConstraints | None) -> None:
    if value is None or not value.ca:
        raise ValueError("an issuer in the chain is not a CA")


def _client_usage(_policy: object, _cert: x509.Certificate, value: object) -> None:
    """Like Go's x509 verification with `ExtKeyUsageClientAuth`: a leaf that restricts its
    extended key usage must allow client authentication; one without the extension may."""
    if isinstance(value, x509.ExtendedKeyUsage) and not (
        ExtendedKeyUsageOID.CLIENT_AUTH in value
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in value
    ):
        raise ValueError("the certificate is not for client authentication")


class RequestHeaderAuthenticator:
    """Decides whether a TLS client chain is the front proxy's and who the headers name."""

    def __init__(
        self,
        config: RequestHeaderConfig,
        *,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
        ca_file: CABundle | None = None,
    ) -> None:
        """`ca_file`, when given, replaces `config.client_cas` whenever it is re-read."""
        self.config = config
        self._ca_file = ca_file
        self._generation = ca_file.generation if ca_file is not None else 0
        self.headers = HeaderNames(
            config.username_headers, config.group_headers, config.extra_headers_prefix
        )
        self._store = Store(list(config.client_cas))
        self._allowed = frozenset(config.allowed_names)
        self._clock = clock
        self._monotonic = monotonic
        # chain digest -> (accepted, monotonic deadline)
        self._verdicts: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        # Go's x509 checks for the request-header CA are about the path, validity and
        # client usage; cryptography's web-PKI profile would also demand SANs and key
        # usages that kubeadm's front-proxy certificates do not carry.
        self._ca_policy = ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca
        )
        self._ee_policy = ExtensionPolicy.permit_all().may_be_present(
            x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _client_usage
        )

    def proxy_verified(self, chain_pem: Sequence[str]) -> bool:
        """True when `chain_pem` (leaf first) is a front-proxy client certificate."""
        if not chain_pem or len(chain_pem) > _MAX_CHAIN:
            return False
        if self._ca_file is not None and self._ca_file.refresh() != self._generation:
            self._generation = self._ca_file.generation
            self._store = Store(list(self._ca_file.cas))
            if self._ca_file.allowed_names is not None:
                self._allowed = frozenset(self._ca_file.allowed_names)
            self._verdicts.clear()  # decided against the bundle that was replaced
        key = hashlib.sha256("\0".join(chain_pem).encode()).hexdigest()
        now = self._monotonic()
        cached = self._verdicts.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        accepted, expires = self._verify(chain_pem)
        ttl = _CACHE_SECONDS
        if expires is not None:
            ttl = min(ttl, max(0.0, (expires - self._clock()).total_seconds()))
        self._verdicts[key] = (accepted, now + ttl)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > _CACHE_SIZE:
            self._verdicts.popitem(last=False)
        return accepted

    def _verify(self, chain_pem: Sequence[str]) -> tuple[bool, datetime | None]:
        try:
            certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain_pem]
        except ValueError:
            return False, None
        leaf = certs[0]
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(self._clock())
            .extension_policies(ca_policy=self._ca_policy, ee_policy=self._ee_policy)
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, certs[1:])
        except (VerificationError, ValueError):
            return False, None
        if self._allowed:
            names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not any(str(n.value) in self._allowed for n in names):
                return False, None
        return True, leaf.not_valid_after_utc

    def authenticate(
        self, chain_pem: Sequence[str], raw_headers: Sequence[tuple[bytes, bytes]]
    ) -> UserInfo | None:
        """The front proxy's user, or None (not the front proxy, or no username header)."""
        if not chain_pem or not self.proxy_verified(chain_pem):
            return None
        return self.headers.user(raw_headers)
