"""What a ResourceQuota costs a push, and how long computing a namespace's usage takes.

1. Against a running server (plain HTTP, one worker): manifest PUT rate (every PUT a new
   image with a new 4 KiB layer and the config both namespaces share, so each one requests
   images and storage and is checked against the admission bound) and push throughput
   (POST + monolithic PUT of a 16 MiB layer, config, manifest), in a namespace without and
   one with a ResourceQuota, alternating rounds, median. Target: with a quota within 10 %
   of without.
2. In process, on SQLite (and PostgreSQL with `--postgres URL`): a namespace of 10,000
   images (50 streams x 200 images; each image a unique config and layer plus one of 10
   base layers shared in the namespace), next to another namespace of 2,000 images sharing
   the bases; `namespace_usage` from scratch (target < 1 s) and one push's quota check.

    .venv/bin/python bench/bench_quota.py [--quick] [--postgres URL|auto] [--write-docs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MiB,
    Server,
    loadavg,
    machine_info,
    median,
    push_small_blob,
    save_result,
    scratch,
    start_ours,
    table,
    write_doc_section,
)

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.quota import LimitsCache, check_push, namespace_usage
from imageregistry.metadata.tables import (
    blobs,
    manifest_blobs,
    manifests,
    objects,
    repositories,
    repository_manifests,
    tag_events,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
HARD = {
    "count/imagestreams.image.alauda.io": "1000",
    "image.alauda.io/images": "1000000",
    "image.alauda.io/storage": "1Ti",
}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_for(config: tuple[str, int], layer: tuple[str, int]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": config[0], "size": config[1]},
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer[0], "size": layer[1]}],
        }
    ).encode()


def create_quota(server: Server, namespace: str) -> None:
    with server.client() as client:
        body = {"metadata": {"name": "q"}, "spec": {"hard": HARD}}
        resp = client.post(f"/api/v1/namespaces/{namespace}/resourcequotas", json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"quota: {resp.status_code} {resp.text[:300]}")


def prepare_puts(server: Server, repo: str, count: int, offset: int) -> list[tuple[str, bytes]]:
    """Upload `count` new layers (untimed); the manifests that will reference them."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    with server.client() as client:
        config_digest = push_small_blob(client, server, repo, config)
        out = []
        for i in range(offset, offset + count):
            layer = i.to_bytes(8, "big") + os.urandom(4088)
            digest = push_small_blob(client, server, repo, layer)
            manifest = manifest_for((config_digest, len(config)), (digest, len(layer)))
            out.append((f"t{i}", manifest))
    return out


def put_rate(server: Server, repo: str, puts: list[tuple[str, bytes]], threads: int) -> float:
    def put(item: tuple[str, bytes]) -> None:
        tag, manifest = item
        resp = client.put(
            f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        if resp.status_code != 201:
            raise RuntimeError(f"manifest PUT {resp.status_code} {resp.text[:300]}")

    limits = httpx.Limits(max_connections=threads)
    with (
        httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": server.authorization},
            limits=limits,
            timeout=120,
        ) as client,
        ThreadPoolExecutor(threads) as pool,
    ):
        started = time.perf_counter()
        list(pool.map(put, puts))
        return len(puts) / (time.perf_counter() - started)


