"""The one validation step of `image-registry serve` (docs/architecture.md, "Configuration").

`load_settings` checks each setting's form; `validate` checks what the settings point at —
files, a storage location, a bucket, addresses, the database URL — so a setting that
would only fail inside a worker (and make Granian restart it in a loop) stops the start
instead, with one line naming the setting. Every check raises `ConfigurationError`; the
database itself is opened right after, by the first-start preparation, which reports an
unreachable database the same way.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from imageregistry.config import Settings
from imageregistry.configerror import ConfigurationError


def validate(settings: Settings) -> None:
    """Raise `ConfigurationError` for the first setting the server cannot run with.

    Local checks come first, the storage location (which may be a bucket across the
    network) last."""
    for check in CHECKS:
        check(settings)


def _database_url(settings: Settings) -> None:
    from imageregistry.metadata.engine import normalize_url

    normalize_url(settings.database_url)


def _audit_log(settings: Settings) -> None:
    """A policy that does not parse, or a log that cannot be opened."""
    from imageregistry.observability.audit import build_auditor

    auditor = build_auditor(settings)
    if auditor is not None:
        auditor.writer.close()


def _htpasswd(settings: Settings) -> None:
    """Workers load the file when they start; a missing or malformed one would crash
    every worker. (Once running, a file that turns bad only stops password logins.)"""
    if not settings.htpasswd_file:
        return
    from imageregistry.auth.htpasswd import Htpasswd, HtpasswdError

    path = settings.htpasswd_file
    try:
        Htpasswd.load(Path(path))
    except OSError as exc:
        raise ConfigurationError(f"htpasswd_file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"htpasswd_file {path}: not UTF-8 text") from None
    except HtpasswdError as exc:  # its message starts with the path and line
        raise ConfigurationError(f"htpasswd_file {exc}") from None


def _tls_files(settings: Settings) -> None:
    """The serving certificate and key given by the operator must load as a pair."""
    cert, key = settings.tls_cert_file, settings.tls_private_key_file
    if settings.plain_http or not (cert and key):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert_pem = _readable("tls_cert_file", cert)
    key_pem = _readable("tls_private_key_file", key)
    try:
        x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigurationError(f"tls_cert_file {cert}: not a PEM certificate") from None
    try:
        load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"tls_private_key_file {key}: not an unencrypted PEM private key"
        ) from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"tls_private_key_file {key} does not belong to tls_cert_file {cert}:"
            f" {exc.reason or exc}"
        ) from None


def _front_proxy_ca(settings: Settings) -> None:
    """The request-header CA: the bundle file, or the cluster's ConfigMap when no file is
    named (errors of both are `ConfigurationError`s)."""
    from imageregistry.frontproxy.trust import front_proxy_trust

    try:
        front_proxy_trust(settings)
    except OSError as exc:
        raise ConfigurationError(
            f"requestheader_client_ca_file {settings.requestheader_client_ca_file}:"
            f" {exc.strerror or exc}"
        ) from None


def _cluster_config(settings: Settings) -> None:
    """Cluster mode needs a readable cluster configuration with a usable credential."""
    if settings.auth_mode != "kubernetes":
        return
    from imageregistry.auth.cluster import kubeconfig

    kubeconfig.load(settings.cluster_kubeconfig).bearer()


def _notifications(settings: Settings) -> None:
    from imageregistry.notifications.config import endpoints

    endpoints(settings.notifications)


def _addresses(settings: Settings) -> None:
    """Granian binds the main port with SO_REUSEPORT, so without this check a second
    `serve` on the same address would start and silently take a share of the connections
    of the one already running."""
    from imageregistry.blobport.sockets import check_bindable

    wanted = [("listen", settings.listen)]
    for setting in ("blob_listen", "metrics_listen", "front_proxy_listen"):
        if getattr(settings, setting):
            wanted.append((setting, getattr(settings, setting)))
    for setting, listen in wanted:
        problem = check_bindable(listen, setting)
        if problem:
            raise ConfigurationError(problem)


def _data_dir(settings: Settings) -> None:
    """The data dir holds the database (SQLite), TLS material and run-time state."""
    _writable_dir("data_dir", settings.data_dir)


def _storage(settings: Settings) -> None:
    """The blob store must open; a directory must be writable, a bucket reachable and
    usable with the configured credentials."""
    from imageregistry.storage import check_blob_store, open_blob_store
    from imageregistry.storage.filesystem import FilesystemBlobStore

    store = open_blob_store(settings.storage_url, s3=settings.storage_s3)
    if isinstance(store, FilesystemBlobStore):
        _writable_dir("storage", store.root)
    else:
        check_blob_store(store)


def _readable(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{setting} {path}: {exc.strerror or exc}") from None


def _writable_dir(setting: str, root: Path) -> None:
    """Create the directory if needed and prove a file can be written in it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=root)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigurationError(f"{setting} {root}: {exc.strerror or exc}") from None


CHECKS: tuple[Callable[[Settings], None], ...] = (
    _database_url,
    _audit_log,
    _htpasswd,
    _tls_files,
    _front_proxy_ca,
    _cluster_config,
    _notifications,
    _addresses,
    _data_dir,
    _storage,
)
