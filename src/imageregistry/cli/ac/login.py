"""Session commands: `ac login`, `ac logout`, `ac whoami`, `ac project`, `ac registry login`.

`ac login SERVER` proves the credentials and writes a cluster, user and context into the kubeconfig
kubectl reads, so both tools share the session afterwards. A password is traded once for a token at
the token endpoint the registry names in its `/v2/` Bearer challenge
(docs/behaviour.md#access-control); only the token is stored. `ac registry login` writes a
docker/containers auth entry (`user:token`, the password-is-a-token form the registry accepts) for
skopeo, podman and docker.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import httpx

from imageregistry import apigroups
from imageregistry.cli.ac.errors import LOGIN_HINT, CliError, from_response
from imageregistry.cli.ac.options import common_options, global_options, session
from imageregistry.cli.ac.session import (
    Kubeconfig,
    Session,
    default_kubeconfig_path,
    server_url,
    verify_setting,
)

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def whoami_user(client: httpx.Client) -> dict[str, Any]:
    """The caller's user info from a SelfSubjectReview (what `kubectl auth whoami` asks)."""
    response = client.post(
        f"/apis/{apigroups.AUTHENTICATION}/v1/selfsubjectreviews",
        json={"apiVersion": f"{apigroups.AUTHENTICATION}/v1", "kind": "SelfSubjectReview"},
    )
    if response.status_code >= 400:
        raise from_response(response)
    info = response.json().get("status", {}).get("userInfo", {})
    return info if isinstance(info, dict) else {}


def exchange_password(client: httpx.Client, username: str, password: str) -> str:
    """Trade a password for a token at the realm of the `/v2/` Bearer challenge."""
    ping = client.get("/v2/")
    challenge = ping.headers.get("www-authenticate", "")
    # The realm of the Bearer challenge; a registry open to anonymous pings has none, so
    # fall back to this server's own token endpoint.
    params = dict(_CHALLENGE.findall(challenge)) if challenge.lower().startswith("bearer") else {}
    realm = params.pop("realm", "") or "/v2/token"
    response = client.get(realm, params=params, auth=(username, password))
    if response.status_code == 401:
        raise CliError("login failed (401 Unauthorized) — check the username and password")
    if response.status_code >= 400:
        raise from_response(response)
    body = response.json()
    token = body.get("token") or body.get("access_token")
    if not token:
        raise CliError("the token endpoint answered without a token")
    return str(token)


def _read_password() -> str:
    """Prompt on a terminal; read one line from a pipe (no getpass echo warning there)."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True))
    line = sys.stdin.readline()
    if not line:
        raise CliError("no password given — pass -p PASSWORD, or --token TOKEN")
    return line.rstrip("\r\n")


def _names(server: str, username: str) -> tuple[str, str, str]:
    cluster = urlsplit(server).netloc.replace(".", "-")
    user = f"{username}/{cluster}"
    return cluster, user, user


@click.command("login")
@click.argument("server_arg", metavar="SERVER", required=False)
@click.option("-u", "--username", help="Username (htpasswd user).")
@click.option("-p", "--password", help="Password; prompted for when -u is given alone.")
@common_options
@click.pass_context
def login(
    ctx: click.Context, server_arg: str | None, username: str | None, password: str | None
) -> None:
    """Log in to a Registry v2 server and save the session in the kubeconfig."""
    opts = global_options(ctx)
    config = Kubeconfig.load(default_kubeconfig_path(opts.kubeconfig))
    current = config.cluster(str(config.context(config.current_context).get("cluster", "")))
    server = server_arg or opts.server or str(current.get("server") or "")
    if not server:
        raise CliError("no server given — usage: ac login https://HOST:PORT")
    server = server_url(server)
    same = current.get("server", "").rstrip("/") == server
    verify, pem = verify_setting(
        current.get("certificate-authority-data") if same else None,
        opts.certificate_authority,
        opts.insecure,
    )
    with httpx.Client(base_url=server, verify=verify, timeout=30.0) as client:
        token = opts.token
        if not token:
            if not username:
                raise CliError("give -u USER -p PASSWORD or --token TOKEN")
            if password is None:
                password = _read_password()
            token = exchange_password(client, username, password or "")
        client.headers["Authorization"] = f"Bearer {token}"
        try:
            user = str(whoami_user(client).get("username") or username or "")
        except CliError as exc:
            # Not "run 'ac login'": that is what the user is doing.
            if exc.status == 401 and opts.token:
                raise CliError(
                    f"login failed: {server} rejected the token — check it (or log in with -u)"
                ) from None
            raise
    cluster_name, user_name, context_name = _names(server, user)
    cluster: dict[str, Any] = {"server": server}
    if pem:
        cluster["certificate-authority-data"] = base64.b64encode(pem).decode()
    if opts.insecure:
        cluster["insecure-skip-tls-verify"] = True
    old_ns = config.context(context_name).get("namespace")
    namespace = opts.namespace or str(old_ns or "default")
    config.set_entry("clusters", cluster_name, "cluster", cluster)
    config.set_entry("users", user_name, "user", {"token": token})
    config.set_entry(
        "contexts",
        context_name,
        "context",
        {"cluster": cluster_name, "user": user_name, "namespace": namespace},
    )
    config.use(context_name)
    config.save()
    click.echo(
        f'Logged into "{server}" as "{user}" using the token provided.'
        if opts.token
        else f'Login successful: "{user}" on "{server}".'
    )
    click.echo(f'Using project "{namespace}".')


@click.command("logout")
@common_options
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Forget the token of the current context."""
    opts = global_options(ctx)
    config = Kubeconfig.load(default_kubeconfig_path(opts.kubeconfig))
    if opts.context and not config.context(opts.context):
        raise CliError(f'context "{opts.context}" does not exist in {config.path}')
    context = config.context(opts.context or config.current_context)
    user_name = str(context.get("user") or "")
    user = config.user(user_name)
    if not user.get("token"):
        raise CliError(f"you are not logged in — {LOGIN_HINT}")
    user.pop("token", None)
    config.set_entry("users", user_name, "user", user)
    config.save()
    server = config.cluster(str(context.get("cluster", ""))).get("server", "")
    click.echo(f'Logged "{user_name.split("/")[0]}" out on "{server}"')


