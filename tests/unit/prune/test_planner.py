"""Prune planning rules (docs/behaviour.md#ac-adm-prune-images) over hand-built snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imageregistry.metadata.prune_records import (
    ImageRecord,
    Snapshot,
    Stream,
    TagEvent,
    TagHistory,
)
from imageregistry.prune.executor import (
    DescribingImageDeleter,
    DescribingTagEventDeleter,
    execute_prune,
)
from imageregistry.prune.inuse import InUse, gather_in_use
from imageregistry.prune.options import PruneOptions
from imageregistry.prune.planner import plan_prune

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=10)


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def history(tag: str, digests: list[int], created: datetime = OLD, base_id: int = 0) -> TagHistory:
    # Newest first: highest id first.
    events = [TagEvent(base_id + len(digests) - i, d(n), created) for i, n in enumerate(digests)]
    return TagHistory(tag, tuple(events))


def images(*numbers: int, created: datetime = OLD) -> dict[str, ImageRecord]:
    return {d(n): ImageRecord(d(n), created) for n in numbers}


def snapshot_with_latest_revisions(revisions: int = 8) -> Snapshot:
    digests = list(range(revisions, 0, -1))  # 8 is current
    stream = Stream(1, "team-a", "demo", (history("latest", digests),), frozenset(map(d, digests)))
    return Snapshot((stream,), images(*digests))


def test_keep_tag_revisions_removes_older_items_and_their_images() -> None:
    plan = plan_prune(
        snapshot_with_latest_revisions(), PruneOptions(keep_tag_revisions=5), InUse(), NOW
    )
    assert [s.path for s in plan.streams] == ["team-a/demo"]
    assert sorted(e.digest for e in plan.streams[0].events) == [d(1), d(2), d(3)]
    assert plan.streams[0].emptied_tags == ()
    assert plan.images == (d(1), d(2), d(3))


def test_young_items_and_images_are_kept() -> None:
    snap = snapshot_with_latest_revisions()
    young = Snapshot(
        (
            Stream(
                1,
                "team-a",
                "demo",
                (history("latest", list(range(8, 0, -1)), NOW - timedelta(hours=1)),),
            ),
        ),
        {k: ImageRecord(k, NOW - timedelta(hours=1)) for k in snap.images},
    )
    options = PruneOptions(keep_tag_revisions=1, keep_younger_than=timedelta(hours=72))
    assert plan_prune(young, options, InUse(), NOW).is_empty


def test_whitelisted_repository_is_untouched() -> None:
    options = PruneOptions(keep_tag_revisions=1, whitelist=("^team-a/.*",))
    assert plan_prune(snapshot_with_latest_revisions(), options, InUse(), NOW).is_empty


def test_in_use_digest_keeps_item_and_image() -> None:
    in_use = gather_in_use([f"reg.example.com/other/x@{d(2)}"], ["reg.example.com"], False)
    plan = plan_prune(
        snapshot_with_latest_revisions(), PruneOptions(keep_tag_revisions=5), in_use, NOW
    )
    assert d(2) not in plan.images
    assert d(2) not in {e.digest for e in plan.streams[0].events}


def test_all_ignores_retention_but_keeps_current_item_of_tag_in_use() -> None:
    in_use = gather_in_use(["reg.example.com/team-a/demo:latest"], ["reg.example.com"], False)
    plan = plan_prune(snapshot_with_latest_revisions(), PruneOptions(all=True), in_use, NOW)
    assert d(8) not in plan.images
    assert len(plan.streams[0].events) == 7
    plan_all = plan_prune(snapshot_with_latest_revisions(), PruneOptions(all=True), InUse(), NOW)
    assert plan_all.streams[0].emptied_tags == ("latest",)
    assert len(plan_all.images) == 8


def test_tag_reference_to_another_registry_does_not_protect() -> None:
    in_use = gather_in_use(["elsewhere.io/team-a/demo:latest"], ["reg.example.com"], False)
    plan = plan_prune(snapshot_with_latest_revisions(), PruneOptions(all=True), in_use, NOW)
    assert d(8) in plan.images


def test_image_referenced_by_another_stream_is_kept() -> None:
    snap = snapshot_with_latest_revisions()
    other = Stream(2, "team-b", "copy", (history("v1", [1], base_id=100),))
    plan = plan_prune(
        Snapshot((*snap.streams, other), snap.images),
        PruneOptions(keep_tag_revisions=5),
        InUse(),
        NOW,
    )
    assert d(1) not in plan.images
    assert d(2) in plan.images


def test_index_keeps_children_and_kept_subject_keeps_referrers() -> None:
    recs = images(1, 2, 3, 4, 5)
    recs[d(1)] = ImageRecord(d(1), OLD, children=(d(2), d(3)))
    recs[d(4)] = ImageRecord(d(4), OLD, subject=d(1))  # signature of the index
    recs[d(5)] = ImageRecord(d(5), OLD, subject=d(99))  # referrer of a missing subject
    stream = Stream(1, "ns", "multi", (history("latest", [1]),))
    plan = plan_prune(Snapshot((stream,), recs), PruneOptions(), InUse(), NOW)
    assert plan.images == (d(5),)


def test_untagged_old_image_is_pruned_young_one_kept() -> None:
    recs = images(1) | {d(2): ImageRecord(d(2), NOW - timedelta(minutes=5))}
    stream = Stream(1, "ns", "s", (), frozenset({d(1), d(2)}))
    plan = plan_prune(Snapshot((stream,), recs), PruneOptions(), InUse(), NOW)
    assert plan.images == (d(1),)


def test_second_plan_after_applying_first_is_empty() -> None:
    snap = snapshot_with_latest_revisions()
    options = PruneOptions(keep_tag_revisions=5)
    plan = plan_prune(snap, options, InUse(), NOW)
    removed = {e.id for s in plan.streams for e in s.events}
    stream = snap.streams[0]
    kept = tuple(e for e in stream.tags[0].events if e.id not in removed)
    after = Snapshot(
        (Stream(1, "team-a", "demo", (TagHistory("latest", kept),)),),
        {k: v for k, v in snap.images.items() if k not in plan.images},
    )
    assert plan_prune(after, options, InUse(), NOW).is_empty


def test_dry_run_execution_describes_every_step_and_summarizes() -> None:
    plan = plan_prune(
        snapshot_with_latest_revisions(), PruneOptions(keep_tag_revisions=5), InUse(), NOW
    )
    tags, imgs = DescribingTagEventDeleter(), DescribingImageDeleter()
    result = execute_prune(plan, tags, imgs, dry_run=True)
    first = result.steps[0].description
    assert first == "Deleting 3 items from image stream team-a/demo"
    assert imgs.described == [d(1), d(2), d(3)]
    assert result.summary() == (
        "Summary: deleted 3 image object(s), deleted 3 image stream tag item(s), "
        "updated 1 image stream(s)"
    )


class FailingImageDeleter:
    def delete_image(self, digest: str) -> None:
        if digest == d(2):
            raise RuntimeError("boom")


def test_failed_step_is_reported_and_others_still_run() -> None:
    plan = plan_prune(
        snapshot_with_latest_revisions(), PruneOptions(keep_tag_revisions=5), InUse(), NOW
    )
    result = execute_prune(plan, DescribingTagEventDeleter(), FailingImageDeleter(), dry_run=False)
    assert [s.target for s in result.failures] == [d(2)]
    assert result.summary().startswith("Summary: deleted 2 image object(s)")


def test_empty_plan_summary() -> None:
    empty = Snapshot(())
    result = execute_prune(
        plan_prune(empty, PruneOptions(), InUse(), NOW),
        DescribingTagEventDeleter(),
        DescribingImageDeleter(),
        dry_run=True,
    )
    assert result.summary() == "Summary: deleted 0 objects"
