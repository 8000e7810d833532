"""Request ids: every main-port response carries `X-Request-Id`, and the server's own log
lines written while a request is handled name it.

The id is the client's `X-Request-Id` when it is well-formed (1-128 characters of
letters, digits and `._:-+=/`, so a proxy's or a client's id follows the request through),
otherwise a new one (`IdSource`). It lives in the request's `RequestInfo`, which is in a
context variable for the request's task (and the threads Starlette runs its synchronous
work in, which copy the context), where the logging filter reads it (`current`); nothing
else has to pass it around, and a request sets one context variable, not two.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets

from imageregistry.observability import requestinfo

HEADER = b"x-request-id"
NO_REQUEST = "-"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")


class _CurrentId:
    """`current.get()`: the id of the request being handled, `NO_REQUEST` outside one."""

    def get(self) -> str:
        info = requestinfo.current.get()
        return NO_REQUEST if info is None else info.request_id


current = _CurrentId()


class IdSource:
    """New ids: a random per-process prefix and a counter (`3f9a0c1e5b7d-1a2b`), unique
    across workers and restarts for all practical purposes, and far cheaper per request
    than a UUID (which costs as much as the rest of the request's bookkeeping)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6) + "-"
        self._next = itertools.count(1)

    def choose(self, given: bytes | None) -> str:
        """The client's id when well-formed, else a new one."""
        if given is not None and _WELL_FORMED.fullmatch(given):
            return given.decode("ascii")
        return f"{self._prefix}{next(self._next):x}"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request), and `request` for the
    text format (` (request ID)`, empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current.get()
        record.request_id = request_id
        record.request = f" (request {request_id})" if request_id != NO_REQUEST else ""
        return True


class JsonFormatter(logging.Formatter):
    """`log_format: json`: one JSON object per line (time, level, logger, message,
    request_id, and the traceback as `exception` when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NO_REQUEST),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter("[%(levelname)s] %(message)s%(request)s")
