"""The audit log: Kubernetes `audit.k8s.io/v1` `Event`s, one JSON line each.

`MetricsMiddleware`, the one pass every main-port request takes, hands each request's
`RequestInfo` to `Auditor.begin` and, when the response is over, to `Auditor.complete`;
in between, the surfaces' authentication and authorization seams fill the record in
(`observability.requestinfo`). The policy level is decided when the request's own access
review is noted (`decided`): with the caller as authenticated (before impersonation) and
the attributes the authorizer used — for `/v2/` requests the registry's access review
(`get imagestreams/layers` for a pull, `update imagestreams/layers` for a push or an
upload, `delete imagestreamtags`/`imagestreamimages`, `create imagesignatures`), for the
API the request's own. The `RequestReceived` event is written then; a request that never
reaches an authorization (refused credentials on the API, a health probe, an unknown path)
is decided at the end as a non-resource request for its path, with the lower-cased method
as verb. The `ResponseComplete` event (`Panic` when the answer is a 500 or the handler
raised) follows when the last byte has been sent.

What is never written: the `Authorization` header or any other header but `User-Agent`
and the forwarding ones; any body of a token request (`/v2/token`, the OAuth2 form,
`serviceaccounts/token`, `tokenreviews`); and, in any body that is kept, the value of a
field whose name says it is a secret (`token`, `password`, ...), which is replaced by
`"<redacted>"`. Bodies are kept only at `Request` (request) and `RequestResponse`
(response) level, only for resource requests, only when they are JSON and at most 1 MiB.

At `Metadata` level an event costs a policy evaluation over precompiled rules, a line
assembled from pre-encoded pieces (the caller's JSON is cached per identity) and one
`write(2)` (`observability.auditlog`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _enc
from typing import Any

from imageregistry import apigroups
from imageregistry.auth.identity import Attributes, UserInfo, anonymous
from imageregistry.config import Settings
from imageregistry.observability import auditpolicy
from imageregistry.observability.auditlog import EventWriter, open_writer
from imageregistry.observability.auditpolicy import Outcome, Policy, load_policy
from imageregistry.observability.requestid import IdSource
from imageregistry.observability.requestinfo import SOURCE_HEADERS, RequestInfo

BODY_LIMIT = 1 << 20
ERROR_BODY_LIMIT = 8 * 1024
MESSAGE_LIMIT = 1024
REDACTED = "<redacted>"
AUTHN_ANNOTATION = "imageregistry.alauda.io/authentication"
# Field names whose values are secrets wherever they appear in a kept body.
SECRET_FIELDS = frozenset(
    (
        "token",
        "password",
        "access_token",
        "refresh_token",
        "id_token",
        "identitytoken",
        "registrytoken",
        "client_secret",
        "secret",
        "auth",
        "privatekey",
        "private_key",
        "credentials",
    )
)
# (group, resource, subresource) whose bodies carry tokens: never kept.
_TOKEN_RESOURCES = frozenset(
    (
        ("", "serviceaccounts", "token"),
        (apigroups.AUTHENTICATION, "tokenreviews", ""),
        ("", "secrets", ""),
    )
)
_JSON_MARK = b"json"
_USER_CACHE_LIMIT = 4096
_LINE_CACHE_LIMIT = 4096
_ANONYMOUS = anonymous()  # an immutable value, for requests that named no one


class _NoAttributes:
    """The access-review fields of a request that had none, in a request's shape (`None`
    is no field's value in a real review)."""

    verb = is_resource_request = api_group = resource = subresource = None
    namespace = name = path = None


_NO_ATTRIBUTES = _NoAttributes()


class AuditState:
    """What the audit log keeps about one request between `decided` and `complete`."""

    __slots__ = (
        "outcome",
        "request_body",
        "request_object",
        "request_size",
        "response_body",
        "response_size",
        "wants_request",
    )

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.wants_request = False  # the level and the request let the request body be kept
        self.request_object: Any = None  # the API's decoded body (JSON or protobuf)
        self.request_body: list[bytes] | None = None
        self.response_body: list[bytes] | None = None
        self.request_size = 0
        self.response_size = 0

    def keep_request(self, chunk: bytes) -> None:
        self.request_body, self.request_size = _capped(self.request_body, self.request_size, chunk)

    def keep_response(self, chunk: bytes) -> None:
        self.response_body, self.response_size = _capped(
            self.response_body, self.response_size, chunk
        )


