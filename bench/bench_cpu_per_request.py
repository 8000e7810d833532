"""Server CPU time per manifest GET by tag, for servers built from different trees.

Throughput on a shared 2-CPU machine swings by more than the cost of a few microseconds
per request (the metrics' cost must stay within 10 %), so this measures what the server itself
spends: the user + system CPU of the server's processes (supervisor and workers, from
/proc) divided by the requests wrk completed, over the same wrk run as
`bench_dataplane.py --only manifest` (plain HTTP, one worker, Bearer token). Sides
alternate (A B A B ...), each run on a fresh server.

    .venv/bin/python bench/bench_cpu_per_request.py --side base=OTHER/.venv/bin/image-registry \\
        --side new=.venv/bin/image-registry --rounds 3

`--side-env NAME=KEY=VALUE` sets an environment variable for one side's server (e.g.
`PYTHONPATH=OTHER/src` runs another tree with this venv); `--audit-side NAME` turns the
audit log on for that side, at `Metadata` for every request (`--audit-stages` `complete`:
one line per request, the policy omitting `RequestReceived`; `both`: two).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import WRK_SCRIPT, loadavg, median, process_tree, push_image, scratch, start_ours

REPO = "bench/app"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    total = 0
    for child in process_tree(pid):
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def wrk(url: str, authorization: str, script: Path, duration: int) -> tuple[int, float]:
    """(requests completed, requests per second)."""
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_AUTHORIZATION": authorization},
        check=True,
    ).stdout
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return done, rps


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
{omit}rules:
  - level: Metadata
"""


def audit_env(workdir: Path, stages: str) -> dict[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    omit = "omitStages: [RequestReceived]\n" if stages == "complete" else ""
    policy.write_text(AUDIT_POLICY.format(omit=omit))
    return {
        "IMAGE_REGISTRY_AUDIT_LOG_PATH": str(workdir / "audit.log"),
        "IMAGE_REGISTRY_AUDIT_POLICY_FILE": str(policy),
    }


def measure(binary: Path, workdir: Path, duration: int, env: dict[str, str]) -> tuple[float, float]:
    common.OUR_BINARY = binary
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        server = start_ours(workdir, tls=False, workers=1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        _done, rps, cpu_us = manifest_gets(server, workdir, duration, warmup=True)
        return cpu_us, rps
    finally:
        server.stop()


def manifest_gets(
    server: common.Server, workdir: Path, duration: int, *, warmup: bool
) -> tuple[int, float, float]:
    """Push a small image to `server`, then `duration` seconds of wrk GETs of its manifest
    by tag (after 3 untimed seconds when `warmup`): the requests completed, requests per
    second and the server's CPU microseconds per request."""
    with server.client() as client:
        push_image(client, server, REPO, "latest")
    script = workdir / "get.lua"
    script.write_text(WRK_SCRIPT.replace("{accept}", common.OCI_MANIFEST))
    url = f"{server.base_url}/v2/{REPO}/manifests/latest"
    if warmup:
        wrk(url, server.authorization, script, 3)
    before = cpu_seconds(server.pid)
    done, rps = wrk(url, server.authorization, script, duration)
    return done, rps, (cpu_seconds(server.pid) - before) / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", action="append", required=True, help="NAME=BINARY")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--side-env", action="append", default=[], help="NAME=KEY=VALUE")
    parser.add_argument("--audit-side", action="append", default=[], help="NAME")
    parser.add_argument("--audit-stages", choices=("complete", "both"), default="complete")
    args = parser.parse_args()
    sides = [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in args.side]
    side_env: dict[str, dict[str, str]] = {name: {} for name, _ in sides}
    for spec in args.side_env:
        name, key, value = spec.split("=", 2)
        side_env[name][key] = value
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in sides}
    print(f"load average at start: {loadavg()}", flush=True)
    with scratch(False) as root:
        for round_ in range(args.rounds):
            for name, binary in sides:
                workdir = root / f"{name}-{round_}"
                env = dict(side_env[name])
                if name in args.audit_side:
                    env.update(audit_env(workdir, args.audit_stages))
                cpu, rps = measure(binary, workdir, args.duration, env)
                if name in args.audit_side:
                    # every file of the log, rotated ones included
                    logs = workdir.glob("audit*.log*")
                    lines = sum(log.read_bytes().count(b"\n") for log in logs)
                    print(f"{name} round {round_ + 1}: {lines} audit lines", flush=True)
                results[name].append((cpu, rps))
                print(
                    f"{name} round {round_ + 1}: {cpu:.1f} us CPU/request, {rps:,.0f} req/s,"
                    f" load {loadavg()}",
                    flush=True,
                )
    print(f"load average at the end: {loadavg()}")
    for name, runs in results.items():
        each = ", ".join(f"{c:.1f}" for c, _ in runs)
        print(
            f"{name}: median {median([c for c, _ in runs]):.1f} us CPU/request ({each}),"
            f" median {median([r for _, r in runs]):,.0f} req/s"
        )


if __name__ == "__main__":
    main()