def push_throughput(server: Server, repo: str, pushes: int, size: int, offset: int) -> float:
    """MiB/s of whole pushes: layer upload (POST + monolithic PUT), config, manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": offset}).encode()
    layers = [os.urandom(size) for _ in range(pushes)]
    with server.client() as client:
        started = time.perf_counter()
        for i, layer in enumerate(layers):
            config_digest = push_small_blob(client, server, repo, config)
            digest = push_small_blob(client, server, repo, layer)
            manifest = manifest_for((config_digest, len(config)), (digest, len(layer)))
            resp = client.put(
                f"/v2/{repo}/manifests/p{offset + i}",
                content=manifest,
                headers={"Content-Type": OCI_MANIFEST},
            )
            if resp.status_code != 201:
                raise RuntimeError(f"manifest PUT {resp.status_code} {resp.text[:300]}")
        elapsed = time.perf_counter() - started
    return pushes * size / MiB / elapsed


def bench_server(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = start_ours(work / "server", tls=False, workers=1)
    try:
        for ns in ("free", "limited"):
            with server.client() as client:
                push_small_blob(client, server, f"{ns}/app", b"create the namespace")
        create_quota(server, "limited")
        rates: dict[str, list[float]] = {"free": [], "limited": []}
        throughput: dict[str, list[float]] = {"free": [], "limited": []}
        for r in range(args.rounds):
            order = ("free", "limited") if r % 2 == 0 else ("limited", "free")
            for ns in order:
                puts = prepare_puts(server, f"{ns}/app", args.puts, r * args.puts)
                rates[ns].append(put_rate(server, f"{ns}/app", puts, args.threads))
            for ns in order:
                throughput[ns].append(
                    push_throughput(server, f"{ns}/push", args.pushes, args.push_size, r * 100)
                )
            print(f"round {r + 1}: PUT/s {rates}, MiB/s {throughput}", flush=True)
        return {
            "put_rate": {k: median(v) for k, v in rates.items()},
            "push_mib_s": {k: median(v) for k, v in throughput.items()},
            "raw": {"put_rate": rates, "push_mib_s": throughput},
        }
    finally:
        server.stop()


def fill(db: Database, namespace: str, streams: int, per_stream: int, start: int) -> None:
    """Images straight into the tables, in the shape a push writes them."""
    now = datetime.now(UTC)
    bases = [(f"sha256:{n:064x}", 30 * MiB + n) for n in range(10)]
    with db.write() as conn:
        if start == 0:
            conn.execute(
                insert(blobs),
                [
                    {"digest": d, "size": s, "state": "present", "referenced": now, "created": now}
                    for d, s in bases
                ],
            )
        for s in range(streams):
            repo = conn.execute(
                insert(repositories).values(
                    namespace=namespace,
                    name=f"app-{s}",
                    uid=str(uuid.uuid4()),
                    resource_version=1,
                    generation=1,
                    created=now,
                    user_data={},
                )
            ).inserted_primary_key
            assert repo is not None
            rows: dict[str, list[dict[str, Any]]] = {
                "blobs": [],
                "manifests": [],
                "edges": [],
                "links": [],
                "events": [],
            }
            for i in range(per_stream):
                n = start + s * per_stream + i
                digest, config, layer = (
                    f"sha256:{n + off:064x}" for off in (1 << 40, 2 << 40, 3 << 40)
                )
                base = bases[n % len(bases)]
                rows["blobs"] += [
                    {
                        "digest": config,
                        "size": 1000,
                        "state": "present",
                        "referenced": now,
                        "created": now,
                    },
                    {
                        "digest": layer,
                        "size": MiB + n,
                        "state": "present",
                        "referenced": now,
                        "created": now,
                    },
                ]
                rows["manifests"].append(
                    {
                        "digest": digest,
                        "media_type": OCI_MANIFEST,
                        "size": 400,
                        "content": b"{}",
                        "config_digest": config,
                        "uid": str(uuid.uuid4()),
                        "resource_version": 1,
                        "created": now,
                        "pushed": now,
                        "image_metadata": {},
                        "storage_size": 1000 + base[1] + MiB + n,
                        "layer_count": 2,
                        "user_data": {},
                    }
                )
                rows["edges"] += [
                    {
                        "manifest_digest": digest,
                        "position": -1,
                        "blob_digest": config,
                        "size": 1000,
                        "media_type": CONFIG_TYPE,
                    },
                    {
                        "manifest_digest": digest,
                        "position": 0,
                        "blob_digest": base[0],
                        "size": base[1],
                        "media_type": LAYER_TYPE,
                    },
                    {
                        "manifest_digest": digest,
                        "position": 1,
                        "blob_digest": layer,
                        "size": MiB + n,
                        "media_type": LAYER_TYPE,
                    },
                ]
                rows["links"].append({"repository_id": repo[0], "digest": digest, "created": now})
                rows["events"].append(
                    {
                        "repository_id": repo[0],
                        "tag": f"v{i % 20}",
                        "digest": digest,
                        "created": now,
                        "generation": 1,
                    }
                )
            conn.execute(insert(blobs), rows["blobs"])
            conn.execute(insert(manifests), rows["manifests"])
            conn.execute(insert(manifest_blobs), rows["edges"])
            conn.execute(insert(repository_manifests), rows["links"])
            conn.execute(insert(tag_events), rows["events"])
        conn.execute(
            insert(objects).values(
                resource="resourcequotas",
                namespace=namespace,
                name="q",
                uid=str(uuid.uuid4()),
                resource_version=1,
                created=now,
                labels={},
                body={"metadata": {"name": "q", "namespace": namespace}, "spec": {"hard": HARD}},
            )
        )


def timed(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)


def bench_recompute(url: str, images: int, reps: int) -> dict[str, Any]:
    db = Database(open_engine(url))
    try:
        streams = 50
        fill(db, "big", streams, images // streams, 0)
        fill(db, "other", 10, 200, images)
        usage: dict[str, int] = {}

        def recompute() -> None:
            with db.read() as conn:
                usage.update(namespace_usage(conn, "big").values)

        full = timed(recompute, reps)

        cache = LimitsCache()  # a server process keeps one: the quota objects stay parsed
        base = f"sha256:{0:064x}"  # one of the 10 base layers the namespace's images share

        def one_check() -> None:
            # A new image with a new layer and a shared base layer: it requests images
            # and the new layer's bytes.
            conn_cm = db.engine.connect()
            with conn_cm as conn, conn.begin() as tx:
                blobs = {base: 30 * MiB, "sha256:" + "e" * 64: 5}
                check_push(conn, "big", "app-0", "sha256:" + "f" * 64, blobs, 5, "new", cache)
                tx.rollback()

        cold = timed(one_check, reps)  # rolled back: no admission bound stored yet
        with db.write() as conn:  # store the bound, as the namespace's previous push did
            check_push(conn, "big", "app-0", "sha256:" + "d" * 64, {}, 0, "warm", cache)
        warm = timed(one_check, reps)
        return {"recompute_s": full, "check_cold_s": cold, "check_s": warm, "usage": usage}
    finally:
        db.dispose()


def write_docs(result: dict[str, Any]) -> None:
    info, srv = result["machine"], result["server"]
    rows = []
    for label, key, unit in (
        ("manifest PUT (new image each)", "put_rate", "req/s"),
        ("push of a 16 MiB image", "push_mib_s", "MiB/s"),
    ):
        free, limited = srv[key]["free"], srv[key]["limited"]
        ratio = limited / free
        verdict = "met" if ratio >= 0.9 else "**missed**"
        rows.append(
            [
                label,
                f"{free:,.1f} {unit}",
                f"{limited:,.1f} {unit}",
                f"{ratio:.2f}x",
                "≥ 0.90x",
                verdict,
            ]
        )
    recompute = []
    for name, r in result["recompute"].items():
        verdict = "met" if r["recompute_s"] < 1 else "**missed**"
        recompute.append(
            [
                name,
                f"{r['recompute_s'] * 1000:,.0f} ms",
                f"{r['check_cold_s'] * 1000:,.0f} ms",
                f"{r['check_s'] * 1000:,.1f} ms",
                verdict,
            ]
        )
    a = result["args"]
    lines = [
        "## Quotas: push cost and usage from scratch",
        "",
        f"- Date: {info['date']}; commit `{info['commit']}`; script `bench/bench_quota.py`",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM; "
        f"load average {info['loadavg_start']} at start, {result['loadavg_end']} at end",
        "- Server: ours, `--workers 1`, plain HTTP, SQLite. Namespace `free` has no quota, "
        "`limited` a ResourceQuota on all three resources (limits never reached). "
        f"{a['rounds']} alternating rounds, median. Manifest PUTs: {a['puts']} per round over "
        f"{a['threads']} connections, each a new image whose 4 KiB layer was uploaded "
        "beforehand (the config is the same in both namespaces), so every PUT in `limited` "
        "requests images and storage and is checked against the namespace's admission bound "
        "(the namespace grows to "
        f"{a['rounds'] * a['puts']} images). Pushes: {a['pushes']} per round, sequential.",
        "",
        table(["measurement", "no quota", "with quota", "ratio", "target", "verdict"], rows),
        "",
        f"Usage of a namespace of {a['images']:,} images (50 streams; each image a unique "
        "config and layer plus one of 10 base layers; another namespace of 2,000 images "
        f"shares the bases), median of {a['reps']}: `namespace_usage` from scratch (streams, "
        "images, storage; what every quota read renders) and one push's quota check: without "
        "an admission bound (the first push after a refusal, an undo or a push without "
        "quota) it computes the usage in full; with one, in a process that knows the "
        "namespace's quota, it is one UPDATE of the bound that also asks which of the image's "
        "blobs the namespace holds (the image: a new layer and one of the shared base layers; "
        "`metadata/quota.py`).",
        "",
        table(
            [
                "database",
                "usage from scratch",
                "push check, no bound",
                "push check, bound",
                "target < 1 s",
            ],
            recompute,
        ),
    ]
    md = "\n".join(lines) + "\n"
    write_doc_section("quota", md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--puts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pushes", type=int, default=8)
    parser.add_argument("--push-size", type=int, default=16 * MiB)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--postgres", help="URL of an empty PostgreSQL database, or `auto` to start one"
    )
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.puts, args.pushes, args.images, args.reps = 2, 30, 2, 1000, 2
    result: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    with scratch(args.keep) as work:
        result["server"] = bench_server(work, args)
        result["recompute"] = {
            "SQLite": bench_recompute(f"sqlite:///{work / 'usage.db'}", args.images, args.reps)
        }
        if args.postgres == "auto":  # a throwaway cluster, as the test suite starts one
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.support.postgres import create_database, temporary_postgres

            with temporary_postgres() as server:
                url = create_database(server, "bench_quota")
                result["recompute"]["PostgreSQL"] = bench_recompute(url, args.images, args.reps)
        elif args.postgres:
            result["recompute"]["PostgreSQL"] = bench_recompute(
                args.postgres, args.images, args.reps
            )
    result["loadavg_end"] = loadavg()
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str))
    save_result("quota", result)
    if args.write_docs:
        write_docs(result)


if __name__ == "__main__":
    main()
