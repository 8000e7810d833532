"""Matching the identity a signature claims against the identity the verifier expects.

Rules (docs/behaviour.md#signatures, the same policy as containers/image `matchRepoDigestOrExact`):
an expected `host/ns/stream:tag` requires the signed `docker-reference` to be exactly that
repository and tag; an expected `host/ns/stream@sha256:...` requires only the repository
to match (the digest itself is checked separately against the image); an expected
`host/ns/stream` with neither means `:latest`. A signed reference without tag or digest is
read as `:latest` too. Normalization is deliberately small and explicit: a reference whose
first component is not a registry host (no `.` or `:` and not `localhost`) lives on
`docker.io`, a single-component Docker Hub path gets `library/`, `index.docker.io` is
`docker.io`, and the host is compared case-insensitively. Nothing else is rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"

# Grammar adapted from the distribution reference grammar (written independently).
_DOMAIN_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^\w[\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")


class InvalidReference(ValueError):
    """A string that is not a docker image reference."""


@dataclass(frozen=True)
class ImageReference:
    """A normalized docker reference: `repository` is `host/path`."""

    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        return self.repository + suffix + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class IdentityMatch:
    """Outcome of an identity comparison; `reason` explains either verdict."""

    ok: bool
    reason: str


def parse_reference(text: str) -> ImageReference:
    """Parse and normalize a docker reference; raise `InvalidReference` if malformed."""
    name, _, digest = text.partition("@")
    if "@" in text and not _DIGEST_RE.match(digest):
        raise InvalidReference(f"{text!r}: invalid digest {digest!r}")
    tag: str | None = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"{text!r}: invalid tag {tag!r}")
    return ImageReference(_normalize_name(name, text), tag, digest or None)


def _normalize_name(name: str, text: str) -> str:
    if not name:
        raise InvalidReference(f"{text!r}: empty repository name")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first.lower(), rest
        if not _DOMAIN_RE.match(first):
            raise InvalidReference(f"{text!r}: invalid registry host {first!r}")
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            raise InvalidReference(f"{text!r}: invalid repository path component {component!r}")
    return f"{domain}/{path}"


def match_identity(signed_reference: str, expected_identity: str) -> IdentityMatch:
    """Decide whether a signature's `docker-reference` satisfies the expected identity."""
    try:
        expected = parse_reference(expected_identity)
    except InvalidReference as exc:
        return IdentityMatch(False, f"expected identity is not a valid reference: {exc}")
    try:
        signed = parse_reference(signed_reference)
    except InvalidReference as exc:
        return IdentityMatch(False, f"signed identity is not a valid reference: {exc}")
    if signed.repository != expected.repository:
        return IdentityMatch(
            False,
            f"signature is for repository {signed.repository}, "
            f"not the expected {expected.repository}",
        )
    if expected.digest and not expected.tag:
        return IdentityMatch(True, f"signed repository {signed.repository} matches")
    want_tag = expected.tag or DEFAULT_TAG
    if signed.digest and not signed.tag:
        return IdentityMatch(
            False, f"signature names digest {signed.digest}, expected tag {want_tag!r}"
        )
    have_tag = signed.tag or DEFAULT_TAG
    if have_tag != want_tag:
        return IdentityMatch(
            False, f"signature is for tag {have_tag!r}, not the expected tag {want_tag!r}"
        )
    return IdentityMatch(True, f"signed identity {signed.repository}:{have_tag} matches")