def _capped(body: list[bytes] | None, size: int, chunk: bytes) -> tuple[list[bytes] | None, int]:
    """A kept body with `chunk` added, or None (dropped for good) once it passes `BODY_LIMIT`."""
    if body is None or not chunk:
        return body, size
    size += len(chunk)
    if size > BODY_LIMIT:
        return None, size
    body.append(chunk)
    return body, size


class _Clock:
    """The two timestamps of a line, as `audit.k8s.io`'s MicroTime writes them
    (`2006-01-02T15:04:05.000000Z`): the date and time up to the second are formatted once
    a second, the microseconds are the only number formatted per line."""

    def __init__(self) -> None:
        self.start = -1  # the current second, in microseconds since the epoch
        self.prefix = ""  # ... as "YYYY-MM-DDTHH:MM:SS."

    def prefix_of(self, micros: int) -> tuple[str, int]:
        """The prefix of `micros` and the microseconds past it; the newest second seen is
        kept."""
        start = micros - micros % 1_000_000
        if start == self.start:
            return self.prefix, micros - start
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(start // 1_000_000))
        if start > self.start:
            self.start, self.prefix = start, prefix
        return prefix, micros - start


# The microseconds of a timestamp as two table lookups (formatting an int costs more).
_DIGITS = tuple(f"{n:03d}" for n in range(1000))


class Auditor:
    """Decides each request's level with the policy and writes its events."""

    def __init__(
        self, policy: Policy, writer: EventWriter, clock: Callable[[], float] = time.time
    ) -> None:
        self.policy = policy
        self.writer = writer
        self._now = clock
        self._clock = _Clock()
        self._users: dict[int, tuple[UserInfo, str]] = {}
        self._ids = IdSource()
        self._refs: dict[tuple[str, ...], str] = {}
        # Policy outcomes live as long as the policy, so their ids are stable keys.
        self._light: dict[int, AuditState] = {}
        self._lines: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        # Nothing to do before the end of a request when the policy never writes
        # RequestReceived and keeps no body: the level is then decided at the end, and for
        # an answer below 400 found with the event's line parts by the request's shape.
        self._late = not policy.acts_early

    # --- the middleware's two calls ---------------------------------------------------

    def begin(self, info: RequestInfo) -> None:
        info.listener = self

    def decided(self, info: RequestInfo) -> None:
        """The request's access review is known: decide the level, write RequestReceived."""
        attrs = info.attributes
        if attrs is None or info.audit is not None or self._late:
            return
        state = self._state(info, attrs)
        outcome = state.outcome
        if outcome.level and "RequestReceived" not in outcome.omit_stages:
            self.writer.write(self._line(info, state, "RequestReceived", None, None))

    def request_object(self, info: RequestInfo, body: Any) -> None:
        """The API decoded the request's body: kept when the raw body is (so protobuf
        bodies are recorded too), in place of the raw bytes."""
        meta = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            info.object_name = meta["name"]
        state = info.audit
        if state is not None and state.wants_request:
            state.request_object = body

    def complete(self, info: RequestInfo, status: int, error_body: bytes, raised: bool) -> None:
        """The response is over: write ResponseComplete (or Panic)."""
        state = info.audit
        if state is None and self._late and status < 400 and not raised:
            line = self._shaped_line(info, status)
            if line is not None:
                self.writer.write(line)
            return
        if state is None:
            attrs = info.attributes or Attributes.for_path(
                info.user or _ANONYMOUS, info.method.lower(), info.path
            )
            state = self._state(info, attrs)
        if not state.outcome.level:
            return
        stage = "Panic" if raised or status == 500 else "ResponseComplete"
        if stage in state.outcome.omit_stages:
            return
        self.writer.write(self._line(info, state, stage, status, error_body))

    def record_internal(self, attrs: Attributes, code: int, result: Any) -> None:
        """A change the server makes on its own (a scheduled prune), written as the API
        request it amounts to, by `attrs.user`, with `result` as the response object:
        one `ResponseComplete` event (a failed run: code 500, no `Panic`)."""
        path = f"/apis/{attrs.api_group}/v1/{attrs.resource}" if attrs.api_group else ""
        scope = {"type": "internal", "method": "POST", "path": path, "headers": []}
        info = RequestInfo(scope, self._ids.choose(None), self._now())
        info.user = attrs.user
        info.attributes = attrs
        state = self._state(info, attrs)
        if state.outcome.level >= auditpolicy.REQUEST_RESPONSE:
            state.response_body = [json.dumps(result, default=str).encode()]
        if state.outcome.level and "ResponseComplete" not in state.outcome.omit_stages:
            self.writer.write(self._line(info, state, "ResponseComplete", code, b""))

    # --- events ----------------------------------------------------------------------

    def _state(self, info: RequestInfo, attrs: Attributes) -> AuditState:
        outcome = self.policy.evaluate(info.user or _ANONYMOUS, attrs)
        if outcome.level < auditpolicy.REQUEST:
            # nothing to keep: one shared, never-changed state per outcome
            state = self._light.get(id(outcome))
            if state is None:
                state = self._light[id(outcome)] = AuditState(outcome)
            info.audit = state
            return state
        state = AuditState(outcome)
        info.audit = state
        if _bodies_allowed(info, attrs):
            if info.method in ("POST", "PUT", "PATCH"):
                state.wants_request = True
                if is_json(_header(info, b"content-type")):
                    state.request_body = []
            if outcome.level >= auditpolicy.REQUEST_RESPONSE and attrs.verb != "watch":
                state.response_body = []
        return state

    def _user(self, user: UserInfo) -> str:
        """The user's JSON, cached by object: the authenticator hands out the same
        `UserInfo` for the same credentials, and hashing one costs more than the lookup.
        The entry holds the object, so its id cannot be reused while it is cached."""
        entry = self._users.get(id(user))
        if entry is None or entry[0] is not user:
            if len(self._users) >= _USER_CACHE_LIMIT:
                self._users.clear()
            encoded = json.dumps(user_json(user), separators=(",", ":"))
            entry = self._users[id(user)] = (user, encoded)
        return entry[1]

    def _line(
        self,
        info: RequestInfo,
        state: AuditState,
        stage: str,
        status: int | None,
        error_body: bytes | None,
    ) -> bytes:
        """The event's line. Only the id and the two timestamps differ between the events
        of requests that asked the same thing the same way and got the same kind of answer,
        so at the levels that keep no body, for answers below 400 (no error message), the
        rest is built once per outcome, stage and request shape (`_shape`) and kept."""
        outcome = state.outcome
        if outcome.level >= auditpolicy.REQUEST or (status is not None and status >= 400):
            return self._fill(self._parts(info, state, stage, status, error_body), info)
        key = (id(outcome), stage, *self._shape(info, status))
        entry = self._lines.get(key)
        if entry is None or entry[0] is not info.user or entry[1] is not info.impersonated:
            if len(self._lines) >= _LINE_CACHE_LIMIT:
                self._lines.clear()
            parts = self._parts(info, state, stage, status, error_body)
            entry = self._lines[key] = (info.user, info.impersonated, parts)
        return self._fill(entry[2], info)

    def _fill(self, parts: tuple[str, str, str], info: RequestInfo) -> bytes:
        """The line: its `parts` (`_parts`) around the request's id and its two
        timestamps, received and now."""
        head, middle, tail = parts
        received = int(info.received * 1_000_000)
        now = int(self._now() * 1_000_000)
        clock = self._clock
        start = clock.start
        if start <= received and start <= now < start + 1_000_000:
            # the common case: both within the second last seen
            prefix = now_prefix = clock.prefix
            received -= start
            now -= start
        else:
            prefix, received = clock.prefix_of(received)
            now_prefix, now = clock.prefix_of(now)
        return (
            f"{head}{_enc(info.request_id)}{middle}"
            f"{prefix}{_DIGITS[received // 1000]}{_DIGITS[received % 1000]}"
            f'Z","stageTimestamp":"'
            f"{now_prefix}{_DIGITS[now // 1000]}{_DIGITS[now % 1000]}Z{tail}"
        ).encode()

    def _shaped_line(self, info: RequestInfo, status: int) -> bytes | None:
        """The ResponseComplete line of an answer below 400 when nothing was decided
        before (`_late`): the level and the line's parts come with the request's shape,
        which holds everything the policy reads (the caller, the access review's fields,
        the method and path); None when the policy leaves the request out."""
        key = self._shape(info, status)
        entry = self._lines.get(key)
        if entry is None or entry[0] is not info.user or entry[1] is not info.impersonated:
            if len(self._lines) >= _LINE_CACHE_LIMIT:
                self._lines.clear()
            attrs = info.attributes or Attributes.for_path(
                info.user or _ANONYMOUS, info.method.lower(), info.path
            )
            state = self._state(info, attrs)
            outcome = state.outcome
            parts = None
            if outcome.level and "ResponseComplete" not in outcome.omit_stages:
                parts = self._parts(info, state, "ResponseComplete", status, b"")
            entry = self._lines[key] = (info.user, info.impersonated, parts)
        parts = entry[2]
        return None if parts is None else self._fill(parts, info)

    @staticmethod
    def _shape(info: RequestInfo, status: int | None) -> tuple[Any, ...]:
        """What a request's event is made of, but for its id and timestamps: the caller
        (by identity; a kept entry holds the objects, so an id is not reused while it is
        kept), the request's URI, method, source headers and peer, the access review's
        fields, the decision and the status. One flat tuple: it is built and hashed for
        every request."""
        scope = info.scope
        attrs = info.attributes or _NO_ATTRIBUTES
        source = info.source
        client = scope.get("client")
        return (
            status,
            id(info.user),
            id(info.impersonated),
            scope.get("raw_path"),
            scope.get("path"),
            scope.get("query_string"),
            scope["method"],
            tuple(source) if source is not None else _source_items(scope),
            client[0] if client else None,
            info.object_name,
            info.allowed,
            info.reason,
            info.authenticated,
            attrs.verb,
            attrs.is_resource_request,
            attrs.api_group,
            attrs.resource,
            attrs.subresource,
            attrs.namespace,
            attrs.name,
            attrs.path,
        )

    def _parts(
        self,
        info: RequestInfo,
        state: AuditState,
        stage: str,
        status: int | None,
        error_body: bytes | None,
    ) -> tuple[str, str, str]:
        """The line around its id (between the first two parts) and its two timestamps
        (between the last two)."""
        outcome = state.outcome
        attrs = info.attributes
        user = info.user or _ANONYMOUS
        verb = attrs.verb if attrs is not None else info.method.lower()
        ips, agent = info.source_and_agent()
        head = (
            f'{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{outcome.level_name}"'
            ',"auditID":'
        )
        middle = (
            f',"stage":"{stage}"'
            f',"requestURI":{_enc(info.uri)},"verb":{_enc(verb)},"user":{self._user(user)}'
        )
        if info.impersonated is not None:
            middle += f',"impersonatedUser":{self._user(info.impersonated)}'
        middle += f',"sourceIPs":[{",".join(map(_enc, ips))}]'
        if agent:
            middle += f',"userAgent":{_enc(agent)}'
        if attrs is not None and attrs.is_resource_request:
            middle += f',"objectRef":{self._object_ref(attrs, info.object_name)}'
        if status is not None:
            middle += f',"responseStatus":{_response_status(status, error_body)}'
            if outcome.level >= auditpolicy.REQUEST:
                middle += _bodies(state, outcome.omit_managed_fields)
        middle += ',"requestReceivedTimestamp":"'
        tail = f'"{_annotations(info)}}}\n'
        return head, middle, tail

    def _object_ref(self, attrs: Attributes, name: str) -> str:
        a = attrs
        key = (a.api_group, a.resource, a.subresource, a.namespace, a.name, name)
        cached = self._refs.get(key)
        if cached is None:
            if len(self._refs) >= _USER_CACHE_LIMIT:
                self._refs.clear()
            ref = object_ref(attrs, name)
            cached = self._refs[key] = json.dumps(ref, separators=(",", ":"))
        return cached


def _bodies(state: AuditState, omit_managed_fields: bool) -> str:
    out = ""
    request: str | None = None
    if state.request_object is not None:
        request = _encoded(state.request_object, omit_managed_fields)
    elif state.request_body:
        request = _json_object(b"".join(state.request_body), omit_managed_fields)
    if request is not None:
        out += f',"requestObject":{request}'
    if state.response_body:
        response = _json_object(b"".join(state.response_body), omit_managed_fields)
        if response is not None:
            out += f',"responseObject":{response}'
    return out


def build_auditor(settings: Settings) -> Auditor | None:
    """The auditor `audit_log_path` and `audit_policy_file` ask for (None when off); a
    policy that does not parse or a log that cannot be opened is a `ConfigurationError`."""
    if not settings.audit_log_path:
        return None
    policy = load_policy(settings.audit_policy_file)
    writer = open_writer(
        settings.audit_log_path, settings.audit_log_maxsize, settings.audit_log_maxbackup
    )
    return Auditor(policy, writer)


def user_json(user: UserInfo) -> dict[str, Any]:
    """`authentication/v1.UserInfo` as kube writes it (empty fields left out)."""
    out: dict[str, Any] = {"username": user.username}
    if user.uid:
        out["uid"] = user.uid
    if user.groups:
        out["groups"] = list(user.groups)
    if user.extra:
        out["extra"] = {k: list(v) for k, v in user.extra.items()}
    return out


def object_ref(attrs: Attributes, name: str = "") -> dict[str, str]:
    """`objectRef` of a resource request (`name`: a create's, from its body)."""
    ref = {"resource": attrs.resource}
    if attrs.namespace:
        ref["namespace"] = attrs.namespace
    if attrs.name or name:
        ref["name"] = attrs.name or name
    if attrs.api_group:
        ref["apiGroup"] = attrs.api_group
    ref["apiVersion"] = "v1"
    if attrs.subresource:
        ref["subresource"] = attrs.subresource
    return ref


def _annotations(info: RequestInfo) -> str:
    """`,"annotations":{...}`, or "" when there are none."""
    if info.allowed and info.authenticated:  # the common case, in one step
        if info.reason:
            reason = _enc(info.reason[:MESSAGE_LIMIT])
            return (
                ',"annotations":{"authorization.k8s.io/decision":"allow"'
                f',"authorization.k8s.io/reason":{reason}}}'
            )
        return ',"annotations":{"authorization.k8s.io/decision":"allow"}'
    out = []
    if info.allowed is not None:
        decision = "allow" if info.allowed else "forbid"
        out.append(f'"authorization.k8s.io/decision":"{decision}"')
        if info.reason:
            out.append(f'"authorization.k8s.io/reason":{_enc(info.reason[:MESSAGE_LIMIT])}')
    if not info.authenticated:
        out.append(f'"{AUTHN_ANNOTATION}":"failed"')
    return f',"annotations":{{{",".join(out)}}}' if out else ""


def _bodies_allowed(info: RequestInfo, attrs: Attributes) -> bool:
    """Bodies are kept for resource requests that carry no token."""
    if not attrs.is_resource_request:
        return False
    path = info.path
    if path.startswith("/v2/token") or "oauth" in path.lower():
        return False
    return (attrs.api_group, attrs.resource, attrs.subresource) not in _TOKEN_RESOURCES


def _response_status(status: int, error_body: bytes | None) -> str:
    if status < 400:
        return f'{{"metadata":{{}},"code":{status}}}'
    out: dict[str, Any] = {"metadata": {}, "status": "Failure"}
    message, reason = _error_text(error_body or b"")
    if message:
        out["message"] = message[:MESSAGE_LIMIT]
    if reason:
        out["reason"] = reason[:MESSAGE_LIMIT]
    out["code"] = status
    return json.dumps(out, separators=(",", ":"))


def _error_text(body: bytes) -> tuple[str, str]:
    """The message (and a Status' reason) of an error answer: a Kubernetes Status, the
    OCI `errors` envelope, an OAuth2 error, or plain text."""
    try:
        value = json.loads(body) if body else None
    except ValueError:
        return body[:MESSAGE_LIMIT].decode("utf-8", "replace").strip(), ""
    if not isinstance(value, dict):
        return "", ""
    if isinstance(value.get("message"), str):
        return value["message"], str(value.get("reason") or "")
    errors = value.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return str(first.get("message") or first.get("code") or ""), str(first.get("code") or "")
    if isinstance(value.get("error_description"), str):
        return value["error_description"], str(value.get("error") or "")
    return "", ""


def _json_object(raw: bytes, omit_managed_fields: bool) -> str | None:
    """A kept body as JSON with secret fields redacted; None when it is not JSON."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return _encoded(value, omit_managed_fields)


def _encoded(value: Any, omit_managed_fields: bool) -> str:
    value = redact(value)
    if omit_managed_fields:
        _drop_managed_fields(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in SECRET_FIELDS else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _drop_managed_fields(value: Any) -> None:
    if not isinstance(value, dict):
        return
    meta = value.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    items = value.get("items")
    if isinstance(items, list):
        for item in items:
            _drop_managed_fields(item)


def _source_items(scope: Any) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(item for item in scope.get("headers", ()) if item[0] in SOURCE_HEADERS)


def _header(info: RequestInfo, name: bytes) -> bytes:
    for key, value in info.scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return b""


def is_json(content_type: bytes) -> bool:
    return _JSON_MARK in content_type.lower()
