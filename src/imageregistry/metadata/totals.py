"""Storage totals for the metrics: images, image streams and stored blob bytes.

Three aggregate queries in one read transaction; `observability.sources` runs them on a
fixed interval per worker, never per scrape.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from imageregistry.metadata.db import Database
from imageregistry.metadata.tables import blobs, manifests, repositories


@dataclass(frozen=True)
class StorageTotals:
    images: int
    streams: int
    blob_bytes: int


def read_totals(db: Database) -> StorageTotals:
    with db.read() as conn:
        images = conn.execute(select(func.count()).select_from(manifests)).scalar_one()
        streams = conn.execute(select(func.count()).select_from(repositories)).scalar_one()
        stored = conn.execute(
            select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.state == "present")
        ).scalar_one()
    return StorageTotals(int(images), int(streams), int(stored))
