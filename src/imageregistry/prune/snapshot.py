"""The values prune planning reads: streams with their tag histories, and images.

A `Snapshot` is loaded from the database in one transaction
(`metadata/prune_queries.load_snapshot`) and is all the planner sees, so planning is a
pure function that unit tests drive with hand-built values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class TagEvent:
    """One item of a tag's history; histories are ordered newest first."""

    id: int
    digest: str
    created: datetime


@dataclass(frozen=True)
class TagHistory:
    tag: str
    events: tuple[TagEvent, ...]  # index 0 = the current image of the tag


@dataclass(frozen=True)
class Stream:
    repository_id: int
    namespace: str
    name: str
    tags: tuple[TagHistory, ...] = ()
    # Digests linked to the repository (pushed by tag or by digest).
    images: frozenset[str] = frozenset()

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ImageRecord:
    digest: str
    created: datetime  # when the registry stored it (the Image's creationTimestamp)
    children: tuple[str, ...] = ()  # manifests an index lists
    subject: str | None = None  # for referrers (signatures, SBOMs...)


@dataclass(frozen=True)
class Snapshot:
    streams: tuple[Stream, ...]
    images: Mapping[str, ImageRecord] = field(default_factory=dict)
