"""Repository names and tags: the OCI distribution-spec grammar plus this registry's rules.

The spec's name grammar is `[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+(...)*)*`; this
registry additionally requires exactly two components, `<namespace>/<stream>`
(docs/behaviour.md#the-pieces), where the namespace is a Kubernetes namespace name (DNS-1123 label).
Anything else — empty or dot-dot components, doubled slashes, percent-encoded characters,
uppercase letters, names over 255 characters — is `InvalidName`. Tags follow the spec's
`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imageregistry.content.digest import Digest

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_NAMESPACE = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME_LENGTH = 255
MAX_NAMESPACE_LENGTH = 63


class InvalidName(ValueError):
    """The repository name is not `<namespace>/<stream>` in the spec grammar."""


class InvalidTag(ValueError):
    """The tag does not match the spec's tag grammar."""


@dataclass(frozen=True, slots=True)
class Repository:
    namespace: str
    stream: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.stream}"


def parse_repository(name: str) -> Repository:
    """Validate `name` and split it; raise `InvalidName` saying why not."""
    shown = name[:100]
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"repository name is longer than {MAX_NAME_LENGTH} characters")
    if "%" in name:
        raise InvalidName(f"repository name {shown!r} contains percent-encoded characters")
    parts = name.split("/")
    if len(parts) != 2:
        raise InvalidName(
            "repository name must be <namespace>/<stream>, exactly two components such as "
            f"team-a/demo (the namespace is a Kubernetes namespace); got {shown!r}"
        )
    namespace, stream = parts
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise InvalidName(
                f"repository name component {part[:100]!r} must match "
                "[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*"
            )
    if len(namespace) > MAX_NAMESPACE_LENGTH or not _NAMESPACE.fullmatch(namespace):
        raise InvalidName(
            f"namespace {namespace!r} is not a valid Kubernetes namespace name (DNS-1123 label)"
        )
    return Repository(namespace, stream)


def is_namespace(name: str) -> bool:
    """Whether `name` can be the namespace half of a repository (a DNS-1123 label)."""
    return len(name) <= MAX_NAMESPACE_LENGTH and _NAMESPACE.fullmatch(name) is not None


def is_stream_name(name: str) -> bool:
    """Whether `name` can be the stream half of a repository (one spec name component)."""
    return len(name) <= MAX_NAME_LENGTH and _COMPONENT.fullmatch(name) is not None


def is_tag(tag: str) -> bool:
    return _TAG.fullmatch(tag) is not None


def validate_tag(tag: str) -> str:
    if not is_tag(tag):
        raise InvalidTag(f"tag {tag[:140]!r} must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")
    return tag


@dataclass(frozen=True, slots=True)
class ManifestReference:
    """A manifest reference from a URL: exactly one of `tag` or `digest`."""

    tag: str | None = None
    digest: Digest | None = None


def parse_manifest_reference(text: str) -> ManifestReference:
    """A digest if the text contains ':' (InvalidDigest otherwise), else a tag (InvalidTag)."""
    if ":" in text:
        return ManifestReference(digest=Digest.parse(text))
    return ManifestReference(tag=validate_tag(text))
