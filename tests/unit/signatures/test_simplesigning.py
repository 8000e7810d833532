"""Parsing and building simple-signing payloads."""

from __future__ import annotations

import json
import re

import pytest

from imageregistry.signatures.errors import MalformedSignature
from imageregistry.signatures.simplesigning import (
    ATOMIC_TYPE,
    COSIGN_TYPE,
    build_payload,
    parse_payload,
)

DIGEST = "sha256:" + "ab" * 32


def _doc(**critical_overrides: object) -> dict[str, object]:
    critical: dict[str, object] = {
        "identity": {"docker-reference": "reg.example.com/ns/app:v1"},
        "image": {"docker-manifest-digest": DIGEST},
        "type": ATOMIC_TYPE,
    }
    critical.update(critical_overrides)
    return {"critical": critical, "optional": {"creator": "skopeo", "timestamp": 1700000000}}


def test_round_trip_keeps_every_field() -> None:
    data = build_payload("reg.example.com/ns/app:v1", DIGEST, creator="me", timestamp=42)
    payload = parse_payload(data)
    assert payload.docker_reference == "reg.example.com/ns/app:v1"
    assert payload.manifest_digest == DIGEST
    assert payload.creator == "me"
    assert payload.timestamp == 42
    assert payload.optional == {"creator": "me", "timestamp": 42}


def test_cosign_payload_bytes_match_cosign_output() -> None:
    data = build_payload("reg.example.com/ns/app", DIGEST, signature_type=COSIGN_TYPE)
    assert data == (
        b'{"critical":{"identity":{"docker-reference":"reg.example.com/ns/app"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    assert parse_payload(data, (COSIGN_TYPE,)).optional == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "signed payload must be a JSON object"),
        (json.dumps(_doc(type="something else")).encode(), "critical.type is 'something else'"),
        (json.dumps(_doc(image=None)).encode(), "critical.image is missing"),
        (json.dumps(_doc(identity={})).encode(), "docker-reference is missing"),
        (
            json.dumps(_doc(identity={"docker-reference": 7})).encode(),
            "docker-reference must be a string, not a number",
        ),
        (
            json.dumps(_doc(image={"docker-manifest-digest": "sha256:xyz"})).encode(),
            "is not a valid digest",
        ),
        (json.dumps(_doc(extra=1)).encode(), "critical has unexpected field(s): extra"),
        (json.dumps({"optional": {}}).encode(), "critical is missing"),
    ],
)
def test_malformed_payloads_are_rejected_with_clear_messages(data: bytes, message: str) -> None:
    with pytest.raises(MalformedSignature, match=re.escape(message)):
        parse_payload(data)


def test_atomic_parser_refuses_cosign_type() -> None:
    data = build_payload("reg.example.com/ns/app", DIGEST, signature_type=COSIGN_TYPE)
    with pytest.raises(MalformedSignature, match="expected 'atomic container signature'"):
        parse_payload(data)


def test_timestamp_must_be_an_integer() -> None:
    doc = _doc()
    doc["optional"] = {"timestamp": "yesterday"}
    with pytest.raises(MalformedSignature, match=r"optional\.timestamp must be an integer"):
        parse_payload(json.dumps(doc).encode())
