"""The values prune and GC queries return and accept: snapshots, removals, GC candidates.

The metadata layer owns the record types of its queries
(docs/architecture.md#package-layout-srcimageregistry), so `prune/*` imports these rather than the
other way round. A `Snapshot` is loaded in one transaction (`prune_queries.load_snapshot`) and is
all the planner sees, which keeps planning a pure function unit tests drive with hand-built values;
a `StreamPrune` is the planner's answer for one stream, applied by `prune_queries.SqlPruneDeleter`.
The GC records are what `gc_queries.SqlGcStore` selects for a sweep.
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


@dataclass(frozen=True)
class RemovedTagEvent:
    id: int
    tag: str
    digest: str
    created: datetime


@dataclass(frozen=True)
class StreamPrune:
    """Tag history items to remove from one stream; `emptied_tags` disappear entirely."""

    repository_id: int
    namespace: str
    name: str
    events: tuple[RemovedTagEvent, ...]
    emptied_tags: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class BlobCandidate:
    digest: str
    size: int


@dataclass(frozen=True)
class StaleLink:
    repository_id: int
    digest: str
    namespace: str
    name: str


@dataclass(frozen=True)
class AbandonedUpload:
    upload_id: str
    repository: str  # ns/stream, "" when only the store knows the session
    updated: datetime


@dataclass(frozen=True)
class HeldBlobs:
    """Unreferenced blobs GC left alone because their hold (grace period) has not expired."""

    count: int = 0
    size: int = 0
    until: datetime | None = None  # when the last of them becomes eligible
