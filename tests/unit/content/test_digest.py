"""Digest parsing, formatting and hashing (OCI image-spec descriptor digest grammar)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from imageregistry.content.digest import (
    Digest,
    InvalidDigest,
    UnsupportedDigest,
    digest_of,
    new_hasher,
)

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


def test_parse_sha256_and_sha512_round_trip() -> None:
    for text in (f"sha256:{EMPTY_SHA256}", f"sha512:{EMPTY_SHA512}"):
        digest = Digest.parse(text)
        assert str(digest) == text
        assert digest.algorithm == text.split(":")[0]
        assert digest.hex == text.split(":")[1]


def test_digests_are_values() -> None:
    a = Digest.parse(f"sha256:{EMPTY_SHA256}")
    assert a == Digest("sha256", EMPTY_SHA256)
    assert len({a, Digest("sha256", EMPTY_SHA256)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.hex = "0" * 64  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no ':'"),
        (EMPTY_SHA256, "no ':'"),
        ("sha256:", "grammar"),
        (":" + EMPTY_SHA256, "grammar"),
        ("SHA256:" + EMPTY_SHA256, "grammar"),
        ("sha256:" + EMPTY_SHA256 + "/x", "grammar"),
        ("sha256::" + EMPTY_SHA256, "grammar"),
        ("sha256:" + EMPTY_SHA256.upper(), "lowercase hex"),
        ("sha256:" + EMPTY_SHA256[:-1], "64 hex characters, got 63"),
        ("sha256:" + EMPTY_SHA256 + "0", "64 hex characters, got 65"),
        ("sha256:" + "g" * 64, "lowercase hex"),
        ("sha512:" + EMPTY_SHA256, "128 hex characters, got 64"),
        ("sha256 :" + EMPTY_SHA256, "grammar"),
        ("sha256:" + EMPTY_SHA256 + "\n", "grammar"),
        ("sha256\n:" + EMPTY_SHA256, "grammar"),
    ],
)
def test_invalid_digests_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidDigest) as caught:
        Digest.parse(text)
    assert not isinstance(caught.value, UnsupportedDigest)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    "text", ["md5:d41d8cd98f00b204e9800998ecf8427e", "blake3:abc", "sha256+b64u:LCa0a2j_xo_5m0U8"]
)
def test_well_formed_other_algorithms_are_unsupported(text: str) -> None:
    with pytest.raises(UnsupportedDigest, match="not supported"):
        Digest.parse(text)


def test_non_string_is_invalid() -> None:
    with pytest.raises(InvalidDigest):
        Digest.parse(42)  # type: ignore[arg-type]


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidDigest):
        Digest("sha256", "abc")


def test_digest_of_known_vectors() -> None:
    assert str(digest_of(b"")) == f"sha256:{EMPTY_SHA256}"
    assert digest_of(b"", "sha512") == Digest("sha512", EMPTY_SHA512)
    assert digest_of(b"abc").hex == hashlib.sha256(b"abc").hexdigest()


def test_new_hasher_is_incremental() -> None:
    hasher = new_hasher("sha512")
    hasher.update(b"ab")
    hasher.update(b"c")
    assert hasher.hexdigest() == hashlib.sha512(b"abc").hexdigest()
    with pytest.raises(UnsupportedDigest):
        new_hasher("md5")
