"""Bounded parsing of what a client sends: integers, JSON documents, request bodies.

Every surface (the `/v2/` registry, the signature extension, the token endpoint, the
Kubernetes-style API, the blob port) parses its numbers and bodies here, so the limits are the
same everywhere and no client input reaches an unbounded parser:

- Python refuses to convert integers of more than 4300 digits (`sys.int_info`) with a bare
  `ValueError`, which every caller would have to remember; `parse_int` checks the text first
  and raises `InputError` naming the parameter.
- `json.loads` builds arbitrarily large integers, non-finite floats (`1e999`) and the
  non-JSON constants `NaN`/`Infinity`, which could not be written back as JSON or stored
  in a 64-bit column; `load_json` refuses them.
- The client's address comes from the ASGI scope (`client_host`), the same on every surface.
- A request body is read while it streams, so an oversized body is refused at its
  `Content-Length`, or as soon as a chunked body passes the limit, never after it was
  buffered whole.

This is a leaf module: it imports nothing from the registry and not Starlette (a request
is anything with `headers` and `stream()`), so every layer may use it. Each surface turns
`InputError` into its own error envelope: `400` (or `416` for a range), and `413` for
`BodyTooLarge`.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class InputError(ValueError):
    """A number, JSON document or body from a client is malformed or out of range."""


class BodyTooLarge(InputError):
    """A request body is longer than the surface accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


class InvalidJSON(InputError):
    """A JSON document that cannot be parsed within the bounds of `load_json`."""


def client_host(scope: Mapping[str, Any]) -> str | None:
    """The peer's address from an ASGI scope (the failed-password throttle's key); a
    proxy's forwarding headers are not trusted."""
    client = scope.get("client")
    return str(client[0]) if client else None


def excerpt(text: str, keep: int = 40) -> str:
    """`text` quoted for an error message, cut to `keep` characters (input may be huge)."""
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep]!r}... ({len(text)} characters)"


def parse_int(text: str, name: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """`text` as a decimal integer in [minimum, maximum]; `InputError` naming `name` if not.

    Only ASCII digits with an optional leading `-` (what Go's `strconv.ParseInt` and so
    kube-apiserver and distribution accept, minus the `+`); the length is checked before
    converting, so a 5000-digit value costs nothing and says why it was refused.
    """
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    significant = digits.lstrip("0") or "0"  # Python's int() limit counts leading zeros too
    widest = max(len(str(abs(minimum))), len(str(abs(maximum))))
    if digits.isascii() and digits.isdigit() and len(significant) <= widest:
        value = -int(significant) if negative else int(significant)
        if minimum <= value <= maximum:
            return value
    raise InputError(
        f"invalid {name} {excerpt(text)}: must be an integer from {minimum} to {maximum}"
    )


def _json_int(text: str) -> int:
    try:
        return parse_int(text, "JSON number", INT64_MIN, INT64_MAX)
    except InputError:
        raise InvalidJSON(
            f"the integer {excerpt(text)} is out of range: JSON integers must fit in 64 bits"
        ) from None


def _json_float(text: str) -> float:
    value = float(text)  # float() has no digit limit; a huge literal becomes inf
    if not math.isfinite(value):
        raise InvalidJSON(f"the number {excerpt(text)} is out of range")
    return value


def _json_constant(text: str) -> Any:
    raise InvalidJSON(f"{text} is not a JSON value")


def load_json(
    data: bytes | str,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """`json.loads` for client input: `InvalidJSON` (a `ValueError`) for malformed text,
    hostile nesting, integers outside 64 bits, non-finite numbers and `NaN`/`Infinity`.
    Exceptions raised by `object_pairs_hook` pass through unchanged."""
    try:
        return json.loads(
            data,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
            object_pairs_hook=object_pairs_hook,
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[..." deeper than the interpreter's stack
        raise InvalidJSON("the JSON is nested too deeply") from None


class BodySource(Protocol):
    """What `read_body` needs of a request (a Starlette `Request` is one)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def stream(self) -> AsyncIterator[bytes]: ...


async def read_body(request: BodySource, limit: int) -> bytes:
    """The whole body of `request`, at most `limit` bytes; `BodyTooLarge` otherwise.

    A declared `Content-Length` above the limit is refused before a byte is read; a body
    without one (chunked) is counted while it streams and refused as soon as it passes the
    limit, so memory stays bounded by `limit` whatever the client sends. The unread rest
    is left to the HTTP server to discard.
    """
    declared = request.headers.get("content-length")
    if declared is not None and parse_int(declared.strip(), "Content-Length") > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise BodyTooLarge(limit)
        body += chunk
    return bytes(body)


__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "BodySource",
    "BodyTooLarge",
    "InputError",
    "InvalidJSON",
    "excerpt",
    "load_json",
    "parse_int",
    "read_body",
]