@click.command("whoami")
@click.option("-t", "--show-token", is_flag=True, help="Print the session token.")
@click.option("--show-server", is_flag=True, help="Print the server URL.")
@click.option("--show-context", is_flag=True, help="Print the context name.")
@common_options
@click.pass_context
def whoami(ctx: click.Context, show_token: bool, show_server: bool, show_context: bool) -> None:
    """Print the current user (or token, server, context)."""
    sess = session(ctx)
    if show_token:
        if not sess.token:
            raise CliError(f"no token in the current context — {LOGIN_HINT}")
        click.echo(sess.token)
    elif show_server:
        click.echo(sess.server)
    elif show_context:
        click.echo(sess.context)
    else:
        with sess.client() as client:
            click.echo(whoami_user(client).get("username", ""))


@click.command("project")
@click.argument("project_name", metavar="NAMESPACE", required=False)
@common_options
@click.pass_context
def project(ctx: click.Context, project_name: str | None) -> None:
    """Show or switch the namespace of the current context."""
    namespace = project_name
    sess = session(ctx)
    if not namespace:
        click.echo(f'Using project "{sess.namespace}" on server "{sess.server}".')
        return
    with sess.client() as client:
        response = client.get(f"/api/v1/namespaces/{namespace}")
    if response.status_code == 404:
        raise CliError(f'namespace "{namespace}" not found — ask an administrator to create it')
    if response.status_code >= 400 and response.status_code != 403:
        raise from_response(response)
    opts = global_options(ctx)
    config = Kubeconfig.load(default_kubeconfig_path(opts.kubeconfig))
    context = config.context(sess.context)
    context["namespace"] = namespace
    config.set_entry("contexts", sess.context, "context", context)
    config.save()
    click.echo(f'Now using project "{namespace}" on server "{sess.server}".')


def write_auth_entry(path: Path, host: str, username: str, token: str) -> None:
    """Add or replace `auths[host]` in a docker/containers auth file."""
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text() or "{}")
        except ValueError:
            raise CliError(f"{path} is not valid JSON — fix or remove it") from None
    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    doc.setdefault("auths", {})[host] = {"auth": auth}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=2)
    os.replace(tmp, path)


def registry_username(sess: Session) -> str:
    name = sess.user_name.split("/")[0]
    return re.sub(r"[^A-Za-z0-9._-]", "-", name) or "ac"


@click.group("registry")
def registry() -> None:
    """Registry helpers."""


@registry.command("login")
@click.option("--to", "to_file", help="Auth file to write (default ~/.docker/config.json).")
@common_options
@click.pass_context
def registry_login(ctx: click.Context, to_file: str | None) -> None:
    """Save the session token as registry credentials for skopeo, podman and docker."""
    sess = session(ctx)
    if not sess.token:
        raise CliError(f"no token in the current context — {LOGIN_HINT}")
    path = Path(to_file).expanduser() if to_file else Path.home() / ".docker" / "config.json"
    try:
        write_auth_entry(path, sess.registry_host, registry_username(sess), sess.token)
    except OSError as exc:
        reason = exc.strerror
        raise CliError(f"cannot write auth file {path}: {reason} — pick another --to") from None
    click.echo(f"Saved credentials for {sess.registry_host} into {path}")
