"""Events in the shape distribution sends (`application/vnd.docker.distribution.events.v1+json`).

An envelope is ``{"events": [event, ...]}``; an event carries ``id`` (a UUID),
``timestamp`` (RFC 3339 with nanoseconds, UTC), ``action`` (push, pull, mount, delete),
``target``, ``request`` (``id``, ``addr``, ``host``, ``method``, ``useragent``), ``actor``
(``name``, absent for anonymous callers) and ``source`` (``addr``, ``instanceID``). The
target holds what distribution puts there for each kind of event:

- a manifest pushed or pulled: ``mediaType``, ``size``, ``digest``, ``length`` (= size),
  ``repository``, ``url`` (the manifest by digest) and ``tag`` when the request named one;
- a blob pushed, mounted or pulled: ``mediaType`` (``application/octet-stream``, as
  distribution records blobs), ``size``, ``digest``, ``length``, ``repository``, ``url``,
  and ``fromRepository`` for a mount;
- a manifest or blob deleted: ``digest`` and ``repository``; a tag deleted:
  ``repository`` and ``tag``.

Values here are plain data; nothing below the HTTP layers imports Starlette, so the
request record is read from the ASGI scope.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imageregistry.auth.identity import UserInfo
from imageregistry.clock import rfc3339_nanos

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"  # what distribution reports for every blob


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: str
    addr: str
    host: str
    method: str
    useragent: str

    def as_json(self) -> dict[str, str]:
        out = {"id": self.id, "addr": self.addr, "host": self.host, "method": self.method}
        out["useragent"] = self.useragent
        return {k: v for k, v in out.items() if v or k in ("id", "method", "useragent")}


@dataclass(frozen=True, slots=True)
class Source:
    """Which server sent the event: distribution's `hostname:port` and a per-process id."""

    addr: str
    instance_id: str

    @classmethod
    def for_port(cls, port: int) -> Source:
        return cls(f"{socket.gethostname()}:{port}", str(uuid.uuid4()))


def _header(scope: Mapping[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def request_record(scope: Mapping[str, Any], request_id: str) -> RequestRecord:
    """The request part of an event, from the ASGI scope (peer address with its port, as
    distribution reports it; a proxy's forwarding headers are not trusted)."""
    client = scope.get("client")
    addr = f"{client[0]}:{client[1]}" if client else ""
    return RequestRecord(
        id=request_id,
        addr=addr,
        host=_header(scope, b"host"),
        method=str(scope.get("method", "")),
        useragent=_header(scope, b"user-agent"),
    )


def base_url(scope: Mapping[str, Any], public_url: str) -> str:
    """Scheme and host the target URLs start with: `public_url` when set, else the
    request's own (as distribution builds them from the request)."""
    if public_url:
        return public_url.rstrip("/")
    scheme = str(scope.get("scheme", "http"))
    return f"{scheme}://{_header(scope, b'host')}"


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    action: str
    repository: str
    target: dict[str, Any]
    media_type: str | None  # for the endpoints' media type filters
    body: dict[str, Any]

    def payload(self) -> str:
        return json.dumps(self.body, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class EventFactory:
    """Builds the events of one request: who, from where, to which server."""

    request: RequestRecord
    actor: str  # "" for anonymous
    source: Source
    base: str  # scheme://host the target URLs start with
    now: datetime

    @classmethod
    def create(
        cls,
        scope: Mapping[str, Any],
        request_id: str,
        user: UserInfo | None,
        source: Source,
        public_url: str,
        now: datetime,
    ) -> EventFactory:
        actor = "" if user is None or user.is_anonymous else user.username
        return cls(
            request_record(scope, request_id), actor, source, base_url(scope, public_url), now
        )

    def _event(
        self, action: str, repository: str, target: dict[str, Any], media_type: str | None
    ) -> Event:
        event_id = str(uuid.uuid4())
        body = {
            "id": event_id,
            "timestamp": rfc3339_nanos(self.now),
            "action": action,
            "target": target,
            "request": self.request.as_json(),
            "actor": {"name": self.actor} if self.actor else {},
            "source": {"addr": self.source.addr, "instanceID": self.source.instance_id},
        }
        return Event(event_id, action, repository, target, media_type, body)

    def manifest(
        self,
        action: str,
        repository: str,
        digest: str,
        media_type: str,
        size: int,
        tag: str | None,
    ) -> Event:
        target: dict[str, Any] = {
            "mediaType": media_type,
            "size": size,
            "digest": digest,
            "length": size,
            "repository": repository,
            "url": f"{self.base}/v2/{repository}/manifests/{digest}",
        }
        if tag:
            target["tag"] = tag
        return self._event(action, repository, target, media_type)

    def blob(
        self, action: str, repository: str, digest: str, size: int, from_repository: str = ""
    ) -> Event:
        target: dict[str, Any] = {
            "mediaType": BLOB_MEDIA_TYPE,
            "size": size,
            "digest": digest,
            "length": size,
            "repository": repository,
        }
        if from_repository:
            target["fromRepository"] = from_repository
        target["url"] = f"{self.base}/v2/{repository}/blobs/{digest}"
        return self._event(action, repository, target, BLOB_MEDIA_TYPE)

    def deleted(self, repository: str, *, digest: str = "", tag: str = "") -> Event:
        target: dict[str, Any] = {}
        if digest:
            target["digest"] = digest
        target["repository"] = repository
        if tag:
            target["tag"] = tag
        return self._event("delete", repository, target, None)


def envelope(payloads: list[str]) -> bytes:
    """The request body for events already serialised as JSON."""
    return ('{"events":[' + ",".join(payloads) + "]}").encode()
