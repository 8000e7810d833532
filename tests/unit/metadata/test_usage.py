"""`ac adm top` SQL over rows inserted directly (SQLite; the contract suite adds PostgreSQL).

The scenario: a base image and a child built on it (sharing the base's layers) in
`team-a/app`, an unrelated image in `team-b/tools`, and a tag that moved to a new image.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.tables import (
    manifest_blobs,
    repository_manifests,
    tag_events,
)
from imageregistry.metadata.usage import image_usage, order_tags, stream_usage
from tests.support.rows import insert_manifest, insert_repository

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1024 * 1024


def digest(label: str) -> str:
    return "sha256:" + label.encode().hex().ljust(64, "0")[:64]


class Rows:
    """Insert typed rows the way the data plane would after pushes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.repos: dict[str, int] = {}
        self.links: set[tuple[int, str]] = set()

    def repo(self, ref: str) -> int:
        if ref not in self.repos:
            ns, name = ref.split("/")
            with self.db.write() as conn:
                self.repos[ref] = insert_repository(conn, ns, name, T0)
        return self.repos[ref]

    def image(
        self, label: str, layers: list[tuple[str, int]], config_size: int = 1000, **extra: Any
    ) -> str:
        name = digest(label)
        config = digest("cfg-" + label)
        with self.db.write() as conn:
            insert_manifest(
                conn,
                name,
                T0,
                size=500,
                config_digest=config,
                storage_size=sum(size for _, size in layers) + config_size,
                layer_count=len(layers),
                top_layer=digest(layers[-1][0]) if layers else None,
                **extra,
            )
            rows = [(-1, config, config_size)] + [
                (i, digest(layer), size) for i, (layer, size) in enumerate(layers)
            ]
            for position, blob, size in rows:
                conn.execute(
                    insert(manifest_blobs).values(
                        manifest_digest=name,
                        position=position,
                        blob_digest=blob,
                        size=size,
                        media_type="application/vnd.oci.image.layer.v1.tar+gzip",
                    )
                )
        return name

    def tag(self, ref: str, tag: str, image: str) -> None:
        repo = self.repo(ref)
        with self.db.write() as conn:
            if (repo, image) not in self.links:
                self.links.add((repo, image))
                conn.execute(
                    insert(repository_manifests).values(
                        repository_id=repo, digest=image, created=T0
                    )
                )
            conn.execute(
                insert(tag_events).values(
                    repository_id=repo, tag=tag, digest=image, created=T0, generation=1
                )
            )


def populate(db: Database) -> dict[str, str]:
    rows = Rows(db)
    base = rows.image("base", [("l1", 2 * MIB), ("l2", 3 * MIB)])
    child = rows.image(
        "child",
        [("l1", 2 * MIB), ("l2", 3 * MIB), ("l3", MIB)],
        last_pulled=T0 + timedelta(hours=1),
    )
    old = rows.image("old", [("o1", 10 * MIB)])
    tools = rows.image("tools", [("t1", 50 * MIB)])
    rows.tag("team-a/base", "latest", base)
    rows.tag("team-a/app", "v1.2", old)
    rows.tag("team-a/app", "v1.10", child)
    rows.tag("team-a/app", "latest", child)
    rows.tag("team-a/app", "dev", child)
    rows.tag("team-a/app", "v1.2", child)  # retag: v1.2 moves from old to child
    rows.tag("team-b/tools", "stable", tools)
    return {"base": base, "child": child, "old": old, "tools": tools}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(open_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    yield database
    database.dispose()


def test_tag_order_latest_then_versions_descending_then_alphabetical() -> None:
    assert order_tags(["dev", "v1.2", "latest", "v1.10", "alpha", "2"]) == (
        "latest",
        "2",
        "v1.10",
        "v1.2",
        "alpha",
        "dev",
    )


def check_images(db: Database) -> None:
    images = populate(db)
    with db.read() as conn:
        rows = list(image_usage(conn))
    assert [r.name for r in rows] == [
        images["child"],
        images["tools"],
        images["base"],
        images["old"],
    ]
    child = rows[0]
    assert [(s.namespace, s.stream, s.tags) for s in child.streams] == [
        ("team-a", "app", ("latest", "v1.10", "v1.2", "dev"))
    ]
    assert child.parents == (images["base"],)
    assert child.storage == 6 * MIB + 1000
    assert child.last_pulled == T0 + timedelta(hours=1)
    assert child.metadata
    old = rows[3]
    assert old.streams == () and old.parents == () and old.last_pulled is None
    assert rows[2].parents == ()  # the base is not its own parent


def check_streams(db: Database) -> None:
    populate(db)
    with db.read() as conn:
        rows = stream_usage(conn)
    assert [(r.namespace, r.name, r.storage, r.images, r.layers) for r in rows] == [
        ("team-b", "tools", 50 * MIB + 1000, 1, 1),
        ("team-a", "app", 6 * MIB + 1000, 1, 3),
        ("team-a", "base", 5 * MIB + 1000, 1, 2),
    ]


def check_namespace(db: Database) -> None:
    images = populate(db)
    with db.read() as conn:
        names = [r.name for r in image_usage(conn, "team-b")]
        streams = [r.name for r in stream_usage(conn, "team-a")]
    assert names == [images["tools"]]
    assert streams == ["app", "base"]


def test_images_sorted_with_current_tags_parents_and_storage(db: Database) -> None:
    check_images(db)


def test_streams_count_unique_blobs_of_current_images(db: Database) -> None:
    check_streams(db)


def test_namespace_restricts_rows(db: Database) -> None:
    check_namespace(db)
