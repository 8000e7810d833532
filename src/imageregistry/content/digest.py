"""Content digests as values: parsing, formatting and hashing.

The OCI image spec (descriptor.md, "Digests") defines the grammar
``algorithm ":" encoded`` with ``algorithm ::= component (separator component)*``,
``component ::= [a-z0-9]+``, ``separator ::= [+._-]`` and ``encoded ::= [a-zA-Z0-9=_-]+``,
and registers two algorithms whose encoded part must be lowercase hex of a fixed length:
``sha256`` (64) and ``sha512`` (128). A string outside the grammar, or a registered
algorithm with a malformed encoding, is ``InvalidDigest``; a well-formed digest using any
other algorithm is ``UnsupportedDigest`` (a subclass, so callers that only care about
"unusable" catch one type). This module has no dependencies inside the package, so every
layer, including storage, may use it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

# OCI image-spec descriptor.md digest grammar.
_GRAMMAR = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_LOWER_HEX = re.compile(r"[0-9a-f]+")

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_HEX_LENGTH)


class InvalidDigest(ValueError):
    """The string is not a usable digest; the message says why."""


class UnsupportedDigest(InvalidDigest):
    """The digest is well formed but uses an algorithm this registry does not implement."""


class Hasher(Protocol):
    """The part of a ``hashlib`` object that digest computation needs."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...

    def copy(self) -> Hasher: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated ``algorithm:hex`` content digest."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        _check(self.algorithm, self.hex)

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``text``; raise ``InvalidDigest``/``UnsupportedDigest`` explaining why not."""
        if not isinstance(text, str):
            raise InvalidDigest(f"digest must be a string, not {type(text).__name__}")
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise InvalidDigest(f"digest {text[:200]!r} has no ':' between algorithm and hex")
        return cls(algorithm, encoded)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def _check(algorithm: str, encoded: str) -> None:
    shown = f"{algorithm}:{encoded}"[:200]
    if not _GRAMMAR.fullmatch(f"{algorithm}:{encoded}"):
        raise InvalidDigest(
            f"digest {shown!r} does not match the OCI grammar algorithm:encoded "
            "(algorithm [a-z0-9]+ joined by [+._-], encoded [a-zA-Z0-9=_-]+)"
        )
    length = _HEX_LENGTH.get(algorithm)
    if length is None:
        raise UnsupportedDigest(
            f"digest algorithm {algorithm!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
        )
    if len(encoded) != length:
        raise InvalidDigest(
            f"{algorithm} digest must have {length} hex characters, got {len(encoded)}"
        )
    if not _LOWER_HEX.fullmatch(encoded):
        raise InvalidDigest(f"{algorithm} digest must be lowercase hex: {shown!r}")


def new_hasher(algorithm: str) -> Hasher:
    """A fresh incremental hasher for a supported ``algorithm``."""
    if algorithm not in _HEX_LENGTH:
        raise UnsupportedDigest(
            f"digest algorithm {algorithm!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
        )
    return hashlib.new(algorithm)


def digest_of(data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> Digest:
    """The digest of ``data`` under ``algorithm``."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return Digest(algorithm, hasher.hexdigest())
