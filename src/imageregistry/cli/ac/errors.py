"""Every failure of `ac` ends as one line `error: ...` and a non-zero exit, never a traceback.

Commands raise `CliError` with a message that says what to do next. HTTP failures are turned
into messages by `from_response`, which reads a Kubernetes `Status` (or an OCI error
envelope) and words it the way kubectl does; `AcGroup` catches everything at the top.
"""

from __future__ import annotations

import json
import ssl
import sys
from typing import Any

import click
import httpx

LOGIN_HINT = "run 'ac login'"


class CliError(Exception):
    """A failure to report to the user as `error: <message>`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _status_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def from_response(response: httpx.Response) -> CliError:
    """The one-line error for a failed HTTP response."""
    body = _status_body(response) or {}
    message = str(body.get("message") or "")
    if not message and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        message = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    if response.status_code == 401:
        reason = message or "Unauthorized"
        return CliError(f"you must be logged in to the server ({reason}) — {LOGIN_HINT}")
    if response.status_code == 403:
        return CliError(
            f"{message or 'forbidden'} — ask an administrator for a role that allows this"
        )
    reason = str(body.get("reason") or response.reason_phrase or response.status_code)
    text = message or response.text.strip()[:200] or "no details"
    return CliError(f"{text} ({reason})" if body.get("kind") != "Status" else text)


def describe_transport_error(exc: Exception, server: str) -> str:
    if isinstance(exc, httpx.ConnectError) and isinstance(exc.__context__, ssl.SSLError):
        return (
            f"cannot verify the certificate of {server}: {exc} — pass --certificate-authority=FILE"
            " or --insecure-skip-tls-verify"
        )
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {server}: {exc} — is the server running and the URL right?"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server {server} did not answer in time — try again"
    return f"request to {server} failed: {exc}"


class AcGroup(click.Group):
    """A click group that turns every exception into one `error:` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except CliError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except httpx.HTTPError as exc:
            server = str(exc.request.url) if _has_request(exc) else "the server"
            click.echo(f"error: {describe_transport_error(exc, server)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)
        except Exception as exc:  # the promise: never a traceback
            click.echo(
                f"error: {type(exc).__name__}: {exc} — rerun with -v=6 for details", err=True
            )
            sys.exit(1)


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018
    except RuntimeError:
        return False
    return True
