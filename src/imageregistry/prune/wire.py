"""JSON shapes of prune and GC results (the `status` of `ImagePrune` / `RegistryGC`).

The server renders plan and outcome values here and the CLI reads the same keys; keeping
both directions in one module is what keeps `ac` and the API in step. Only plain JSON
crosses this edge: dataclass values stay on the server.
"""

from __future__ import annotations

from typing import Any

from imageregistry import apigroups
from imageregistry.clock import rfc3339, rfc3339_precise
from imageregistry.metadata.prune_runs import PruneRun, RestoreResult
from imageregistry.prune.gc import GcResult
from imageregistry.prune.reconcile import ReconcileResult
from imageregistry.prune.service import PruneOutcome
from imageregistry.prune.verify import VerifyPage


def prune_status(outcome: PruneOutcome) -> dict[str, Any]:
    result = outcome.result
    return {
        "dryRun": result.dry_run,
        "runID": outcome.run_id,
        "actions": [
            {
                "kind": s.kind,
                "target": s.target,
                "description": s.description,
                "count": s.count,
                **({"error": s.error} if s.error else {}),
            }
            for s in result.steps
        ],
        "imageStreams": [
            {
                "namespace": s.namespace,
                "name": s.name,
                "removedTags": list(s.emptied_tags),
                "items": [
                    {"tag": e.tag, "image": e.digest, "created": rfc3339_precise(e.created)}
                    for e in s.events
                ],
            }
            for s in outcome.plan.streams
        ],
        "images": list(outcome.plan.images),
        "inUse": sorted(outcome.in_use.sources),
        "immutableTags": [
            {
                "namespace": t.namespace,
                "imageStream": t.stream,
                "tag": t.tag,
                "image": t.digest,
                "policy": t.policy,
            }
            for t in outcome.immutable_kept
        ],
        "summary": result.summary(),
        "failed": len(result.failures),
        # Quota usage the confirmed run released, per namespace ({} for a dry run).
        "quotaReleased": {ns: dict(freed) for ns, freed in outcome.released.items()},
    }


def gc_status(result: GcResult) -> dict[str, Any]:
    return {
        "dryRun": result.dry_run,
        "blobs": [{"digest": b.digest, "size": b.size} for b in result.blobs],
        "count": len(result.blobs),
        "size": result.size,
        "staleLinks": [
            {"repository": f"{link.namespace}/{link.name}".strip("/"), "digest": link.digest}
            for link in result.stale_links
        ],
        "uploads": [
            {"id": u.upload_id, "repository": u.repository, "updated": rfc3339_precise(u.updated)}
            for u in result.uploads
        ],
        "irreversibleRuns": list(result.irreversible_runs),
        "failed": [{"target": t, "error": e} for t, e in result.failed],
        "multipartUploads": [
            {"key": w.key, "uploadID": w.upload_id, "initiated": rfc3339_precise(w.initiated)}
            for w in result.pending_writes
        ],
        "held": {
            "count": result.held.count,
            "size": result.held.size,
            "until": rfc3339(result.held.until) if result.held.until else None,
        },
    }


def reconcile_status(result: ReconcileResult) -> dict[str, Any]:
    return {
        "dryRun": result.dry_run,
        "scanned": result.scanned,
        "unknown": [
            {"digest": str(b.digest), "size": b.size, "modified": rfc3339_precise(b.modified)}
            for b in result.unknown
        ],
        "size": result.size,
        "multipartUploads": [
            {"key": w.key, "uploadID": w.upload_id, "initiated": rfc3339_precise(w.initiated)}
            for w in result.pending_writes
        ],
    }


def verify_status(page: VerifyPage) -> dict[str, Any]:
    """`RegistryVerification.status`: one page; `continue` names where the next starts."""
    return {
        "dryRun": page.dry_run,
        "checked": page.checked,
        "checkedBytes": page.checked_bytes,
        "corrupt": [
            {
                "digest": f.digest,
                "size": f.size,
                "storedSize": f.stored_size,
                "storedDigest": f.actual,
                "problem": f.problem,
                "marked": f.marked,
            }
            for f in page.findings
            if not f.intact
        ],
        "intact": [
            {"digest": f.digest, "size": f.size, "unmarked": f.marked}
            for f in page.findings
            if f.intact
        ],
        "continue": page.next_token,
        "total": {"count": page.total_count, "size": page.total_bytes},
    }


def undo_status(result: RestoreResult) -> dict[str, Any]:
    """An undo's outcome; a dry run has the same keys and `dryRun: true` (nothing changed)."""
    verb = "would restore" if result.dry_run else "restored"
    streams_verb = "would update" if result.dry_run else "updated"
    return {
        "undo": result.run_id,
        **({} if result.dry_run else {"undone": result.run_id}),
        "dryRun": result.dry_run,
        "restoredImages": result.images,
        "restoredTagItems": result.tag_events,
        "images": list(result.image_digests),
        "tagItems": [
            {"imageStream": i.stream, "tag": i.tag, "image": i.digest} for i in result.items
        ],
        "imageStreams": list(result.streams),
        "skipped": list(result.skipped),
        "summary": (
            f"Summary: {verb} {result.images} image object(s), {verb} {result.tag_events} "
            f"image stream tag item(s), {streams_verb} {len(result.streams)} image stream(s)"
        ),
        "failed": len(result.skipped),
    }


def run_object(run: PruneRun) -> dict[str, Any]:
    removed = run.removed
    status: dict[str, Any] = {"state": run.state, "user": run.user, **dict(run.summary)}
    if removed:
        status["images"] = [i["manifest"]["digest"] for i in removed.get("images", [])]
        status["tagItems"] = [
            {
                "imageStream": f"{e['namespace']}/{e['stream']}",
                "tag": e["tag"],
                "image": e["digest"],
            }
            for e in removed.get("tagEvents", [])
        ]
    return {
        "apiVersion": apigroups.IMAGE_V1,
        "kind": "ImagePruneRun",
        "metadata": {"name": run.id, "creationTimestamp": rfc3339_precise(run.created)},
        "spec": dict(run.options),
        "status": status,
    }
