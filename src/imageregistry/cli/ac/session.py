"""The kubeconfig `ac` shares with kubectl, and HTTP clients built from it.

The file is `--kubeconfig`, else the first path of `$KUBECONFIG`, else `~/.kube/config`
(kubectl's lookup; merging several files is not supported). `Kubeconfig` reads and writes
the parts `ac` uses — clusters (server, CA data or file, insecure flag), users (token) and
contexts (cluster, user, namespace) — and keeps every other key untouched so kubectl's own
settings survive an `ac login`. `Session` is the resolved view for one command: global flags
(`--server`, `--token`, `-n`, ...) override the current context, like kubectl's.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from imageregistry.cli.ac.errors import CliError


def default_kubeconfig_path(flag: str | None = None) -> Path:
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    if first:
        return Path(first).expanduser()
    return Path.home() / ".kube" / "config"


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((i for i in items if isinstance(i, dict) and i.get("name") == name), None)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """`expected ..., but found ':' at line 1, column 1` (PyYAML's own text spans lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(exc)


@dataclass
class Kubeconfig:
    """A kubeconfig document (dicts live only here, at the file-format edge)."""

    path: Path
    doc: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Kubeconfig:
        if not path.exists():
            return cls(path, {"apiVersion": "v1", "kind": "Config", "preferences": {}})
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise CliError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CliError(f"kubeconfig {path} is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(doc, dict):
            raise CliError(f"kubeconfig {path} is not a mapping")
        return cls(path, doc)

    def _list(self, key: str) -> list[dict[str, Any]]:
        value = self.doc.get(key)
        if not isinstance(value, list):
            value = []
            self.doc[key] = value
        return value

    @property
    def current_context(self) -> str:
        return str(self.doc.get("current-context") or "")

    def _inner(self, key: str, name: str, inner: str) -> dict[str, Any]:
        entry = _named(self._list(key), name)
        value = (entry.get(inner) or {}) if entry else {}
        if not isinstance(value, dict):
            raise CliError(
                f"kubeconfig {self.path}: {key} entry {name!r} has no {inner} mapping"
                f" — fix the file or run 'ac login' with another --kubeconfig"
            )
        return dict(value)

    def context(self, name: str) -> dict[str, Any]:
        return self._inner("contexts", name, "context")

    def cluster(self, name: str) -> dict[str, Any]:
        return self._inner("clusters", name, "cluster")

    def user(self, name: str) -> dict[str, Any]:
        return self._inner("users", name, "user")

    def set_entry(self, key: str, name: str, inner: str, value: dict[str, Any]) -> None:
        items = self._list(key)
        entry = _named(items, name)
        if entry is None:
            items.append({"name": name, inner: value})
        else:
            entry[inner] = value

    def use(self, context: str) -> None:
        self.doc["current-context"] = context

    def save(self) -> None:
        """Write atomically (a temporary file renamed over the old one): never half a file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".kubeconfig-")
        except OSError as exc:
            raise CliError(f"cannot write kubeconfig {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w") as handle:
                yaml.safe_dump(self.doc, handle, sort_keys=False)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise CliError(f"cannot write kubeconfig {self.path}: {exc.strerror}") from None
            raise


@dataclass(frozen=True)
class GlobalOptions:
    """kubectl-like global flags."""

    kubeconfig: str | None = None
    context: str | None = None
    server: str | None = None
    token: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    as_user: str | None = None
    insecure: bool = False
    certificate_authority: str | None = None
    verbosity: int = 0


@dataclass(frozen=True)
class Session:
    """Where and as whom one command talks to the server."""

    server: str
    token: str
    namespace: str
    verify: bool | str | ssl.SSLContext
    ca_pem: bytes | None
    as_user: str | None
    context: str
    user_name: str
    verbosity: int = 0

    @property
    def registry_host(self) -> str:
        return urlsplit(self.server).netloc

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "ac/0.1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.as_user:
            headers["Impersonate-User"] = self.as_user
        return headers

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.server,
            headers=self.headers(),
            verify=self.verify,
            timeout=timeout,
            event_hooks={"request": [self._log]} if self.verbosity >= 6 else {},
        )

    def _log(self, request: httpx.Request) -> None:
        import click

        click.echo(f"I0000 {request.method} {request.url}", err=True)


def verify_setting(
    ca_data: str | None, ca_file: str | None, insecure: bool
) -> tuple[bool | str | ssl.SSLContext, bytes | None]:
    """httpx `verify` plus the CA PEM (kept so `ac registry login` can report it)."""
    if insecure:
        return False, None
    if ca_file:
        path = Path(ca_file).expanduser()
        try:
            pem = path.read_bytes()
            context = ssl.create_default_context(cadata=pem.decode("latin-1"))
        except (ssl.SSLError, ValueError):  # before OSError: SSLError is one
            raise CliError(
                f"certificate authority file {path} holds no PEM certificate"
                " — pass the server's CA certificate (ca.crt)"
            ) from None
        except OSError as exc:
            reason = exc.strerror
            raise CliError(f"cannot read certificate authority file {path}: {reason}") from None
        return context, pem
    if ca_data:
        # An in-memory context: a temporary CA file per command would litter /tmp.
        try:
            pem = base64.b64decode(ca_data)
            context = ssl.create_default_context(cadata=pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            raise CliError(
                f"the kubeconfig's certificate-authority-data is not a PEM certificate ({exc})"
                " — run 'ac login' again"
            ) from None
        return context, pem
    return True, None


def server_url(text: str) -> str:
    """`text` as a base URL; like kubectl, a bare `HOST:PORT` means https."""
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CliError(f"invalid server URL {text!r} ({exc}) — use https://HOST:PORT") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(f"invalid server URL {text!r} — use https://HOST:PORT")
    return url


def resolve(opts: GlobalOptions) -> Session:
    """Merge the kubeconfig's current context with the global flags."""
    config = Kubeconfig.load(default_kubeconfig_path(opts.kubeconfig))
    context_name = opts.context or config.current_context
    if opts.context and not config.context(opts.context):
        raise CliError(f'context "{opts.context}" does not exist in {config.path}')
    ctx = config.context(context_name)
    cluster = config.cluster(str(ctx.get("cluster", "")))
    user = config.user(str(ctx.get("user", "")))
    server = opts.server or str(cluster.get("server") or "")
    if not server:
        raise CliError(
            f"no server found in {config.path} — run 'ac login' with the server's URL (https://HOST:PORT)"
        )
    server = server_url(server)
    verify, pem = verify_setting(
        cluster.get("certificate-authority-data"),
        opts.certificate_authority or cluster.get("certificate-authority"),
        opts.insecure or bool(cluster.get("insecure-skip-tls-verify")),
    )
    return Session(
        server=server,
        token=opts.token or str(user.get("token") or ""),
        namespace=opts.namespace or str(ctx.get("namespace") or "default"),
        verify=verify,
        ca_pem=pem,
        as_user=opts.as_user,
        context=context_name,
        user_name=str(ctx.get("user", "")),
        verbosity=opts.verbosity,
    )
