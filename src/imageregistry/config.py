"""Server settings from defaults, a config file, environment variables and flags.

Precedence, lowest first: built-in defaults, the config file (YAML, keys named like the
flags with dashes or underscores), environment variables `IMAGE_REGISTRY_<OPTION>` and
command-line flags. Unknown keys in the config file are a configuration error rather
than silently ignored, so a typo never leaves a server running with defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imageregistry.configerror import ConfigurationError as ConfigurationError

ENV_PREFIX = "IMAGE_REGISTRY_"
CPU_AFFINITY_MODES = ("auto", "on", "off")
LOG_FORMATS = ("text", "json")
AUTH_MODES = ("local", "kubernetes")
LOG_LEVELS = ("critical", "error", "warning", "warn", "info", "debug", "notset")  # Granian's


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    listen: str = "127.0.0.1:5000"
    database: str = ""  # default: sqlite inside data_dir
    storage: str = ""  # default: filesystem inside data_dir
    workers: int = 1
    plain_http: bool = False
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    tls_san: tuple[str, ...] = ()
    htpasswd_file: str = ""
    public_url: str = ""  # how clients reach us; default derived from listen
    blob_fsync: bool = True
    blob_direct_io: bool = True  # stage large uploads with O_DIRECT where supported
    gc_grace_seconds: int = 3600
    upload_max_age_seconds: int = 86400
    reconcile_grace_seconds: int = 86400  # `gc --reconcile` ignores younger unknown bytes
    pull_times_flush_seconds: int = 2  # pull times are written this often (and on stop)
    upload_max_open_per_user: int = 100  # open upload sessions per identity; 0 = no cap
    upload_max_staged_bytes_per_user: int = 100 << 30  # staged bytes per identity; 0 = no cap
    token_ttl_seconds: int = 86400
    failed_logins_per_minute: int = 20  # per source address and per user; 0 = unlimited
    refresh_token_ttl_seconds: int = 2592000  # 30 days; refresh tokens of the token endpoint
    log_level: str = "info"
    log_format: str = "text"  # text | json: the server's own log lines (not Granian's)
    cpu_affinity: str = "off"  # off | auto | on: pin each worker's runtime to a CPU
    blob_listen: str = ""  # HOST:PORT of the zero-copy blob port (plain HTTP); "" = off
    blob_public_url: str = ""  # how clients reach the blob port; default derived per request
    metrics_listen: str = ""  # HOST:PORT serving /metrics too (plain HTTP); "" = main port only
    watch_max_per_user: int = 100  # concurrent watches per user and process; 429 beyond
    watch_max_total: int = 1000  # concurrent watches per process; 429 beyond
    watch_history_seconds: int = 3600  # change log kept for watches to resume; 0 = all
    shutdown_delay_seconds: int = 0  # on SIGTERM: /readyz 503 and keep serving this long first
    # The aggregated API (docs/operations.md, "The image API as an aggregated API"): a TLS
    # port that requests client certificates, and kube-apiserver's --requestheader-* flags.
    front_proxy_listen: str = ""  # HOST:PORT the APIService's Service targets; "" = off
    requestheader_client_ca_file: str = ""  # CA bundle the front proxy's certificate chains to
    requestheader_allowed_names: tuple[str, ...] = ()  # its Common Names; () = any the CA signed
    requestheader_username_headers: tuple[str, ...] = ("X-Remote-User",)
    requestheader_group_headers: tuple[str, ...] = ("X-Remote-Group",)
    requestheader_extra_headers_prefix: tuple[str, ...] = ("X-Remote-Extra-",)
    audit_log_path: str = ""  # audit.k8s.io/v1 events, one JSON line each; "-" = stdout; "" = off
    audit_policy_file: str = ""  # audit.k8s.io/v1 Policy (needed with audit_log_path)
    audit_log_maxsize: int = 100  # megabytes before the audit log is rotated; 0 = never
    audit_log_maxbackup: int = 10  # rotated audit logs kept; 0 = all
    # Cluster mode (auth/cluster/): identities and RBAC are a Kubernetes cluster's.
    auth_mode: str = "local"  # local | kubernetes
    cluster_kubeconfig: str = ""  # "" = in-cluster (service-account mount + KUBERNETES_SERVICE_*)
    cluster_audiences: tuple[str, ...] = ()  # TokenReview spec.audiences; () = the cluster's own
    cluster_timeout_seconds: int = 10  # per network step of one review request
    cluster_authn_cache_ttl_seconds: int = 120  # authenticated TokenReview answers
    cluster_authn_failure_cache_ttl_seconds: int = 10  # rejected tokens
    cluster_authz_allowed_ttl_seconds: int = 60  # allowed SubjectAccessReview answers
    cluster_authz_denied_ttl_seconds: int = 10  # denied ones
    cluster_cache_size: int = 4096  # entries per cache (tokens, decisions), per process
    # The storage_s3: block (storage/s3config.py); JSON/YAML mapping in the environment.
    storage_s3: Mapping[str, Any] = field(default_factory=dict)
    # The notifications: block (notifications/config.py); JSON/YAML mapping in the
    # environment. Out of repr: header values may be credentials.
    notifications: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def storage_url(self) -> str:
        return self.storage or str((self.data_dir / "blobs").resolve())

    @property
    def scheme(self) -> str:
        return "http" if self.plain_http else "https"

    @property
    def server_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{self.scheme}://{self.listen}"

    @property
    def registry_host(self) -> str:
        """Host[:port] used in image references (dockerImageReference)."""
        return self.server_url.split("://", 1)[1]


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigurationError(f"{name}: expected a boolean, got {value!r}")
    if kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{name}: expected an integer, got {value!r}") from None
    if kind == "Path":
        return Path(str(value))
    if kind == "Mapping[str, Any]":
        from imageregistry.storage.s3config import validate_block

        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise ConfigurationError(f"{name}: expected a mapping{_got(name, value)}") from None
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{name}: expected a mapping{_got(name, value)}")
        if name == "notifications":
            from imageregistry.notifications.config import validate_block as notifications

            return notifications(value)
        return validate_block(value)
    if kind == "tuple[str, ...]":
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(str(v) for v in value)
    return str(value)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's problem and where, in one line (its own text spans several, with a
    caret under a copy of the line)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def _got(name: str, value: Any) -> str:
    """The value for an error message, except where it may hold credentials."""
    return "" if name == "notifications" else f", got {value!r}"


def _normalize_keys(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ConfigurationError(f"{source}: unknown option {key!r}")
        out[name] = _coerce(name, value)
    return out


def load_settings(
    flags: Mapping[str, Any], config_file: str | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Merge defaults, file, environment and flags (None-valued flags are unset)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(
                f"config file {path} is not valid YAML: {_yaml_problem(exc)}"
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"config file {path} must hold a mapping")
        values.update(_normalize_keys(loaded, path))
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw)
    values.update(_normalize_keys({k: v for k, v in flags.items() if v is not None}, "flags"))
    settings = Settings(**values)
    if ":" not in settings.listen:
        raise ConfigurationError(f"listen: expected HOST:PORT, got {settings.listen!r}")
    if settings.workers < 1:
        raise ConfigurationError("workers must be at least 1")
    if settings.pull_times_flush_seconds < 1:
        raise ConfigurationError("pull_times_flush_seconds must be at least 1")
    for name in ("upload_max_open_per_user", "upload_max_staged_bytes_per_user"):
        if getattr(settings, name) < 0:
            raise ConfigurationError(f"{name} must be 0 (no cap) or more")
    if settings.reconcile_grace_seconds < 0:
        raise ConfigurationError("reconcile_grace_seconds must not be negative")
    if settings.shutdown_delay_seconds < 0:
        raise ConfigurationError("shutdown_delay_seconds must not be negative")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigurationError(
            f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r}"
        )
    if settings.log_format not in LOG_FORMATS:
        raise ConfigurationError(
            f"log_format: expected one of {', '.join(LOG_FORMATS)}, got {settings.log_format!r}"
        )
    if settings.cpu_affinity not in CPU_AFFINITY_MODES:
        raise ConfigurationError(
            f"cpu_affinity: expected one of {', '.join(CPU_AFFINITY_MODES)},"
            f" got {settings.cpu_affinity!r}"
        )
    _check_blob_port(settings)
    _check_cluster_mode(settings)
    _check_metrics_listen(settings)
    _check_front_proxy(settings)
    _check_watches(settings)
    _check_audit(settings)
    return settings


def _check_audit(settings: Settings) -> None:
    if settings.audit_log_path and not settings.audit_policy_file:
        raise ConfigurationError(
            "audit_log_path needs audit_policy_file (the policy decides what is written;"
            " without one nothing would be)"
        )
    if settings.audit_policy_file and not settings.audit_log_path:
        raise ConfigurationError("audit_policy_file is set but audit_log_path is not")
    for name in ("audit_log_maxsize", "audit_log_maxbackup"):
        if getattr(settings, name) < 0:
            raise ConfigurationError(f"{name} must be 0 or more")


def _check_cluster_mode(settings: Settings) -> None:
    if settings.auth_mode not in AUTH_MODES:
        raise ConfigurationError(
            f"auth_mode: expected one of {', '.join(AUTH_MODES)}, got {settings.auth_mode!r}"
        )
    if settings.auth_mode == "local":
        if settings.cluster_kubeconfig:
            raise ConfigurationError("cluster_kubeconfig is set but auth_mode is not kubernetes")
        return
    if settings.htpasswd_file:
        raise ConfigurationError(
            "htpasswd_file cannot be used with auth_mode kubernetes: the cluster authenticates"
        )
    if settings.cluster_timeout_seconds < 1:
        raise ConfigurationError("cluster_timeout_seconds must be at least 1")
    for name in (
        "cluster_authn_cache_ttl_seconds",
        "cluster_authn_failure_cache_ttl_seconds",
        "cluster_authz_allowed_ttl_seconds",
        "cluster_authz_denied_ttl_seconds",
        "cluster_cache_size",
    ):
        if getattr(settings, name) < 0:
            raise ConfigurationError(f"{name} must be 0 (no caching) or more")


def _check_watches(settings: Settings) -> None:
    for name in ("watch_max_per_user", "watch_max_total"):
        if getattr(settings, name) < 1:
            raise ConfigurationError(f"{name} must be at least 1")
    if settings.watch_history_seconds < 0:
        raise ConfigurationError("watch_history_seconds must be 0 (keep all) or more")


def _check_front_proxy(settings: Settings) -> None:
    if not settings.front_proxy_listen:
        return
    _, sep, port = settings.front_proxy_listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"front_proxy_listen: expected HOST:PORT, got {settings.front_proxy_listen!r}"
        )
    if settings.plain_http:
        raise ConfigurationError(
            "front_proxy_listen needs TLS: the front proxy is recognised by its client"
            " certificate (turn plain_http off)"
        )
    if not settings.requestheader_client_ca_file and settings.auth_mode != "kubernetes":
        raise ConfigurationError(
            "front_proxy_listen needs requestheader_client_ca_file: the CA the front"
            " proxy's client certificate chains to (in auth_mode kubernetes it is read"
            " from the cluster's ConfigMap extension-apiserver-authentication instead)"
        )
    if not settings.requestheader_username_headers:
        raise ConfigurationError("requestheader_username_headers must name at least one header")
    taken = {settings.port: "listen"}
    for name in ("blob_listen", "metrics_listen"):
        other = getattr(settings, name)
        if other:
            taken[int(other.rpartition(":")[2])] = name
    if int(port) in taken:
        raise ConfigurationError(
            f"front_proxy_listen {settings.front_proxy_listen}: the port is {taken[int(port)]}'s"
        )


def _check_metrics_listen(settings: Settings) -> None:
    if not settings.metrics_listen:
        return
    _, sep, port = settings.metrics_listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"metrics_listen: expected HOST:PORT, got {settings.metrics_listen!r}"
        )
    taken = {settings.port: "listen"}
    if settings.blob_listen:
        taken[int(settings.blob_listen.rpartition(":")[2])] = "blob_listen"
    if int(port) in taken:
        raise ConfigurationError(
            f"metrics_listen {settings.metrics_listen}: the port is {taken[int(port)]}'s"
        )


def _check_blob_port(settings: Settings) -> None:
    if settings.blob_public_url and not settings.blob_listen:
        raise ConfigurationError("blob_public_url is set but blob_listen is not")
    if not settings.blob_listen:
        return
    _, sep, port = settings.blob_listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"blob_listen: expected HOST:PORT, got {settings.blob_listen!r}")
    if not settings.plain_http:
        raise ConfigurationError(
            "blob_listen needs plain_http: the blob port sends files with sendfile(2), which"
            " cannot encrypt, so it serves plain HTTP only (put both ports behind your TLS proxy)"
        )
    if int(port) == settings.port:  # even on another address: one name may cover both
        raise ConfigurationError(
            f"blob_listen {settings.blob_listen}: use a port other than the API's ({port})"
        )
    if settings.blob_public_url and not settings.blob_public_url.startswith(
        ("http://", "https://")
    ):
        raise ConfigurationError(
            "blob_public_url: expected an http:// or https:// URL,"
            f" got {settings.blob_public_url!r}"
        )


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Serialize settings for worker processes (Granian imports the app factory anew)."""
    out: dict[str, str] = {}
    for name in _FIELDS:
        value = getattr(settings, name)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, Mapping):
            value = json.dumps(dict(value))
        out[ENV_PREFIX + name.upper()] = str(value)
    return out
