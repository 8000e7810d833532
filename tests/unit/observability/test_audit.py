"""Audit events built in-process: what a request's record turns into, and what never does."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from imageregistry.auth.identity import Attributes, authenticated
from imageregistry.auth.tokens import new_opaque_token
from imageregistry.observability import requestinfo
from imageregistry.observability.audit import BODY_LIMIT, Auditor, AuditState
from imageregistry.observability.auditpolicy import NOT_AUDITED, parse_policy
from imageregistry.observability.requestinfo import RequestInfo
from tests.support.audit import Lines

EVERYTHING = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "rules": [{"level": "RequestResponse"}],
}


def _request(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> RequestInfo:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("10.1.2.3", 40000),
    }
    return RequestInfo(scope, "req-1", 1_733_353_200.25)


def test_secret_fields_of_a_kept_body_are_redacted() -> None:
    lines = Lines()
    auditor = Auditor(parse_policy(EVERYTHING), lines, clock=lambda: 1_733_353_201.5)
    info = _request("POST", "/api/v1/namespaces/a/things", [(b"content-type", b"application/json")])
    token = requestinfo.current.set(info)
    try:
        auditor.begin(info)
        requestinfo.note_user(authenticated("alice"))
        attrs = Attributes.for_resource(
            authenticated("alice"), "create", "", "things", namespace="a"
        )
        requestinfo.note_decision(attrs, True, "RBAC: allowed")
        assert info.audit is not None and info.audit.request_body is not None
        body = {
            "metadata": {"name": "x"},
            "spec": {"password": "hunter2", "auths": {"r": {"auth": "eA=="}}},
        }
        info.audit.keep_request(json.dumps(body).encode())
        info.audit.keep_response(b'{"status": {"token": "ir_secret"}, "kind": "Thing"}')
        auditor.complete(info, 201, b"", False)
    finally:
        requestinfo.current.reset(token)
    received, done = lines.events()
    assert received["stage"] == "RequestReceived" and "responseStatus" not in received
    assert done["requestObject"]["spec"] == {
        "password": "<redacted>",
        "auths": {"r": {"auth": "<redacted>"}},
    }
    assert done["responseObject"] == {"status": {"token": "<redacted>"}, "kind": "Thing"}
    assert done["objectRef"] == {"resource": "things", "namespace": "a", "apiVersion": "v1"}
    assert done["sourceIPs"] == ["10.1.2.3"]
    assert done["requestReceivedTimestamp"] == "2024-12-04T23:00:00.250000Z"
    assert done["stageTimestamp"] == "2024-12-04T23:00:01.500000Z"
    assert done["annotations"] == {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": "RBAC: allowed",
    }
    assert b"hunter2" not in b"".join(lines.lines) and b"ir_secret" not in b"".join(lines.lines)


def test_a_token_given_as_a_user_name_is_not_logged() -> None:
    secret = new_opaque_token()
    for header in (
        "Basic " + base64.b64encode(f"{secret}:x".encode()).decode(),
        "Basic " + base64.b64encode(b"eyJhbGciOiJFUzI1NiJ9.e30.sig:x").decode(),
        "Bearer " + secret,
    ):
        assert requestinfo.note_unauthenticated(header).username == "system:anonymous"
    named = requestinfo.note_unauthenticated("Basic " + base64.b64encode(b"bob:x").decode())
    assert named.username == "bob" and named.groups == ("system:unauthenticated",)


def test_forwarded_addresses_come_first_as_kube_lists_them() -> None:
    info = _request(
        "GET",
        "/v2/",
        [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.1"), (b"x-real-ip", b"10.0.0.1")],
    )
    assert info.source_ips == ["203.0.113.9", "10.0.0.1", "10.1.2.3"]


METADATA_BUT_BOB = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "users": ["bob"]}, {"level": "Metadata"}],
}


def test_lines_built_once_per_request_shape_stay_each_requests_own() -> None:
    """With a policy that decides nothing before the end (no RequestReceived, no bodies),
    the level and the line's parts are kept per request shape: each request still gets
    its own id, caller, object, decision and status, and the policy's None still holds."""
    lines = Lines()
    auditor = Auditor(parse_policy(METADATA_BUT_BOB), lines, clock=lambda: 1_733_353_201.5)
    alice, carol, bob = authenticated("alice"), authenticated("carol"), authenticated("bob")

    def request(
        request_id: str, user: Any, status: int, name: str = "", agent: bytes = b"a/1"
    ) -> None:
        info = _request("POST", "/api/v1/namespaces/a/things", [(b"user-agent", agent)])
        info.request_id = request_id
        token = requestinfo.current.set(info)
        try:
            auditor.begin(info)
            requestinfo.note_user(user)
            attrs = Attributes.for_resource(user, "create", "", "things", namespace="a")
            requestinfo.note_decision(attrs, status != 403, "")
            if name:
                requestinfo.note_request_object({"metadata": {"name": name}})
            body = b'{"message": "no such thing"}' if status >= 400 else b""
            auditor.complete(info, status, body, False)
        finally:
            requestinfo.current.reset(token)

    request("r1", alice, 201, "x")
    request("r2", alice, 201, "x")
    request("r3", carol, 201, "x")
    request("r4", bob, 201, "x")
    request("r5", alice, 201, "y")
    request("r6", alice, 403)
    request("r7", alice, 201, "x", agent=b"b/2")
    events = {e["auditID"]: e for e in lines.events()}
    assert sorted(events) == ["r1", "r2", "r3", "r5", "r6", "r7"]  # bob's: level None
    assert events["r1"] | {"auditID": "r2"} == events["r2"]
    assert events["r3"]["user"]["username"] == "carol"
    assert events["r5"]["objectRef"]["name"] == "y" and events["r1"]["objectRef"]["name"] == "x"
    assert events["r6"]["responseStatus"] == {
        "metadata": {},
        "status": "Failure",
        "message": "no such thing",
        "code": 403,
    }
    assert events["r6"]["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert events["r7"]["userAgent"] == "b/2" and events["r1"]["userAgent"] == "a/1"


def test_timestamps_are_each_requests_own_across_seconds() -> None:
    """The date and time up to the second are formatted once a second and kept: a request
    received in one second and answered in the next, or answered by a clock that went
    back, still gets both of its timestamps right, to the microsecond."""
    now = [0.0]
    lines = Lines()
    auditor = Auditor(parse_policy(METADATA_BUT_BOB), lines, clock=lambda: now[0])
    alice = authenticated("alice")
    cases = [
        (1_733_353_200.250001, 1_733_353_200.999999),
        (1_733_353_200.999999, 1_733_353_201.000002),  # into the next second
        (1_733_353_201.5, 1_733_353_261.25),  # a minute later
        (1_733_353_199.000123, 1_733_353_199.1),  # the clock went back a minute
        (1_733_353_261.3, 1_733_353_261.300007),
    ]
    for index, (received, answered) in enumerate(cases):
        info = _request("GET", "/api/v1/namespaces/a/things/x", [])
        info.request_id = f"r{index}"
        info.received = received
        now[0] = answered
        token = requestinfo.current.set(info)
        try:
            requestinfo.note_user(alice)
            attrs = Attributes.for_resource(alice, "get", "", "things", namespace="a", name="x")
            requestinfo.note_decision(attrs, True, "")
            auditor.complete(info, 200, b"", False)
        finally:
            requestinfo.current.reset(token)
    events = lines.events()
    assert [e["auditID"] for e in events] == [f"r{i}" for i in range(len(cases))]
    for event, (received, answered) in zip(events, cases, strict=True):
        assert event["requestReceivedTimestamp"] == _micro_time(received)
        assert event["stageTimestamp"] == _micro_time(answered)


def _micro_time(when: float) -> str:
    """audit.k8s.io's MicroTime of `when`, by the standard library."""
    moment = datetime.fromtimestamp(int(when * 1_000_000) // 1_000_000, UTC)
    micros = int(when * 1_000_000) % 1_000_000
    return moment.replace(microsecond=micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_kept_body_past_the_limit_is_dropped_whole_and_stays_dropped() -> None:
    state = AuditState(NOT_AUDITED)
    state.request_body, state.response_body = [], []
    state.keep_request(b"a" * 10)
    state.keep_request(b"")
    state.keep_response(b"b" * BODY_LIMIT)
    assert state.request_body == [b"a" * 10] and state.request_size == 10
    assert state.response_body == [b"b" * BODY_LIMIT]
    state.keep_response(b"c")  # one byte over: the partial body is never written
    assert state.response_body is None
    state.keep_response(b"d")
    assert state.response_body is None
    assert state.request_body == [b"a" * 10]  # the other body is its own
