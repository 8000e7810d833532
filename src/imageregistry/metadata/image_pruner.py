"""The stored `ImagePruner` object the scheduled pruner reads, and the status it writes back.

The object itself is an ordinary API object in the `objects` table (created and edited
through the API like any other); the scheduler (`prune.scheduler`) needs only its `spec`
and `status`, and writes a new `status` after a run as a `MODIFIED` change with a new
resourceVersion, so watches and `kubectl get -w` see the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from imageregistry import apigroups
from imageregistry.metadata.db import Database, record_change
from imageregistry.metadata.tables import objects

PRUNER_RESOURCE = f"imagepruners.{apigroups.OPERATOR}"
PRUNER_NAME = "cluster"  # the one configuration the scheduler runs (cluster-scoped)


@dataclass(frozen=True)
class ImagePrunerRow:
    """The parts of the stored object the scheduler reads (each `{}` when absent)."""

    spec: dict[str, Any]
    status: dict[str, Any]


def load_image_pruner(db: Database) -> ImagePrunerRow | None:
    """The `cluster` ImagePruner, or None when nobody has created it."""
    with db.read() as conn:
        body = conn.execute(
            select(objects.c.body).where(
                objects.c.resource == PRUNER_RESOURCE,
                objects.c.namespace == "",
                objects.c.name == PRUNER_NAME,
            )
        ).scalar()
    if not body:
        return None
    return ImagePrunerRow(dict(body.get("spec") or {}), dict(body.get("status") or {}))


def save_image_pruner_status(db: Database, status: dict[str, Any]) -> bool:
    """Replace the object's status (a new resourceVersion); False when it was deleted."""
    key = (objects.c.resource == PRUNER_RESOURCE, objects.c.name == PRUNER_NAME)
    with db.write() as conn:
        body = conn.execute(select(objects.c.body).where(*key)).scalar()
        if not body:
            return False
        version = record_change(conn, PRUNER_RESOURCE, "", PRUNER_NAME, "MODIFIED")
        body = dict(body)
        body["status"] = status
        body.setdefault("metadata", {})["resourceVersion"] = str(version)
        conn.execute(update(objects).where(*key).values(body=body, resource_version=version))
    return True
