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

`--pin` (the default on two CPUs or more; `--no-pin` to turn it off) puts every thread of
the server on the last CPU and wrk on the others, so the two never compete for a CPU and
the server's threads hand requests to each other on one CPU. Unpinned, the same tree's
runs spread by 20-30 % on the 2-CPU benchmark machine even when it is otherwise idle
(where the scheduler puts the server's threads decides much of a run's cost); pinned,
by 2-5 % (docs/benchmarks.md, "Metrics on the manifest GET").
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import WRK_SCRIPT, loadavg, median, process_tree, push_image, scratch, start_ours

REPO = "bench/app"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the server's processes."""
    user = system = 0
    for child in process_tree(pid):
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / TICKS, system / TICKS


def pin_server(pid: int, cpus: set[int]) -> None:
    """Every thread of the server's processes on `cpus` (threads started later inherit it)."""
    for child in process_tree(pid):
        for task in Path(f"/proc/{child}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:  # the thread ended meanwhile
                continue


CLIENT_CPUS: set[int] | None = None  # where wrk runs when pinned
SERVER_CPUS: set[int] | None = None  # ... and the server


def wrk(url: str, authorization: str, script: Path, duration: int) -> tuple[int, float]:
    """(requests completed, requests per second)."""
    cpus = CLIENT_CPUS
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_AUTHORIZATION": authorization},
        check=True,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
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


class Gets(NamedTuple):
    """One timed wrk run of manifest GETs: requests completed, requests per second, and
    the server's user and system CPU microseconds per request."""

    done: int
    rps: float
    user_us: float
    system_us: float

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.system_us


def measure(binary: Path, workdir: Path, duration: int, env: dict[str, str]) -> Gets:
    common.OUR_BINARY = binary
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        server = start_ours(workdir, tls=False, workers=1)
        if SERVER_CPUS is not None:
            pin_server(server.pid, SERVER_CPUS)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        return manifest_gets(server, workdir, duration, warmup=True)
    finally:
        server.stop()


def manifest_gets(server: common.Server, workdir: Path, duration: int, *, warmup: bool) -> Gets:
    """Push a small image to `server`, then `duration` seconds of wrk GETs of its manifest
    by tag (after 3 untimed seconds when `warmup`)."""
    with server.client() as client:
        push_image(client, server, REPO, "latest")
    script = workdir / "get.lua"
    script.write_text(WRK_SCRIPT.replace("{accept}", common.OCI_MANIFEST))
    url = f"{server.base_url}/v2/{REPO}/manifests/latest"
    if warmup:
        wrk(url, server.authorization, script, 3)
    user, system = cpu_split(server.pid)
    done, rps = wrk(url, server.authorization, script, duration)
    user_after, system_after = cpu_split(server.pid)
    return Gets(done, rps, (user_after - user) / done * 1e6, (system_after - system) / done * 1e6)


def main() -> None:
    global CLIENT_CPUS, SERVER_CPUS
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", action="append", required=True, help="NAME=BINARY")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--side-env", action="append", default=[], help="NAME=KEY=VALUE")
    parser.add_argument("--audit-side", action="append", default=[], help="NAME")
    parser.add_argument("--audit-stages", choices=("complete", "both"), default="complete")
    cpus = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(cpus) >= 2,
        help="server on the last CPU, wrk on the others (default: on with 2 CPUs or more)",
    )
    args = parser.parse_args()
    if args.pin:
        SERVER_CPUS, CLIENT_CPUS = {cpus[-1]}, set(cpus[:-1])
    sides = [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in args.side]
    side_env: dict[str, dict[str, str]] = {name: {} for name, _ in sides}
    for spec in args.side_env:
        name, key, value = spec.split("=", 2)
        side_env[name][key] = value
    results: dict[str, list[Gets]] = {name: [] for name, _ in sides}
    pinning = f"server on CPU {SERVER_CPUS}, wrk on {CLIENT_CPUS}" if args.pin else "unpinned"
    print(f"load average at start: {loadavg()}; {pinning}", flush=True)
    with scratch(False) as root:
        for round_ in range(args.rounds):
            for name, binary in sides:
                workdir = root / f"{name}-{round_}"
                env = dict(side_env[name])
                if name in args.audit_side:
                    env.update(audit_env(workdir, args.audit_stages))
                run = measure(binary, workdir, args.duration, env)
                if name in args.audit_side:
                    # every file of the log, rotated ones included
                    logs = workdir.glob("audit*.log*")
                    lines = sum(log.read_bytes().count(b"\n") for log in logs)
                    print(f"{name} round {round_ + 1}: {lines} audit lines", flush=True)
                results[name].append(run)
                print(
                    f"{name} round {round_ + 1}: {run.cpu_us:.1f} us CPU/request (user"
                    f" {run.user_us:.1f}, system {run.system_us:.1f}), {run.rps:,.0f} req/s,"
                    f" load {loadavg()}",
                    flush=True,
                )
    print(f"load average at the end: {loadavg()}")
    for name, runs in results.items():
        each = ", ".join(f"{run.cpu_us:.1f}" for run in runs)
        print(
            f"{name}: median {median([r.cpu_us for r in runs]):.1f} us CPU/request ({each}),"
            f" user {median([r.user_us for r in runs]):.1f},"
            f" system {median([r.system_us for r in runs]):.1f},"
            f" median {median([r.rps for r in runs]):,.0f} req/s"
        )


if __name__ == "__main__":
    main()
