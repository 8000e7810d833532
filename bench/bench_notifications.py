"""Event notifications: what a pull event costs the server, and how fast the outbox drains.

For each side (notifications off, then on with one endpoint that wants pulls), a fresh
server (plain HTTP, one worker) answers `wrk` manifest GETs by tag for `--duration`
seconds; the server's CPU per request is measured as in `bench_cpu_per_request.py`. With
notifications on, every GET is a pull event; the script then waits until the loopback
receiver (this process, `tests/support/receiver.py`) has every one and reports the
delivery rate of that one repository's queue (events are sent one per request, one
after the other, as distribution sends them).

    .venv/bin/python bench/bench_notifications.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cpu_per_request import manifest_gets
from common import loadavg, median, scratch, start_ours
from tests.support.receiver import Receiver

NOTIFY_ENV = "IMAGE_REGISTRY_NOTIFICATIONS"


def measure(workdir: Path, duration: int, receiver: Receiver | None) -> dict[str, float]:
    path = f"/{workdir.name}"
    if receiver is not None:
        block = {"endpoints": [{"name": "bench", "url": receiver.url(path)}]}
        os.environ[NOTIFY_ENV] = json.dumps(block)  # start_ours passes the environment on
    try:
        server = start_ours(workdir, tls=False, workers=1)
    finally:
        os.environ.pop(NOTIFY_ENV, None)
    try:
        # No warm-up: every GET is a pull event the receiver must see.
        gets = manifest_gets(server, workdir, duration, warmup=False)
        done = gets.done
        result = {"cpu_us": gets.cpu_us, "rps": gets.rps}
        if receiver is None:
            return result
        ended = time.monotonic()
        deadline = ended + 600
        while True:
            pulls = sum(1 for e in receiver.events(path) if e["action"] == "pull")
            if pulls >= done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        drained = time.monotonic() - ended
        result["events_per_s"] = pulls / (duration + drained)
        result["drain_s"] = drained
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    receiver = Receiver().start()
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        with scratch(False) as root:
            for round_ in range(args.rounds):
                for side in ("off", "on"):
                    got = measure(
                        root / f"{side}-{round_}",
                        args.duration,
                        receiver if side == "on" else None,
                    )
                    results[side].append(got)
                    print(f"{side} round {round_ + 1}: {got}, load {loadavg()}", flush=True)
    finally:
        receiver.stop()
    for side, runs in results.items():
        keys = runs[0].keys()
        print(side, {k: round(median([r[k] for r in runs]), 1) for k in keys})


if __name__ == "__main__":
    main()
