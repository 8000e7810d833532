"""Repository names `<namespace>/<stream>` and tags: the spec grammar plus path tricks."""

from __future__ import annotations

import pytest

from imageregistry.content.digest import InvalidDigest
from imageregistry.content.reference import (
    InvalidName,
    InvalidTag,
    Repository,
    parse_manifest_reference,
    parse_repository,
    validate_tag,
)


def test_two_component_names_split_into_namespace_and_stream() -> None:
    assert parse_repository("team-a/demo") == Repository("team-a", "demo")
    assert str(parse_repository("ns/my_app.v2__x")) == "ns/my_app.v2__x"


@pytest.mark.parametrize(
    "name",
    [
        "demo",
        "a/b/c",
        "ns/../etc",
        "../ns",
        "ns/%2e%2e",
        "ns//app",
        "/ns/app",
        "ns/app/",
        "NS/app",
        "ns/App",
        "ns/app-",
        "ns/.app",
        "-ns/app",
        "ns_x/app",  # a namespace must be a DNS label
        "n" * 64 + "/app",
        "ns/" + "a" * 253,
        "",
    ],
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        parse_repository(name)


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_x", "A-b_c.d", "a" * 128])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a" * 129, "a/b", "a:b", "a b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(InvalidTag):
        validate_tag(tag)


def test_manifest_reference_is_a_tag_or_a_digest() -> None:
    assert parse_manifest_reference("v1").tag == "v1"
    digest = "sha256:" + "a" * 64
    assert str(parse_manifest_reference(digest).digest) == digest
    with pytest.raises(InvalidDigest):
        parse_manifest_reference("sha256:short")
    with pytest.raises(InvalidDigest):
        parse_manifest_reference("md5:" + "a" * 32)
