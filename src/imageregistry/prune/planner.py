"""Prune planning: a pure function from a snapshot, options and in-use set to a `PrunePlan`.

The retention rules are docs/behaviour.md#ac-adm-prune-images. For each stream and tag the history
is walked from the current item (index 0); an item is kept when it is younger than the threshold,
when it is the current item of a tag a workload uses, when its index is below `keep_tag_revisions`,
or when its image is in use by digest (`--all` drops the two retention rules, never in-use
protection). An image is then deleted when no remaining history item references it, it is not in
use, it is older than the threshold, and it is not kept transitively: an index keeps the manifests
it lists, and a kept subject keeps its referrers (OCI distribution-spec "referrers"). Whitelisted
repositories are untouched: their histories stay whole and the images linked to them stay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from imageregistry.metadata.prune_records import (
    ImageRecord,
    RemovedTagEvent,
    Snapshot,
    Stream,
    StreamPrune,
    TagEvent,
)
from imageregistry.metadata.tag_policies import ImmutableTag
from imageregistry.prune.inuse import InUse
from imageregistry.prune.options import PruneOptions


@dataclass(frozen=True)
class PrunePlan:
    streams: tuple[StreamPrune, ...]
    images: tuple[str, ...]  # digests of Image objects to delete

    @property
    def is_empty(self) -> bool:
        return not self.streams and not self.images


def _whitelisted(path: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return any(p.search(path) for p in patterns)


def _keep_event(
    index: int,
    event: TagEvent,
    current_in_use: bool,
    options: PruneOptions,
    in_use: InUse,
    cutoff: datetime,
) -> bool:
    if in_use.digest_in_use(event.digest):
        return True
    if index == 0 and current_in_use:
        return True
    if options.all:
        return False
    return event.created > cutoff or index < options.keep_tag_revisions


def _plan_stream(
    stream: Stream, options: PruneOptions, in_use: InUse, cutoff: datetime
) -> tuple[StreamPrune | None, set[str]]:
    """Removed items of one stream, and the digests its remaining history references."""
    removed: list[RemovedTagEvent] = []
    emptied: list[str] = []
    remaining: set[str] = set()
    for history in stream.tags:
        current_in_use = in_use.tag_in_use(stream.namespace, stream.name, history.tag)
        kept_any = False
        for index, event in enumerate(history.events):
            if _keep_event(index, event, current_in_use, options, in_use, cutoff):
                remaining.add(event.digest)
                kept_any = True
            else:
                removed.append(RemovedTagEvent(event.id, history.tag, event.digest, event.created))
        if history.events and not kept_any:
            emptied.append(history.tag)
    if not removed:
        return None, remaining
    prune = StreamPrune(
        stream.repository_id, stream.namespace, stream.name, tuple(removed), tuple(emptied)
    )
    return prune, remaining


def _closure(roots: set[str], images: Mapping[str, ImageRecord]) -> set[str]:
    """Roots plus the manifests kept indexes list and the referrers of kept subjects."""
    referrers: dict[str, list[str]] = {}
    for record in images.values():
        if record.subject:
            referrers.setdefault(record.subject, []).append(record.digest)
    kept = set(roots)
    todo = list(roots)
    while todo:
        digest = todo.pop()
        found = images.get(digest)
        following = list(found.children) if found else []
        following += referrers.get(digest, [])
        for other in following:
            if other not in kept:
                kept.add(other)
                todo.append(other)
    return kept


def plan_prune(
    snapshot: Snapshot, options: PruneOptions, in_use: InUse, now: datetime
) -> PrunePlan:
    """Decide what to remove; touches nothing."""
    patterns = [re.compile(p) for p in options.whitelist]
    cutoff = now - options.keep_younger_than
    stream_plans: list[StreamPrune] = []
    roots: set[str] = set(in_use.digests)
    for stream in snapshot.streams:
        if _whitelisted(stream.path, patterns):
            roots |= stream.images
            roots |= {e.digest for h in stream.tags for e in h.events}
            continue
        plan, remaining = _plan_stream(stream, options, in_use, cutoff)
        roots |= remaining
        if plan is not None:
            stream_plans.append(plan)
    if not options.all:
        roots |= {d for d, r in snapshot.images.items() if r.created > cutoff}
    kept = _closure(roots, snapshot.images)
    doomed = sorted(d for d in snapshot.images if d not in kept)
    stream_plans.sort(key=lambda s: s.path)
    return PrunePlan(tuple(stream_plans), tuple(doomed))


def plan_prune_keeping(
    snapshot: Snapshot,
    options: PruneOptions,
    in_use: InUse,
    now: datetime,
    immutable: Sequence[ImmutableTag],
) -> tuple[PrunePlan, tuple[ImmutableTag, ...]]:
    """`plan_prune` where the current image of every immutable tag (ImageTagPolicy) is in
    use like a workload's tag, whatever the options (`--all` included); and the immutable
    tags that kept something the plan would otherwise remove, for the explanation."""
    if not immutable:
        return plan_prune(snapshot, options, in_use, now), ()
    tags = frozenset((t.namespace, t.stream, t.tag) for t in immutable)
    plan = plan_prune(snapshot, options, replace(in_use, tags=in_use.tags | tags), now)
    unprotected = plan_prune(snapshot, options, in_use, now)
    saved_images = set(unprotected.images) - set(plan.images)
    saved_items = {
        (s.namespace, s.name, e.tag, e.digest) for s in unprotected.streams for e in s.events
    }
    kept = tuple(
        t
        for t in immutable
        if t.digest in saved_images or (t.namespace, t.stream, t.tag, t.digest) in saved_items
    )
    return plan, kept
