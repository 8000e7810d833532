"""RBAC cost on the registry hot path: service account via RoleBinding vs masters.

Fills a fresh data dir with N namespaces and M RoleBindings (written straight into the
`objects` table while the server is stopped, in the shape the API store writes, so the
server starts with them as if created through the API), then through the real API
creates a service account, binds `system:image-puller` to it in one namespace and asks
the TokenRequest API for its token. wrk then GETs one manifest by tag with that token
and with the admin (`system:masters`) token, alternating, and reports the ratio
(target >= 0.9).

    .venv/bin/python bench/bench_rbac.py [--quick] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Server,
    loadavg,
    machine_info,
    median,
    push_image,
    run_wrk,
    save_result,
    scratch,
    start_ours,
    table,
    write_doc_section,
)

RB_KEY = "rolebindings.rbac.authorization.k8s.io"
ROLES = ("system:image-puller", "system:image-pusher", "view", "edit")
TARGET = 0.9


def ns_name(i: int) -> str:
    return f"team-{i:04d}"


def _row(
    resource: str, namespace: str, name: str, rv: int, now: datetime, body: dict[str, Any]
) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    meta = body["metadata"]
    meta.update(
        uid=uid, resourceVersion=str(rv), creationTimestamp=now.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    if namespace:
        meta["namespace"] = namespace
    return {
        "resource": resource,
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "resource_version": rv,
        "created": now,
        "labels": meta.get("labels") or {},
        "body": body,
    }


def _binding(ns: int, j: int, namespaces: int) -> dict[str, Any]:
    """Varied subjects: users, groups, and service accounts of other namespaces."""
    other = ns_name((ns * 7 + j) % max(namespaces, 1))
    subjects = [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": f"user-{ns}-{j}"},
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": f"group-{j}"},
        {"kind": "ServiceAccount", "name": f"robot-{j}", "namespace": other},
    ]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"binding-{j:02d}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": ROLES[j % len(ROLES)],
        },
        "subjects": subjects,
    }


def populate(database_url: str, namespaces: int, bindings: int) -> None:
    """Insert namespaces and RoleBindings (spread evenly) in one transaction."""
    from sqlalchemy import insert

    from imageregistry.metadata.db import Database, record_change
    from imageregistry.metadata.engine import open_engine
    from imageregistry.metadata.tables import objects

    db = Database(open_engine(database_url))
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    per_ns = -(-bindings // max(namespaces, 1))
    try:
        with db.write() as conn:
            for i in range(namespaces):
                name = ns_name(i)
                rv = record_change(conn, "namespaces", "", name, "ADDED")
                body: dict[str, Any] = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
                rows.append(_row("namespaces", "", name, rv, now, body))
            made = 0
            for i in range(namespaces):
                for j in range(per_ns):
                    if made == bindings:
                        break
                    body = _binding(i, j, namespaces)
                    name = body["metadata"]["name"]
                    rv = record_change(conn, RB_KEY, ns_name(i), name, "ADDED")
                    rows.append(_row(RB_KEY, ns_name(i), name, rv, now, body))
                    made += 1
            conn.execute(insert(objects), rows)
    finally:
        db.dispose()


def _api(client: Any, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.request(method, path, json=body)
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
    result: dict[str, Any] = resp.json()
    return result


def service_account_token(server: Server, namespace: str, account: str) -> str:
    """Create the account and its puller RoleBinding through the API; TokenRequest a JWT."""
    with server.client() as client:
        _api(
            client,
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
        )
        _api(
            client,
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{account}-puller"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:image-puller",
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            },
        )
        review = _api(
            client,
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 7200},
            },
        )
    return str(review["status"]["token"])


def check_access(server: Server, token: str, allowed: str, denied: str) -> dict[str, int]:
    """The service account must pull `allowed` and be refused `denied` (RBAC really runs)."""
    import httpx

    codes = {}
    for repo in (allowed, denied):
        resp = httpx.get(
            f"{server.base_url}/v2/{repo}/manifests/latest",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.oci.image.manifest.v1+json",
            },
            verify=str(server.cacert) if server.cacert else True,
        )
        codes[repo] = resp.status_code
    if codes[allowed] != 200 or codes[denied] not in (401, 403):
        raise RuntimeError(f"unexpected access pattern for the service account: {codes}")
    return codes


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ours = start_ours(workdir / "ours", tls=args.tls, workers=args.workers)
    ours.stop()  # the data dir now has the schema, bootstrap roles and admin token
    assert ours.data_dir is not None
    populate(
        f"sqlite:///{(ours.data_dir / 'registry.db').resolve()}", args.namespaces, args.bindings
    )
    ours = start_ours(workdir / "ours", tls=args.tls, workers=args.workers)
    try:
        target_ns, other_ns = ns_name(args.namespaces // 2), ns_name(args.namespaces // 2 + 1)
        token = service_account_token(ours, target_ns, "puller")
        print(f"  service account token for {target_ns}/puller issued", flush=True)
        with ours.client() as client:
            push_image(client, ours, f"{target_ns}/app", "latest")
            push_image(client, ours, f"{other_ns}/app", "latest")
        codes = check_access(ours, token, f"{target_ns}/app", f"{other_ns}/app")
        url = f"{ours.base_url}/v2/{target_ns}/app/manifests/latest"
        tokens = {"masters": ours.authorization, "serviceaccount": f"Bearer {token}"}
        opts: dict[str, Any] = {
            "script_dir": workdir,
            "connections": args.connections,
            "threads": args.threads,
        }
        for auth in tokens.values():
            run_wrk(url, auth, duration=3, **opts)
        rps: dict[str, list[float]] = {k: [] for k in tokens}
        for i in range(args.reps):
            order = list(tokens.items()) if i % 2 == 0 else list(reversed(tokens.items()))
            for name, auth in order:
                res = run_wrk(url, auth, duration=args.wrk_duration, **opts)
                if res.non_2xx or res.errors:
                    raise RuntimeError(f"{name}: {res.non_2xx} non-2xx, {res.errors} errors")
                rps[name].append(res.requests_per_sec)
                print(f"  {name}: {res.requests_per_sec:.0f} req/s", flush=True)
        return {"rps": rps, "access_check": codes, "url_path": url.split("/", 3)[3]}
    finally:
        ours.stop()


def render(results: dict[str, Any]) -> str:
    m, a, r = results["machine"], results["args"], results["result"]
    masters, sa = median(r["rps"]["masters"]), median(r["rps"]["serviceaccount"])
    ratio = sa / masters
    verdict = "met" if ratio >= TARGET else "**missed**"
    rows = [
        ["system:masters (admin bearer token)", f"{masters:,.0f}", ""],
        ["service account via RoleBinding (TokenRequest JWT)", f"{sa:,.0f}", ""],
        ["ratio (service account / masters)", f"{ratio:.2f}", f">= {TARGET}: {verdict}"],
    ]
    return "\n".join(
        [
            "## Authorization cost on the registry path",
            "",
            f"- Date: {m['date']}; commit `{m['commit']}`; script `bench/bench_rbac.py`",
            f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
            f"Linux {m['kernel']}; load average (1/5/15 min) {m['loadavg_start']} at start, "
            f"{m.get('loadavg_end', '?')} at end; {m['wrk'].split(' [')[0]}",
            f"- Database: SQLite with {a['namespaces']:,} namespaces and {a['bindings']:,} "
            "RoleBindings (users, groups and service accounts of other namespaces as subjects, "
            "bound to image-puller/pusher/view/edit), plus the bench account's own binding.",
            f"- Method: `GET /v2/<ns>/app/manifests/latest` with wrk `-t{a['threads']} "
            f"-c{a['connections']}`, {a['wrk_duration']} s x {a['reps']} per token after a 3 s "
            f"warm-up each, tokens alternating, median; our server `--workers {a['workers']}`, "
            f"{'TLS' if a['tls'] else 'plain HTTP'}. Before measuring, the service account is "
            f"checked to pull its namespace (200) and be refused another "
            f"({r['access_check'][next(iter(list(r['access_check'])[1:]))]}).",
            "",
            table(["identity", "req/s", "target"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--bindings", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--wrk-duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="render a saved result instead of running"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print(render(saved))
        if args.write_docs:
            write_doc_section("rbac", render(saved))
        return 0
    if args.quick:
        args.reps, args.wrk_duration = 2, 3
    machine = machine_info()
    with scratch(args.keep, args.workdir) as workdir:
        result = measure(args, workdir)
    results = {
        "machine": machine,
        "args": {k: v for k, v in vars(args).items() if k != "workdir"},
        "result": result,
    }
    results["machine"]["loadavg_end"] = loadavg()
    path = save_result("rbac", results)
    print()
    print(render(results))
    print(f"\nresult: {path}")
    if args.write_docs:
        write_doc_section("rbac", render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
