"""Identity matching rules of docs/behaviour.md#signatures."""

from __future__ import annotations

import pytest

from imageregistry.signatures.identity import InvalidReference, match_identity, parse_reference

DIGEST = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("signed", "expected"),
    [
        ("reg.example.com:5000/ns/demo:latest", "reg.example.com:5000/ns/demo:latest"),
        ("reg.example.com:5000/ns/demo:latest", "reg.example.com:5000/ns/demo"),
        ("reg.example.com:5000/ns/demo", "reg.example.com:5000/ns/demo:latest"),
        ("reg.example.com:5000/ns/demo:v2", f"reg.example.com:5000/ns/demo@{DIGEST}"),
        ("127.0.0.1:5000/ns/demo:v1", "127.0.0.1:5000/ns/demo:v1"),
        ("REG.example.com/ns/demo:v1", "reg.example.com/ns/demo:v1"),
        ("busybox:latest", "docker.io/library/busybox"),
    ],
)
def test_matching_identities(signed: str, expected: str) -> None:
    assert match_identity(signed, expected).ok


@pytest.mark.parametrize(
    ("signed", "expected", "reason"),
    [
        ("reg.example.com/ns/other:latest", "reg.example.com/ns/demo:latest", "repository"),
        ("reg.example.com/ns/demo:v2", "reg.example.com/ns/demo:v1", "tag 'v2'"),
        ("reg.example.com/ns/demo:v2", "reg.example.com/ns/demo", "expected tag 'latest'"),
        ("other.example.com/ns/demo:v1", "reg.example.com/ns/demo:v1", "repository"),
        (f"reg.example.com/ns/demo@{DIGEST}", "reg.example.com/ns/demo:v1", "names digest"),
        ("reg.example.com/ns/other:v1", f"reg.example.com/ns/demo@{DIGEST}", "repository"),
        ("Not A Reference", "reg.example.com/ns/demo", "signed identity is not a valid reference"),
    ],
)
def test_mismatching_identities(signed: str, expected: str, reason: str) -> None:
    result = match_identity(signed, expected)
    assert not result.ok
    assert reason in result.reason


def test_parse_reference_normalizes_explicitly() -> None:
    ref = parse_reference("index.docker.io/busybox:1.36")
    assert (ref.repository, ref.tag, ref.digest) == ("docker.io/library/busybox", "1.36", None)
    assert str(parse_reference(f"localhost/ns/app@{DIGEST}")) == f"localhost/ns/app@{DIGEST}"
    with pytest.raises(InvalidReference):
        parse_reference("reg.example.com/NS/app")
