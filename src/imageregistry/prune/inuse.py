"""Which images are in use: parse workload image references into tags and digests.

docs/behaviour.md#ac-adm-prune-images: an image is in use when a running workload refers to it as
`host/ns/stream:tag` or `...@digest`. References come from the cluster the administrator
points the CLI at and/or a file; the server receives them as strings and parses them here.
A digest protects the image wherever it is stored (content addressing makes that exact);
a tag protects the current item of that tag, and only counts when the reference names this
registry (or names no host). Over-protecting is the safe direction, so a reference without
a host is matched by its `ns/stream` path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# distribution/reference grammar, reduced to what a workload reference may contain.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


class InvalidReferences(ValueError):
    """Some references could not be parsed; `refs` lists them."""

    def __init__(self, refs: Iterable[str]) -> None:
        self.refs = tuple(refs)
        shown = few_references(self.refs)
        super().__init__(f"{len(self.refs)} invalid image reference(s): {shown}")


def few_references(refs: Sequence[str]) -> str:
    """At most three of *refs*, each cut to 20 characters, and how many more there are.

    Messages about bad references go back to clients and into logs: a file of references
    given by mistake (a kubeconfig, say) must never be echoed whole.
    """
    shown = ", ".join(repr(r if len(r) <= 20 else r[:17] + "...") for r in refs[:3])
    return shown + (f" and {len(refs) - 3} more" if len(refs) > 3 else "")


@dataclass(frozen=True)
class ImageRef:
    host: str
    path: str
    tag: str
    digest: str


@dataclass(frozen=True)
class InUse:
    """Tags `(namespace, stream, tag)` and image digests that workloads use."""

    tags: frozenset[tuple[str, str, str]] = frozenset()
    digests: frozenset[str] = frozenset()
    # Where each protection came from, for the plan's explanation.
    sources: tuple[str, ...] = ()

    def tag_in_use(self, namespace: str, stream: str, tag: str) -> bool:
        return (namespace, stream, tag) in self.tags

    def digest_in_use(self, digest: str) -> bool:
        return digest in self.digests


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> ImageRef:
    """Split `[host/]path[:tag][@digest]`; ValueError when malformed."""
    ref = text.strip()
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(text)
    host = ""
    first, sep, rest = name.partition("/")
    if sep and _looks_like_host(first):
        host, name = first, rest
    path, tag = name, ""
    if ":" in name:
        path, _, tag = name.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise ValueError(text)
    if not _PATH.fullmatch(path):
        raise ValueError(text)
    if not tag and not digest:
        tag = "latest"
    return ImageRef(host=host, path=path, tag=tag, digest=digest)


def host_of(url: str) -> str:
    """`https://reg.example.com:5000/` → `reg.example.com:5000`."""
    return url.split("://", 1)[-1].split("/", 1)[0].lower()


def gather_in_use(
    references: Iterable[str], registry_hosts: Iterable[str], ignore_invalid: bool
) -> InUse:
    """Parse workload references; raise `InvalidReferences` unless told to ignore them."""
    hosts = {h.lower() for h in registry_hosts if h}
    tags: set[tuple[str, str, str]] = set()
    digests: set[str] = set()
    invalid: list[str] = []
    sources: list[str] = []
    for text in references:
        if not text.strip():
            continue
        try:
            ref = parse_reference(text)
        except ValueError:
            invalid.append(text)
            continue
        sources.append(text.strip())
        if ref.digest:
            digests.add(ref.digest)
        ours = not ref.host or not hosts or ref.host.lower() in hosts
        parts = ref.path.split("/")
        if ref.tag and ours and len(parts) == 2:
            tags.add((parts[0], parts[1], ref.tag))
    if invalid and not ignore_invalid:
        raise InvalidReferences(invalid)
    return InUse(frozenset(tags), frozenset(digests), tuple(sources))
