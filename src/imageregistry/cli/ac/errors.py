"""Every failure of `ac` ends as one line `error: ...` and a non-zero exit, never a traceback.

Commands raise `CliError` with a message that says what to do next. HTTP failures are turned
into messages by `from_response`, which reads a Kubernetes `Status` (or an OCI error
envelope) and words it the way kubectl does; `AcGroup` catches everything at the top,
click's own usage errors included. Exit status: 1 for a failure, 2 for bad flags or
arguments (click's convention), 130 for Ctrl-C; a closed stdout ends quietly with 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import sys
import traceback
from typing import Any, NoReturn

import click
import httpx

LOGIN_HINT = "run 'ac login'"


class CliError(Exception):
    """A failure to report to the user as `error: <message>`."""

    def __init__(self, message: str, exit_code: int = 1, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status  # the HTTP status behind the failure, when there was one


def _status_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def from_response(response: httpx.Response) -> CliError:
    """The one-line error for a failed HTTP response."""
    error = _response_error(response)
    error.status = response.status_code
    return error


def _response_error(response: httpx.Response) -> CliError:
    body = _status_body(response) or {}
    message = str(body.get("message") or "")
    errors = body.get("errors")
    if not message and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        message = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    if response.status_code == 401:
        reason = message or "Unauthorized"
        return CliError(f"you must be logged in to the server ({reason}) — {LOGIN_HINT}")
    if response.status_code == 403:
        return CliError(
            f"{message or 'forbidden'} — ask an administrator for a role that allows this"
        )
    reason = str(body.get("reason") or response.reason_phrase or response.status_code)
    if not body and "html" in response.headers.get("content-type", "").lower():
        return CliError(
            f"{_where(response)} answered {response.status_code} {reason} with a web page, not"
            " the Registry v2 API — check the server URL"
        )
    text = message or response.text.strip()[:200] or "no details"
    return CliError(f"{text} ({reason})" if body.get("kind") != "Status" else text)


def _where(response: httpx.Response) -> str:
    try:
        url = response.request.url
    except RuntimeError:
        return "the server"
    return f"{url.scheme}://{url.netloc.decode()}"


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The `ssl` error under an httpx error (httpx wraps httpcore, which wraps `ssl`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _origin(exc: httpx.HTTPError) -> str:
    """`scheme://host:port` of the failed request: the part of the URL the user chose."""
    if not _has_request(exc):
        return "the server"
    url = exc.request.url
    return f"{url.scheme}://{url.netloc.decode()}" if url.scheme else str(url)


def describe_transport_error(exc: Exception, server: str) -> str:
    tls = _ssl_error(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return (
            f"cannot verify the TLS certificate of {server} ({tls.verify_message}) — pass"
            " --certificate-authority=FILE with the server's CA, or --insecure-skip-tls-verify"
        )
    if tls is not None:
        return (
            f"TLS handshake with {server} failed ({tls.reason or tls}) — if the server speaks"
            " plain HTTP, use an http:// URL"
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"the server URL {server!r} must start with https:// (or http://)"
    if isinstance(exc, httpx.RemoteProtocolError) and server.startswith("http://"):
        return (
            f"{server} did not answer plain HTTP ({exc}) — if the server speaks TLS, use"
            " https:// in the URL"
        )
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {server}: {exc} — is the server running and the URL right?"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server {server} did not answer in time — try again"
    return f"request to {server} failed: {exc}"


def one_line(text: str, limit: int = 500) -> str:
    """Newlines and runs of spaces folded (YAML and kubernetes errors span lines), capped."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(exit_code)


def _abort(exc: click.exceptions.Abort) -> NoReturn:
    """click raises Abort for Ctrl-C and for end of input at a prompt; they differ."""
    if isinstance(exc.__context__, EOFError):
        _fail("no input to answer the prompt — give the value as a flag", 1)
    _fail("interrupted", 130)


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the exit-time flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class AcGroup(click.Group):
    """A click group that turns every exception into one `error:` line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """click's own usage errors become one `error:` line too (exit status 2)."""
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "ac"
            message = exc.format_message()
            hint = "" if " — " in message else f" — see '{where} --help'"
            _fail(message + hint, exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.exceptions.Abort as exc:
            _abort(exc)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except click.exceptions.Abort as exc:
            _abort(exc)
        except CliError as exc:
            _fail(str(exc), exc.exit_code)
        except httpx.HTTPError as exc:
            _fail(describe_transport_error(exc, _origin(exc)), 1)
        except json.JSONDecodeError:
            _fail("the server answered with something that is not JSON — check the server URL", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(1)
        except Exception as exc:  # the promise: never a traceback (unless asked for)
            if int(ctx.meta.get("ac.global", {}).get("verbosity") or 0) >= 9:
                traceback.print_exc()
            _fail(
                f"unexpected {type(exc).__name__}: {exc} — a bug in ac; rerun with -v=9 to see"
                " where, and report it",
                1,
            )


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018
    except RuntimeError:
        return False
    return True
