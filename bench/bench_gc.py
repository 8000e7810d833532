"""GC and prune planning at scale: ours (decided from the database) vs distribution's walk.

Synthetic content, the same in both registries: REPOS repositories x MANIFESTS manifests,
TAGGED of them tagged per repository; each manifest has a config, a layer shared by its
repository and a unique layer, and every repository also holds one orphan blob. For the
CNCF distribution registry the filesystem layout (blobs, repository layer links, manifest
revision links, tag links) is written directly; for ours the same rows go straight into a
fresh SQLite database. Timed: `docker-registry garbage-collect --dry-run --delete-untagged`
vs our GC dry run (`Pruner.gc(dry_run=True)`) and our prune plan (a dry-run prune), then
our GC dry run alone at 10x the size. Run: `.venv/bin/python bench/bench_gc.py [--write-docs]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DISTRIBUTION_BINARY,
    machine_info,
    save_result,
    scratch,
    table,
    write_doc_section,
)

from imageregistry.metadata import tables as t
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.prune.gc import GcSettings
from imageregistry.prune.options import PruneOptions
from imageregistry.prune.service import Pruner
from imageregistry.storage.filesystem import FilesystemBlobStore

SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
NOW = datetime.now(UTC)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def synthesize(repos: int, manifests: int, tagged: int) -> dict[str, Any]:
    """Blobs, manifests and tags as plain values both writers consume."""
    blobs: dict[str, bytes] = {}
    repo_items: list[dict[str, Any]] = []
    for r in range(repos):
        name = f"ns{r:04d}/app{r:04d}"
        base = f"base {r}".encode()
        orphan = f"orphan {r}".encode()
        blobs[digest_of(base)] = base
        blobs[digest_of(orphan)] = orphan
        items = []
        for m in range(manifests):
            layer = f"layer {r} {m}".encode()
            config = json.dumps({"repo": r, "m": m, "rootfs": {"type": "layers"}}).encode()
            blobs[digest_of(layer)] = layer
            blobs[digest_of(config)] = config
            refs = [
                (digest_of(config), len(config)),
                (digest_of(base), len(base)),
                (digest_of(layer), len(layer)),
            ]
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": SCHEMA2,
                    "config": {
                        "mediaType": "application/vnd.docker.container.image.v1+json",
                        "digest": refs[0][0],
                        "size": refs[0][1],
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "digest": d,
                            "size": s,
                        }
                        for d, s in refs[1:]
                    ],
                }
            ).encode()
            items.append(
                {
                    "digest": digest_of(body),
                    "body": body,
                    "refs": refs,
                    "tag": f"v{m}" if m < tagged else None,
                }
            )
        repo_items.append(
            {"name": name, "manifests": items, "layers": [digest_of(base), digest_of(orphan)]}
        )
    return {"blobs": blobs, "repos": repo_items}


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def write_cncf(root: Path, content: dict[str, Any]) -> Path:
    v2 = root / "docker" / "registry" / "v2"
    for digest, data in content["blobs"].items():
        hexd = digest[7:]
        path = v2 / "blobs" / "sha256" / hexd[:2] / hexd
        path.mkdir(parents=True, exist_ok=True)
        (path / "data").write_bytes(data)
    for repo in content["repos"]:
        base = v2 / "repositories" / repo["name"]
        for layer in repo["layers"]:
            _link(base / "_layers" / "sha256" / layer[7:], layer)
        for item in repo["manifests"]:
            hexd = item["digest"][7:]
            path = v2 / "blobs" / "sha256" / hexd[:2] / hexd
            path.mkdir(parents=True, exist_ok=True)
            (path / "data").write_bytes(item["body"])
            for digest, _size in item["refs"]:
                _link(base / "_layers" / "sha256" / digest[7:], digest)
            _link(base / "_manifests" / "revisions" / "sha256" / hexd, item["digest"])
            if item["tag"]:
                tag = base / "_manifests" / "tags" / item["tag"]
                _link(tag / "current", item["digest"])
                _link(tag / "index" / "sha256" / hexd, item["digest"])
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
        "  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n"
    )
    return config


def write_ours(url: str, content: dict[str, Any]) -> Database:
    db = Database(open_engine(url))
    old = NOW - timedelta(days=30)
    blob_rows = [
        {"digest": d, "size": len(b), "state": "present", "referenced": old, "created": old}
        for d, b in content["blobs"].items()
    ]
    with db.write() as conn:
        conn.execute(insert(t.blobs), blob_rows)
        for r, repo in enumerate(content["repos"], start=1):
            ns, name = repo["name"].split("/")
            conn.execute(
                insert(t.repositories).values(
                    id=r,
                    namespace=ns,
                    name=name,
                    uid=str(uuid.uuid4()),
                    resource_version=1,
                    created=old,
                    user_data={},
                )
            )
            links = {d for item in repo["manifests"] for d, _ in item["refs"]} | set(repo["layers"])
            conn.execute(
                insert(t.repository_blobs),
                [{"repository_id": r, "digest": d, "created": old} for d in links],
            )
            conn.execute(
                insert(t.manifests),
                [
                    {
                        "digest": i["digest"],
                        "media_type": SCHEMA2,
                        "size": len(i["body"]),
                        "content": i["body"],
                        "config_digest": i["refs"][0][0],
                        "uid": str(uuid.uuid4()),
                        "resource_version": 1,
                        "created": old,
                        "pushed": old,
                        "image_metadata": {},
                    }
                    for i in repo["manifests"]
                ],
            )
            conn.execute(
                insert(t.manifest_blobs),
                [
                    {
                        "manifest_digest": i["digest"],
                        "position": p - 1,
                        "blob_digest": d,
                        "size": s,
                        "media_type": "x",
                    }
                    for i in repo["manifests"]
                    for p, (d, s) in enumerate(i["refs"])
                ],
            )
            conn.execute(
                insert(t.repository_manifests),
                [
                    {"repository_id": r, "digest": i["digest"], "created": old}
                    for i in repo["manifests"]
                ],
            )
            tagged = [i for i in repo["manifests"] if i["tag"]]
            conn.execute(
                insert(t.tag_events),
                [
                    {
                        "repository_id": r,
                        "tag": i["tag"],
                        "digest": i["digest"],
                        "created": old,
                        "generation": 1,
                    }
                    for i in tagged
                ],
            )
    return db


def time_distribution(config: Path) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run(
        [
            str(DISTRIBUTION_BINARY),
            "garbage-collect",
            "--dry-run",
            "--delete-untagged",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    eligible = sum(1 for line in out.stdout.splitlines() if "blob eligible for deletion" in line)
    return elapsed, eligible


def time_ours(db: Database, root: Path, repeat: int = 3) -> dict[str, float | int]:
    """Best of `repeat` runs each (the machine is shared; the minimum is the least noisy)."""
    store = FilesystemBlobStore(root / "blobs", fsync=False)
    pruner = Pruner(db, store, lambda: NOW, GcSettings(upload_max_age=timedelta(days=1)))
    gc_time = prune_time = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        gc = asyncio.run(pruner.gc(dry_run=True))
        gc_time = min(gc_time, time.perf_counter() - start)
    for _ in range(repeat):
        start = time.perf_counter()
        options = PruneOptions(keep_tag_revisions=3, keep_younger_than=timedelta(hours=72))
        outcome = pruner.prune(options, "bench", dry_run=True)
        prune_time = min(prune_time, time.perf_counter() - start)
    return {
        "gc_s": gc_time,
        "gc_candidates": len(gc.blobs),
        "prune_s": prune_time,
        "prune_images": len(outcome.plan.images),
    }


def run(repos: int, manifests: int, tagged: int, with_distribution: bool) -> dict[str, Any]:
    content = synthesize(repos, manifests, tagged)
    with scratch(False) as root:
        result: dict[str, Any] = {
            "repos": repos,
            "manifests": repos * manifests,
            "blobs": len(content["blobs"]),
        }
        if with_distribution:
            config = write_cncf(root / "cncf", content)
            result["distribution_s"], result["distribution_eligible"] = time_distribution(config)
        db = write_ours(f"sqlite:///{root / 'registry.db'}", content)
        result.update(time_ours(db, root))
        db.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--manifests", type=int, default=20)
    parser.add_argument("--tagged", type=int, default=5)
    parser.add_argument("--scale", type=int, default=10, help="multiplier for the large run")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    base = run(args.repos, args.manifests, args.tagged, True)
    base["gc_ratio"] = base["distribution_s"] / base["gc_s"]
    base["prune_ratio"] = base["distribution_s"] / base["prune_s"]
    large = run(args.repos * args.scale, args.manifests, args.tagged, False)
    result = {"machine": machine_info(), "base": base, "large": large}
    print(json.dumps({"base": base, "large": large}, indent=2))
    save_result("gc", result)
    if args.write_docs:
        rows = [
            [
                f"{base['repos']} repos / {base['manifests']} manifests",
                f"{base['distribution_s']:.2f} s",
                f"{base['gc_s']:.3f} s ({base['gc_ratio']:.0f}x)",
                f"{base['prune_s']:.3f} s ({base['prune_ratio']:.0f}x)",
            ],
            [
                f"{large['repos']} repos / {large['manifests']} manifests",
                "not run",
                f"{large['gc_s']:.3f} s",
                f"{large['prune_s']:.3f} s",
            ],
        ]
        write_doc_section(
            "gc",
            "## Registry GC and prune planning (`bench/bench_gc.py`)\n\n"
            "Synthetic content written directly (CNCF filesystem layout / our SQLite rows); "
            "distribution: `docker-registry garbage-collect --dry-run --delete-untagged`; "
            "ours: GC dry run and prune plan decided from the database.\n\n"
            + table(
                ["content", "distribution GC dry run", "our GC dry run", "our prune plan"], rows
            ),
        )


if __name__ == "__main__":
    main()
