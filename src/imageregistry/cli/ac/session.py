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
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from imageregistry.cli.ac.errors import LOGIN_HINT, CliError, from_response


def default_kubeconfig_path(flag: str | None = None) -> Path:
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    if first:
        return Path(first).expanduser()
    return Path.home() / ".kube" / "config"


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((i for i in items if i.get("name") == name), None)


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
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read kubeconfig {path}: {exc}") from None
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

    def context(self, name: str) -> dict[str, Any]:
        entry = _named(self._list("contexts"), name)
        return dict(entry.get("context") or {}) if entry else {}

    def cluster(self, name: str) -> dict[str, Any]:
        entry = _named(self._list("clusters"), name)
        return dict(entry.get("cluster") or {}) if entry else {}

    def user(self, name: str) -> dict[str, Any]:
        entry = _named(self._list("users"), name)
        return dict(entry.get("user") or {}) if entry else {}

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".kubeconfig-")
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(self.doc, handle, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


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

    def get_json(self, client: httpx.Client, path: str, **kwargs: Any) -> Any:
        response = client.get(path, **kwargs)
        if response.status_code >= 400:
            raise from_response(response)
        return response.json()


def verify_setting(
    ca_data: str | None, ca_file: str | None, insecure: bool
) -> tuple[bool | str | ssl.SSLContext, bytes | None]:
    """httpx `verify` plus the CA PEM (kept so `ac registry login` can report it)."""
    if insecure:
        return False, None
    if ca_file:
        path = Path(ca_file).expanduser()
        if not path.exists():
            raise CliError(f"certificate authority file {path} does not exist")
        return str(path), path.read_bytes()
    if ca_data:
        # An in-memory context: a temporary CA file per command would litter /tmp.
        pem = base64.b64decode(ca_data)
        try:
            context = ssl.create_default_context(cadata=pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            raise CliError(
                f"the kubeconfig's certificate-authority-data is not a PEM certificate ({exc})"
                " — run 'ac login' again"
            ) from None
        return context, pem
    return True, None


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
        raise CliError(f"no server found in {config.path} — {LOGIN_HINT} SERVER first")
    verify, pem = verify_setting(
        cluster.get("certificate-authority-data"),
        opts.certificate_authority or cluster.get("certificate-authority"),
        opts.insecure or bool(cluster.get("insecure-skip-tls-verify")),
    )
    return Session(
        server=server.rstrip("/"),
        token=opts.token or str(user.get("token") or ""),
        namespace=opts.namespace or str(ctx.get("namespace") or "default"),
        verify=verify,
        ca_pem=pem,
        as_user=opts.as_user,
        context=context_name,
        user_name=str(ctx.get("user", "")),
        verbosity=opts.verbosity,
    )
