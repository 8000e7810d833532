"""Side-by-side data-plane benchmark: Registry v2 versus the CNCF distribution registry.

Starts both registries on loopback (a plain-HTTP pair, then a TLS pair), drives both with
the same clients and prints absolute numbers and ratios against these targets:
blob push (curl, monolithic streamed PUT; ours fsyncs, distribution does not), blob pull
(curl GET), manifest GET by tag with authentication (wrk; distribution with htpasswd basic
auth, ours with a bearer token) and our server's peak RSS while receiving a 2 GiB blob.
Every figure is the median of several repetitions after a warm-up; each push uses a new
digest and the page cache is flushed (`sync`) before it so one server's dirty pages are
never written back on the other's clock.

    .venv/bin/python bench/bench_dataplane.py [--quick] [--write-docs]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MiB,
    Server,
    WrkResult,
    add_client_options,
    add_report_options,
    human,
    loadavg,
    machine_info,
    make_blob_file,
    make_tls,
    median,
    parse_size,
    pull_rounds,
    push_checked_image,
    push_rounds,
    push_rss,
    rendered_saved,
    run_wrk,
    save_result,
    scratch,
    start_distribution,
    start_ours,
    table,
    write_doc_section,
    write_htpasswd,
)

REPO = "bench/app"
BLOB_PORT = "ours, blob port"  # ours with `blob_listen` set (plain HTTP only)
BASIC = "ours, Basic"  # ours, the token sent as the Basic password
BASIC_PASSWORD = "ours, Basic password"  # ours, the htpasswd user's password (as distribution)
TARGETS = {"push": 2.5, "pull": 1.2, "manifest": 5.0}
RSS_LIMIT_MB = 150


# ---------------------------------------------------------------- measurements


def bench_blobs(
    servers: list[Server], blob_dir: Path, size: int, reps: int, pull_reps: int
) -> dict[str, dict[str, Any]]:
    """Push `reps`+1 new blobs of `size` to each server (first is warm-up), then pull the
    last one `pull_reps`+1 times (pulls are cheap, so more of them steady the median)."""
    path = blob_dir / f"blob-{size}.bin"
    make_blob_file(path, size)
    pushes, digest = push_rounds(servers, REPO, path, reps, warmup=True)
    os.sync()
    pulls = pull_rounds(servers, REPO, digest, size, pull_reps)
    out: dict[str, dict[str, Any]] = {}
    for server in servers:
        push_s, pull_s = median(pushes[server.name]), median(pulls[server.name])
        out[server.name] = {
            "push_seconds": pushes[server.name],
            "pull_seconds": pulls[server.name],
            "push_median_s": push_s,
            "pull_median_s": pull_s,
            "push_mib_s": size / MiB / push_s,
            "pull_mib_s": size / MiB / pull_s,
        }
    return out


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _grant_pull(client: httpx.Client, namespace: str, user: str) -> None:
    binding = {
        "metadata": {"name": f"{user}-puller"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:image-puller",
        },
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
    }
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    reply = client.post(path, json=binding)
    if reply.status_code not in (201, 409):
        raise RuntimeError(f"rolebinding for {user}: {reply.status_code} {reply.text}")


def bench_manifest(
    servers: list[Server], workdir: Path, duration: int, reps: int, connections: int, threads: int
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for server in servers:
        with server.client() as client:
            push_checked_image(client, server, REPO)
            if server.name == "ours":  # distribution lets any htpasswd user pull
                _grant_pull(client, REPO.split("/")[0], "bench")
    # Ours three times: the token as Bearer; the same token as the Basic
    # password, as docker, podman and containerd send it after `login -p $(ac whoami -t)`;
    # and the htpasswd user's password, as distribution is measured.
    variants = [(server.name, server, server.authorization) for server in servers]
    for server in servers:
        if server.name == "ours":
            token = server.authorization.removeprefix("Bearer ")
            variants.append((BASIC, server, _basic("any", token)))
            variants.append((BASIC_PASSWORD, server, _basic("bench", "bench-password")))
    for name, server, authorization in variants:
        url = f"{server.base_url}/v2/{REPO}/manifests/latest"
        kwargs: dict[str, Any] = {
            "script_dir": workdir,
            "connections": connections,
            "threads": threads,
        }
        run_wrk(url, authorization, duration=3, **kwargs)  # warm-up
        runs: list[WrkResult] = [
            run_wrk(url, authorization, duration=duration, **kwargs) for _ in range(reps)
        ]
        bad = sum(r.non_2xx + r.errors for r in runs)
        if bad:
            # Kept, not fatal: on a loaded machine a few socket timeouts happen; the docs
            # table shows the count next to the figure.
            print(f"  WARNING {name}: {bad} failed requests during wrk", flush=True)
        out[name] = {
            "failed_requests": bad,
            "rps": [r.requests_per_sec for r in runs],
            "rps_median": median([r.requests_per_sec for r in runs]),
            "p50_ms_median": median([r.latency_p50_ms for r in runs]),
            "p99_ms_median": median([r.latency_p99_ms for r in runs]),
        }
        print(f"  manifest GET {name}: {out[name]['rps_median']:.0f} req/s", flush=True)
    return out


# ---------------------------------------------------------------- driver


def run_pair(args: argparse.Namespace, workdir: Path, blob_dir: Path, tls: bool) -> dict[str, Any]:
    label = "tls" if tls else "plain"
    print(f"== {label} ==", flush=True)
    htpasswd = workdir / f"{label}-htpasswd"
    write_htpasswd(htpasswd, "bench", "bench-password", args.bcrypt_cost)
    servers: list[Server] = []
    try:
        if "distribution" in args.servers:
            tls_pair = make_tls(workdir / f"{label}-dist-tls") if tls else None
            servers.append(
                start_distribution(
                    workdir / f"{label}-dist",
                    tls=tls_pair,
                    htpasswd=htpasswd,
                    procs=args.dist_procs,
                )
            )
        if "ours" in args.servers:
            servers.append(
                start_ours(
                    workdir / f"{label}-ours",
                    tls=tls,
                    workers=args.workers,
                    cpu_affinity=args.cpu_affinity,
                    htpasswd=htpasswd,
                )
            )
        result: dict[str, Any] = {"blobs": {}}
        if "manifest" in args.only:
            result["manifest"] = bench_manifest(
                servers, workdir, args.wrk_duration, args.reps, args.connections, args.threads
            )
        if "blobs" in args.only:
            blob_servers = list(servers)
            if not tls and args.blob_port and "ours" in args.servers:
                extra = start_ours(
                    workdir / f"{label}-ours-blobport",
                    tls=tls,
                    workers=args.workers,
                    cpu_affinity=args.cpu_affinity,
                    blob_port=True,
                )
                extra.name = BLOB_PORT
                servers.append(extra)  # stopped with the others
                blob_servers.append(extra)
            for size in args.sizes:
                result["blobs"][str(size)] = bench_blobs(
                    blob_servers, blob_dir, size, args.reps, args.pull_reps
                )
        if "rss" in args.only and (not tls or args.rss_tls):
            rss_servers = list(servers)
            if "ours" in args.servers and args.rss_workers != args.workers:
                # The target is for the server as shipped: also sample the default count.
                extra = start_ours(workdir / f"{label}-ours-rss", tls=tls, workers=args.rss_workers)
                extra.name = f"ours, `--workers {args.rss_workers}`"
                servers.append(extra)  # stopped with the others
                rss_servers.append(extra)
            result["rss"] = push_rss(rss_servers, REPO, blob_dir, args.rss_size)
        return result
    finally:
        for server in servers:
            server.stop()


def ratio(result: dict[str, Any], key: str, ours: str = "ours") -> float | None:
    if ours in result and "distribution" in result:
        return float(result[ours][key]) / float(result["distribution"][key])
    return None


def rows(results: dict[str, Any]) -> list[list[str]]:
    out: list[list[str]] = []

    def add(
        mode: str,
        what: str,
        res: dict[str, Any],
        key: str,
        unit: str,
        target: float,
        ours: str = "ours",
    ) -> None:
        r = ratio(res, key, ours)

        def cell(name: str) -> str:
            if name not in res:
                return "-"
            failed = res[name].get("failed_requests", 0)
            return f"{res[name][key]:,.0f} {unit}" + (f" ({failed} failed)" if failed else "")

        # The targets are for plain HTTP; TLS figures are reported beside them.
        missed = "**missed**" if mode == "plain" else "below (TLS: reported only)"
        verdict = "-" if r is None else ("met" if r >= target else missed)
        out.append(
            [
                mode,
                what,
                cell("distribution"),
                cell(ours),
                "-" if r is None else f"{r:.2f}x",
                f"≥ {target}x",
                verdict,
            ]
        )

    for mode, res in results["pairs"].items():
        if "manifest" in res:
            add(
                mode,
                "manifest GET by tag (auth)",
                res["manifest"],
                "rps_median",
                "req/s",
                TARGETS["manifest"],
            )
            for variant, what in ((BASIC, "Basic token"), (BASIC_PASSWORD, "Basic password")):
                if variant in res["manifest"]:
                    add(
                        mode,
                        f"manifest GET by tag (auth), ours with {what}",
                        res["manifest"],
                        "rps_median",
                        "req/s",
                        TARGETS["manifest"],
                        ours=variant,
                    )
        for size, by_server in sorted(res["blobs"].items(), key=lambda item: int(item[0])):
            add(
                mode,
                f"blob push {human(int(size))}",
                by_server,
                "push_mib_s",
                "MiB/s",
                TARGETS["push"],
            )
            add(
                mode,
                f"blob pull {human(int(size))}",
                by_server,
                "pull_mib_s",
                "MiB/s",
                TARGETS["pull"],
            )
            if BLOB_PORT in by_server:
                add(
                    mode,
                    f"blob pull {human(int(size))}, blob port",
                    by_server,
                    "pull_mib_s",
                    "MiB/s",
                    TARGETS["pull"],
                    ours=BLOB_PORT,
                )
    return out


def rss_rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    workers = results["args"]["workers"]
    for mode, res in results["pairs"].items():
        for name, r in res.get("rss", {}).items():
            verdict = (
                ("met" if r["peak_total_mb"] < RSS_LIMIT_MB else "**missed**")
                if name.startswith("ours")
                else "-"
            )
            label = f"ours, `--workers {workers}`" if name == "ours" else name
            out.append(
                [
                    mode,
                    label,
                    f"{r['baseline_total_mb']:.0f} MB",
                    f"{r['peak_total_mb']:.0f} MB",
                    f"{r['peak_process_mb']:.0f} MB",
                    f"{r.get('peak_pss_mb', 0):.0f} MB",
                    f"{r['push_seconds']:.1f} s",
                    verdict,
                ]
            )
    return out


def _method(a: dict[str, Any]) -> list[str]:
    sizes = ", ".join(human(s) for s in a["sizes"])
    return [
        f"- Workers: ours `--workers {a['workers']}` (Granian, `cpu_affinity: "
        f"{a.get('cpu_affinity', 'off')}`), distribution "
        f"`GOMAXPROCS={a.get('dist_procs', a['workers'])}`; access logs off on both; both on "
        "loopback and on the same disk (ext4).",
        f"- Blobs: {sizes} of random bytes, {a['reps']} pushes and "
        f"{a.get('pull_reps', a['reps'])} pulls after one warm-up each, alternating, median. "
        "A push is POST + one streamed monolithic `curl -T` PUT of a new digest, with `sync` "
        "before each push; ours fsyncs the blob before the commit rename (staging writes use "
        "`O_DIRECT`, the default), distribution does not fsync. A pull is a `curl` GET of the "
        "last pushed blob after one warm-up GET (page cache warm for both). Rows marked "
        '"blob port" pull from a second server of ours with `blob_listen` set (plain HTTP '
        "only): its 307 to the blob port is followed by `curl -L` and counted in the time.",
        f"- Manifest GET by tag: wrk `-t{a['threads']} -c{a['connections']}`, "
        f"{a['wrk_duration']} s x {a['reps']} after a 3 s warm-up, median; distribution with "
        f"htpasswd basic auth (bcrypt cost {a['bcrypt_cost']}, what `htpasswd -B` writes), "
        "ours (also given the htpasswd file) with the admin token as Bearer, the same token as "
        'the Basic password ("Basic token") and the htpasswd user\'s password ("Basic '
        'password"). wrk shares the 2 CPUs with the server.',
    ]


def render(results: dict[str, Any]) -> str:
    m, a = results["machine"], results["args"]
    headers = ["mode", "measurement", "distribution", "ours", "ratio", "target", "verdict"]
    versions = (
        f"{m['distribution']}; Python {m['python']}; "
        f"{m['curl'].split(' (')[0]}; {m['wrk'].split(' [')[0]}"
    )
    rss_headers = [
        "mode",
        "server",
        "idle",
        "peak (sum)",
        "peak (largest)",
        "peak PSS (sum)",
        "push",
        "verdict",
    ]
    parts = [
        "## Data plane versus CNCF distribution",
        "",
        f"- Date: {m['date']}; commit `{m['commit']}`; script `bench/bench_dataplane.py`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}; load average (1/5/15 min) {m['loadavg_start']} at start, "
        f"{m.get('loadavg_end', '?')} at end",
        f"- Versions: {versions}",
        *_method(a),
        "",
        table(headers, rows(results)),
        "",
        f"RSS while receiving a {human(a['rss_size'])} blob (VmRSS summed over the server "
        f"process and its worker children, sampled every 50 ms; target for ours "
        f"< {RSS_LIMIT_MB} MB):",
        "",
        table(rss_headers, rss_rows(results)),
    ]
    if results.get("notes"):
        parts += ["", *results["notes"]]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="plain,tls", help="plain,tls")
    parser.add_argument("--servers", default="distribution,ours")
    parser.add_argument("--only", default="manifest,blobs,rss", help="manifest,blobs,rss")
    parser.add_argument("--sizes", default="256M,1G")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pull-reps", type=int, default=15, help="blob pulls per size")
    parser.add_argument("--rss-size", default="2G")
    parser.add_argument("--rss-tls", action="store_true", help="also sample RSS in TLS mode")
    parser.add_argument("--workers", type=int, default=1, help="ours (default: ours' default)")
    parser.add_argument(
        "--dist-procs",
        type=int,
        default=os.cpu_count() or 1,
        help="distribution's GOMAXPROCS (default: its own default, every CPU)",
    )
    parser.add_argument(
        "--cpu-affinity", default="off", choices=("auto", "on", "off"), help="ours' setting"
    )
    parser.add_argument(
        "--rss-workers", type=int, default=2, help="also sample RSS of ours with this many"
    )
    parser.add_argument(
        "--no-blob-port",
        dest="blob_port",
        action="store_false",
        help="skip the plain-HTTP pulls through a second server of ours with `blob_listen`",
    )
    add_client_options(parser)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, few reps (harness check)"
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    if rendered_saved(args, render, "dataplane"):
        return 0
    if args.quick:
        args.sizes, args.reps, args.rss_size, args.wrk_duration = "32M", 2, "256M", 3
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.rss_size = parse_size(args.rss_size)
    args.servers = args.servers.split(",")
    args.only = args.only.split(",")
    results: dict[str, Any] = {
        "machine": machine_info(),
        "args": {k: v for k, v in vars(args).items() if k not in ("workdir",)},
        "pairs": {},
        "notes": args.note,
    }
    with scratch(args.keep, args.workdir) as workdir:
        blob_dir = workdir / "blobs"
        blob_dir.mkdir()
        for mode in args.modes.split(","):
            try:
                results["pairs"][mode] = run_pair(args, workdir, blob_dir, tls=(mode == "tls"))
            except (RuntimeError, OSError) as exc:  # keep the other mode's figures
                print(f"  {mode} failed: {exc}", flush=True)
                results["notes"].append(f"- The {mode} pair failed: {exc}")
    results["machine"]["loadavg_end"] = loadavg()
    path = save_result("dataplane", results)
    print()
    print(render(results))
    print(f"\nresult: {path}")
    if args.write_docs:
        write_doc_section("dataplane", render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
