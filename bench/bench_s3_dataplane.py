"""Data plane on object storage: Registry v2 versus CNCF distribution 2.8, same S3 server.

Each S3 server (OpenStack Swift with s3api, a real S3 implementation from Debian; moto in
server mode, an emulator) is started on loopback by `tests/support/s3servers.py`, with a
bucket for each registry. Both registries run in front of it twice:

- **redirect**: whole-blob GETs answer with a redirect to a presigned URL of the object
  store (ours `storage_s3: {redirect: true}`, the default, 307; distribution
  `storage: redirect: disable: false`, also its default), and `curl -L` follows it;
- **proxy**: the registry streams the bytes itself (ours `redirect: false`, distribution
  `redirect: disable: true`);
- **relay**: as *proxy*, with ours' blob port on (`blob_listen`): ours answers 307 to its
  blob port, which fetches the object and passes it on (`blobport/relay.py`), and
  `curl -L` follows; distribution as in *proxy*.

Measured with the clients of `bench_dataplane.py` (curl for blobs, wrk for manifests):
blob push (POST + one streamed monolithic PUT; a push never depends on the redirect
setting, so it is measured once, in the first phase), blob pull, manifest GET by tag with
authentication (distribution htpasswd, ours the admin bearer token), and the peak RSS of
our server while it receives a 2 GiB blob. Repetitions alternate the two servers;
figures are medians, with the spread (min-max) beside them.

    .venv/bin/python bench/bench_s3_dataplane.py [--quick] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    MiB,
    Server,
    add_client_options,
    add_report_options,
    human,
    loadavg,
    machine_info,
    make_blob_file,
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
from tests.support.s3servers import S3Server, create_bucket  # noqa: E402

from imageregistry.storage.s3config import S3Settings  # noqa: E402

REPO = "bench/app"
TARGETS = {"push": 1.5, "pull": 1.0, "manifest": 5.0}
RSS_LIMIT_MB = 200
MODES = ("redirect", "proxy", "relay")
DOC_SECTION = "s3-dataplane"


@contextmanager
def s3_server(kind: str) -> Iterator[S3Server]:
    from tests.support.s3servers import moto_server, swift_server

    with swift_server() if kind == "swift" else moto_server() as server:
        yield server


# ---------------------------------------------------------------- servers


def start_pair(
    args: argparse.Namespace, workdir: Path, s3: S3Server, mode: str
) -> tuple[Server, Server]:
    """Distribution and ours in front of `s3`, each on a bucket of its own; a second
    call with the other mode reuses the same buckets and data dirs (the pushed blobs)."""
    redirect = mode == "redirect"
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    if not htpasswd.exists():
        write_htpasswd(htpasswd, "bench", "bench-password", args.bcrypt_cost)
    storage: dict[str, Any] = {
        "s3": {
            "accesskey": s3.access_key,
            "secretkey": s3.secret_key,
            "region": s3.region,
            # 2.8 switches to path-style addressing when regionendpoint is set.
            "regionendpoint": s3.endpoint,
            "bucket": "dist",
            "secure": s3.endpoint.startswith("https://"),
            "v4auth": True,
            "rootdirectory": "/registry",
        },
        "delete": {"enabled": True},
        "redirect": {"disable": not redirect},
    }
    if args.dist_chunk_size:
        storage["s3"]["chunksize"] = args.dist_chunk_size
    dist = start_distribution(
        workdir / "dist", tls=None, htpasswd=htpasswd, procs=args.dist_procs, storage=storage
    )
    block: dict[str, Any] = {"redirect": redirect}
    if args.timeout_seconds:
        block["timeout_seconds"] = args.timeout_seconds
    if args.part_size:
        block["part_size"] = args.part_size
    try:
        ours = start_ours(
            workdir / "ours",
            tls=False,
            workers=args.workers,
            htpasswd=htpasswd,
            extra_args=["--storage", "s3://ours/registry"],
            blob_port=mode == "relay",
            env={**s3.env(), "IMAGE_REGISTRY_STORAGE_S3": json.dumps(block)},
        )
    except BaseException:
        dist.stop()
        raise
    return dist, ours


# ---------------------------------------------------------------- measurements


def spread(values: list[float]) -> dict[str, Any]:
    return {"values": values, "median": median(values), "min": min(values), "max": max(values)}


def bench_push(
    servers: list[Server], blob_dir: Path, size: int, reps: int, warmup: bool
) -> tuple[dict[str, Any], str]:
    """`reps` pushes of a new digest of `size` to each server, alternating; returns the
    timings and the last digest (pulled afterwards)."""
    path = blob_dir / f"blob-{size}.bin"
    make_blob_file(path, size)
    seconds, digest = push_rounds(servers, REPO, path, reps, warmup=warmup)
    out = {
        name: {"seconds": spread(values), "mib_s": size / MiB / median(values)}
        for name, values in seconds.items()
    }
    return out, digest


def bench_pull(servers: list[Server], digest: str, size: int, reps: int) -> dict[str, Any]:
    """One untimed GET each, then `reps` timed GETs following the redirect, alternating."""
    seconds = pull_rounds(servers, REPO, digest, size, reps)
    line = ", ".join(f"{name} {median(v):.2f}s" for name, v in seconds.items())
    print(f"  pull {human(size)}: {line}", flush=True)
    return {
        name: {"seconds": spread(values), "mib_s": size / MiB / median(values)}
        for name, values in seconds.items()
    }


def prepare_manifest(servers: list[Server]) -> None:
    for server in servers:
        with server.client() as client:
            push_checked_image(client, server, REPO)


def bench_manifest(
    servers: list[Server], workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "script_dir": workdir,
        "connections": args.connections,
        "threads": args.threads,
    }
    rps: dict[str, list[float]] = {s.name: [] for s in servers}
    failed: dict[str, int] = {s.name: 0 for s in servers}
    p50: dict[str, list[float]] = {s.name: [] for s in servers}
    for server in servers:
        url = f"{server.base_url}/v2/{REPO}/manifests/latest"
        run_wrk(url, server.authorization, duration=3, **kwargs)  # warm-up
    for i in range(args.manifest_reps):
        order = servers if i % 2 == 0 else list(reversed(servers))
        for server in order:
            url = f"{server.base_url}/v2/{REPO}/manifests/latest"
            result = run_wrk(url, server.authorization, duration=args.wrk_duration, **kwargs)
            rps[server.name].append(result.requests_per_sec)
            p50[server.name].append(result.latency_p50_ms)
            failed[server.name] += result.non_2xx + result.errors
    line = ", ".join(f"{name} {median(v):.0f} req/s" for name, v in rps.items())
    print(f"  manifest GET: {line}", flush=True)
    return {
        name: {
            "rps": spread(values),
            "p50_ms": median(p50[name]),
            "failed_requests": failed[name],
        }
        for name, values in rps.items()
    }


# ---------------------------------------------------------------- one S3 server


def run_s3(
    args: argparse.Namespace, kind: str, workdir: Path, blob_dir: Path, result: dict[str, Any]
) -> None:
    """Fill `result` as measurements finish (a failure keeps what was measured before)."""
    print(f"== {kind} ==", flush=True)
    result.update({"push": {}, "modes": {}, "failures": []})
    with s3_server(kind) as s3:
        for bucket in ("dist", "ours"):
            create_bucket(s3, bucket)
        digests: dict[int, str] = {}
        for mode in args.modes:
            print(f"-- {kind}, {mode} --", flush=True)
            dist, ours = start_pair(args, workdir / kind, s3, mode)
            servers = [dist, ours]
            phase: dict[str, Any] = {"pull": {}}
            result["modes"][mode] = phase
            try:
                if not digests:  # pushes: once, in the first phase
                    for index, size in enumerate(args.sizes):
                        reps = args.reps if size <= 256 * MiB else args.big_reps
                        result["push"][str(size)], digests[size] = bench_push(
                            servers, blob_dir, size, reps, warmup=index == 0
                        )
                    prepare_manifest(servers)
                    if "rss" in args.only:
                        rss_servers = servers if "distribution" in args.rss_servers else [ours]
                        try:
                            result["rss"] = push_rss(rss_servers, REPO, blob_dir, args.rss_size)
                        except RuntimeError as exc:  # reported, and the pulls still run
                            print(f"  RSS push failed: {exc}", flush=True)
                            result["failures"].append(
                                f"{human(args.rss_size)} push (RSS sample): {exc}"
                            )
                for size, digest in digests.items():
                    phase["pull"][str(size)] = bench_pull(servers, digest, size, args.pull_reps)
                if "manifest" in args.only:
                    phase["manifest"] = bench_manifest(servers, workdir, args)
            finally:
                for server in servers:
                    server.stop()


# ---------------------------------------------------------------- report


def _cell(entry: dict[str, Any], key: str, unit: str, size: int | None = None) -> str:
    """Median rate with the spread of the repetitions (as rates, slowest-fastest)."""
    if key == "rps":
        s = entry["rps"]
        text = f"{s['median']:,.0f} {unit} ({s['min']:,.0f}-{s['max']:,.0f})"
        return text + (f", {entry['failed_requests']} failed" if entry["failed_requests"] else "")
    s = entry["seconds"]
    assert size is not None
    slow, fast = size / MiB / s["max"], size / MiB / s["min"]
    return f"{entry['mib_s']:,.0f} {unit} ({slow:,.0f}-{fast:,.0f})"


def _row(
    what: str, res: dict[str, Any], key: str, target: float, size: int | None
) -> list[str] | None:
    if "ours" not in res or "distribution" not in res:
        return None
    unit = "req/s" if key == "rps" else "MiB/s"

    def value(entry: dict[str, Any]) -> float:
        return float(entry["rps"]["median"] if key == "rps" else entry["mib_s"])

    base = value(res["distribution"])
    # A wrk run in which distribution completed no request has no finite ratio.
    ratio = value(res["ours"]) / base if base else float("inf")
    verdict = "met" if ratio >= target else "**missed**"
    return [
        what,
        _cell(res["distribution"], key, unit, size),
        _cell(res["ours"], key, unit, size),
        f"{ratio:.2f}x" if base else "∞ (none completed)",
        f"≥ {target}x",
        verdict,
    ]


def rows(result: dict[str, Any]) -> list[list[str]]:
    out: list[list[str] | None] = []
    for size, res in sorted(result["push"].items(), key=lambda item: int(item[0])):
        out.append(_row(f"blob push {human(int(size))}", res, "mib_s", TARGETS["push"], int(size)))
    for mode in [m for m in MODES if m in result["modes"]]:
        phase = result["modes"][mode]
        for size, res in sorted(phase["pull"].items(), key=lambda item: int(item[0])):
            what = f"blob pull {human(int(size))}, {mode}"
            out.append(_row(what, res, "mib_s", TARGETS["pull"], int(size)))
        if "manifest" in phase:
            what = f"manifest GET by tag (auth), {mode}"
            out.append(_row(what, phase["manifest"], "rps", TARGETS["manifest"], None))
    return [row for row in out if row is not None]


def rss_rows(result: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, r in result.get("rss", {}).items():
        verdict = "met" if r["peak_total_mb"] < RSS_LIMIT_MB else "**missed**"
        out.append(
            [
                name,
                f"{r['baseline_total_mb']:.0f} MB",
                f"{r['peak_total_mb']:.0f} MB",
                f"{r['peak_process_mb']:.0f} MB",
                f"{r['push_seconds']:.0f} s",
                verdict if name == "ours" else "-",
            ]
        )
    return out


def render(results: dict[str, Any]) -> str:
    m, a = results["machine"], results["args"]
    sizes = ", ".join(human(s) for s in a["sizes"])
    parts = [
        "## Data plane on object storage versus CNCF distribution",
        "",
        f"- Date: {m['date']}; commit `{m['commit']}`; script `bench/bench_s3_dataplane.py`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux "
        f"{m['kernel']}; **shared with other engineers' test runs**: load average "
        f"(1/5/15 min) {m['loadavg_start']} at start, {m.get('loadavg_end', '?')} at end",
        f"- Versions: {m['distribution']}; Python {m['python']}; "
        f"{m['curl'].split(' (')[0]}; {m['wrk'].split(' [')[0]}",
        "- S3 servers on loopback, started by `tests/support/s3servers.py`: OpenStack Swift "
        "(Debian) with its s3api middleware, a real S3 implementation, one proxy and one "
        "account/container/object server each (`workers = 0`, single processes); moto in "
        "server mode, an emulator (objects in Python memory/temp files). Each registry has "
        "a bucket of its own on the same server.",
        f"- Ours: `--workers {a['workers']}`, `--storage s3://ours/registry`, part size "
        f"{(a['part_size'] or S3Settings.part_size) // MiB} MiB (one part in flight per upload), "
        + (
            f"`timeout_seconds: {a['timeout_seconds']}`; "
            if a.get("timeout_seconds")
            else "requests moving a whole blob waited up to 30 min (the driver of that run); "
        )
        + f"distribution: `GOMAXPROCS={a['dist_procs']}`, its `s3` driver with `regionendpoint` "
        "(path-style), `v4auth: true`, `secure: false`, chunk size "
        f"{(a['dist_chunk_size'] or 10 * MiB) // MiB} MiB (its default). Access logs off.",
        f"- Blob push: {sizes} of random bytes, POST + one streamed monolithic `curl -T` PUT "
        f"of a new digest, `sync` before each; {a['reps']} repetitions at 256 MiB after one "
        f"warm-up, {a['big_reps']} at larger sizes; the servers alternate. Pushes do not "
        "depend on the redirect setting and are measured once.",
        f"- Blob pull: `curl -L` GET of the last pushed blob, one untimed GET then "
        f"{a['pull_reps']} timed, alternating; *redirect* = both answer with a presigned "
        "URL of the S3 server (ours 307, distribution 307) that curl follows (the time "
        "includes the redirect); *proxy* = ours `storage_s3: {redirect: false}`, "
        "distribution `storage: redirect: disable: true`, the registry streams the bytes; "
        "*relay* = the same with ours' blob port on (`blob_listen`): ours answers 307 to "
        "its blob port, which fetches the object from the S3 server and passes it on "
        "(curl follows; the time includes the redirect).",
        f"- Manifest GET by tag: wrk `-t{a['threads']} -c{a['connections']}`, "
        f"{a['wrk_duration']} s x {a['manifest_reps']} after a 3 s warm-up; distribution with "
        f"htpasswd basic auth (bcrypt cost {a['bcrypt_cost']}), ours with the admin token as "
        "Bearer. Distribution reads the tag link and the manifest from the bucket; ours "
        "serves manifests from its database.",
        "- Cells: median rate (slowest-fastest repetition).",
    ]
    headers = ["measurement", "distribution", "ours", "ratio", "target", "verdict"]
    rss_headers = ["server", "idle", "peak (sum)", "peak (largest process)", "push", "verdict"]
    for kind, result in results["s3"].items():
        title = "Swift s3api" if kind == "swift" else "moto (emulator)"
        parts += ["", f"### {title}", "", table(headers, rows(result))]
        for failure in result.get("failures", []):
            parts += ["", f"**Failed**: {failure}"]
        if result.get("rss"):
            parts += [
                "",
                f"RSS while receiving a {human(a['rss_size'])} blob (VmRSS of the server "
                "process and its worker children, sampled every 50 ms; target for ours "
                f"< {RSS_LIMIT_MB} MB):",
                "",
                table(rss_headers, rss_rows(result)),
            ]
    if results.get("notes"):
        parts += ["", *results["notes"]]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--s3", default="swift,moto", help="swift,moto")
    parser.add_argument("--modes", default=",".join(MODES), help="redirect,proxy,relay")
    parser.add_argument("--only", default="manifest,rss", help="extras: manifest,rss")
    parser.add_argument("--sizes", default="256M,1G")
    parser.add_argument("--reps", type=int, default=3, help="pushes at 256 MiB")
    parser.add_argument("--big-reps", type=int, default=3, help="pushes above 256 MiB")
    parser.add_argument("--pull-reps", type=int, default=3)
    parser.add_argument("--manifest-reps", type=int, default=3)
    parser.add_argument("--rss-size", default="2G")
    parser.add_argument(
        "--rss-servers", default="ours", help="ours or ours,distribution (the latter for context)"
    )
    parser.add_argument("--workers", type=int, default=1, help="ours (default: ours' default)")
    parser.add_argument("--dist-procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--part-size", type=int, default=0, help="ours, bytes (0: default)")
    parser.add_argument("--dist-chunk-size", type=int, default=0, help="bytes (0: default)")
    parser.add_argument(
        "--timeout-seconds",
        type=int,
        default=600,
        help="ours' storage_s3.timeout_seconds (0: its default, 30 s; a 1 GiB multipart "
        "completion on a loaded moto takes longer)",
    )
    add_client_options(parser)
    parser.add_argument("--quick", action="store_true", help="small sizes (harness check)")
    add_report_options(parser)
    args = parser.parse_args(argv)
    if rendered_saved(args, render, DOC_SECTION):
        return 0
    if args.quick:
        args.sizes, args.reps, args.big_reps, args.pull_reps = "16M,32M", 1, 1, 1
        args.rss_size, args.wrk_duration, args.manifest_reps = "64M", 2, 1
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.rss_size = parse_size(args.rss_size)
    args.modes = args.modes.split(",")
    args.only = args.only.split(",")
    args.rss_servers = args.rss_servers.split(",")
    results: dict[str, Any] = {
        "machine": machine_info(),
        "args": {k: v for k, v in vars(args).items() if k not in ("workdir", "from_json")},
        "s3": {},
        "notes": args.note,
    }
    # The S3 servers are plain HTTP on loopback; distribution's AWS SDK refuses to start
    # when AWS_CA_BUNDLE is set (its HTTP transport cannot take a custom bundle).
    os.environ.pop("AWS_CA_BUNDLE", None)
    started = time.monotonic()
    with scratch(args.keep, args.workdir) as workdir:
        blob_dir = workdir / "blobs"
        blob_dir.mkdir()
        for kind in args.s3.split(","):
            results["s3"][kind] = {}
            try:
                run_s3(args, kind, workdir, blob_dir, results["s3"][kind])
            except (RuntimeError, OSError) as exc:  # keep the figures measured so far
                print(f"  {kind} failed: {exc}", flush=True)
                results["s3"][kind]["failures"].append(f"stopped: {exc}")
    results["machine"]["loadavg_end"] = loadavg()
    results["elapsed_s"] = time.monotonic() - started
    path = save_result("s3-dataplane", results)
    print()
    print(render(results))
    print(f"\nresult: {path}")
    if args.write_docs:
        write_doc_section(DOC_SECTION, render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
