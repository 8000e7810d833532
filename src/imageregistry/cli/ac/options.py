"""kubectl-style global flags accepted before or after the subcommand.

`ac -n team-a get is` and `ac get is -n team-a` both work: every flag is a click option
without a value of its own whose callback records the value on the root context, so the
flags given last (on the subcommand) win. `global_options()` reads them back as a
`GlobalOptions` value and `session()` resolves the kubeconfig for the command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from imageregistry.cli.ac.session import GlobalOptions, Session, resolve

F = TypeVar("F", bound=Callable[..., Any])
_KEY = "ac.global"


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False, ()):
        ctx.find_root().meta.setdefault(_KEY, {})[param.name] = value
    return value


def _verbosity(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number") from None


_SPECS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--kubeconfig",), {"help": "Path to the kubeconfig file."}),
    (("--context",), {"help": "The kubeconfig context to use."}),
    (("--server", "-s"), {"help": "The address of the API server."}),
    (("--token",), {"help": "Bearer token for authentication."}),
    (("--namespace", "-n"), {"help": "The namespace scope for this request."}),
    (("--all-namespaces", "-A"), {"is_flag": True, "help": "List across all namespaces."}),
    (("--as", "as_user"), {"help": "Username to impersonate."}),
    (("--insecure-skip-tls-verify", "insecure"), {"is_flag": True, "help": "Skip TLS checks."}),
    (("--certificate-authority",), {"help": "Path to a CA certificate file."}),
    (("-v", "--v", "verbosity"), {"type": _verbosity, "help": "Log level (6 logs requests)."}),
]


def common_options(func: F) -> F:
    """Attach the global flags to a command or group."""
    for decls, extra in reversed(_SPECS):
        func = click.option(*decls, expose_value=False, callback=_store, **extra)(func)
    return func


def global_options(ctx: click.Context) -> GlobalOptions:
    return GlobalOptions(**ctx.find_root().meta.get(_KEY, {}))


def session(ctx: click.Context) -> Session:
    return resolve(global_options(ctx))
