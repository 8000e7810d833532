"""Shared helpers for the benchmark scripts: servers, clients, measurement and reporting.

Both registries run as child processes bound to 127.0.0.1 in a scratch directory and are
stopped by PID when a benchmark ends. Large transfers go through `curl` and request-rate
runs through `wrk`, so the two servers see byte-for-byte the same clients; Python only
prepares data, starts and stops processes and parses the tools' output. Nothing here is
imported by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
OUR_BINARY = ROOT / ".venv" / "bin" / "image-registry"
DISTRIBUTION_BINARY = Path("/usr/bin/docker-registry")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MiB = 1024 * 1024


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A registry child process and how a client reaches it."""

    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    authorization: str  # full Authorization header value ("" = none)
    cacert: Path | None = None
    data_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def client(self) -> httpx.Client:
        verify: Any = str(self.cacert) if self.cacert else True
        headers = {"Authorization": self.authorization} if self.authorization else {}
        return httpx.Client(base_url=self.base_url, verify=verify, headers=headers, timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        # The server runs in its own session; signal its group so Granian workers go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _spawn(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        list(argv),
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def wait_ready(server: Server, path: str, ok: Sequence[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    verify: Any = str(server.cacert) if server.cacert else True
    last = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited early (code {server.proc.returncode})")
        try:
            resp = httpx.get(server.base_url + path, verify=verify, timeout=2)
            if resp.status_code in ok:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout}s: {last}")


@dataclass(frozen=True)
class TlsPair:
    cert: Path
    key: Path
    ca: Path


def make_tls(directory: Path) -> TlsPair:
    """A CA-signed loopback certificate for the distribution registry (our own PKI code)."""
    from imageregistry.pki import ensure_tls

    files = ensure_tls(directory, ["127.0.0.1", "localhost"])
    return TlsPair(files.cert, files.key, files.ca_cert)


def write_htpasswd(path: Path, user: str, password: str, cost: int) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    path.write_text(f"{user}:{hashed}\n")


def start_distribution(
    workdir: Path,
    *,
    tls: TlsPair | None,
    htpasswd: Path | None,
    procs: int,
    storage: dict[str, Any] | None = None,
) -> Server:
    """CNCF distribution, by default with the filesystem driver (`storage` replaces the
    whole `storage:` section); access logs off like ours."""
    import base64

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "bench"}
    if tls:
        http["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": storage
        or {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
        },
        "http": http,
    }
    authorization = ""
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "bench", "path": str(htpasswd)}}
        authorization = "Basic " + base64.b64encode(b"bench:bench-password").decode()
    cfg = workdir / "config.yml"
    cfg.write_text(yaml.safe_dump(config))
    # An inherited AWS_CA_BUNDLE makes 2.8's s3 driver panic at start (its SDK cannot add a
    # CA to the driver's own HTTP transport); the S3 servers benched here are plain HTTP.
    proc = _spawn(
        [str(DISTRIBUTION_BINARY), "serve", str(cfg)],
        workdir / "server.log",
        {"GOMAXPROCS": str(procs), "AWS_CA_BUNDLE": ""},
    )
    scheme = "https" if tls else "http"
    server = Server(
        "distribution",
        proc,
        f"{scheme}://127.0.0.1:{port}",
        authorization,
        tls.ca if tls else None,
        workdir,
    )
    wait_ready(server, "/v2/", ok=(200, 401))
    return server


def start_ours(
    workdir: Path,
    *,
    tls: bool,
    workers: int,
    fsync: bool = True,
    cpu_affinity: str = "auto",
    blob_port: bool = False,
    htpasswd: Path | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Server:
    """Ours on a free loopback port; `extra_args` and `env` are added to its command line
    and environment (e.g. `--storage s3://...` and the AWS variables)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(OUR_BINARY),
        "serve",
        "--data-dir",
        str(workdir / "data"),
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    if not tls:
        argv.append("--plain-http")
    if htpasswd is not None:
        argv += ["--htpasswd-file", str(htpasswd)]
    argv += list(extra_args)
    child_env = {
        "IMAGE_REGISTRY_BLOB_FSYNC": "true" if fsync else "false",
        "IMAGE_REGISTRY_CPU_AFFINITY": cpu_affinity,
        **(env or {}),
    }
    if blob_port:
        child_env["IMAGE_REGISTRY_BLOB_LISTEN"] = f"127.0.0.1:{free_port()}"
    proc = _spawn(argv, workdir / "server.log", child_env)
    scheme = "https" if tls else "http"
    data = workdir / "data"
    server = Server("ours", proc, f"{scheme}://127.0.0.1:{port}", "", None, data)
    deadline = time.monotonic() + 60
    while not (data / "admin.kubeconfig").exists() or (tls and not (data / "tls/ca.crt").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"our server did not start; see {workdir / 'server.log'}")
        time.sleep(0.1)
    if tls:
        server.cacert = data / "tls" / "ca.crt"
    server.authorization = "Bearer " + admin_token(data / "admin.kubeconfig")
    wait_ready(server, "/healthz", ok=(200,))
    return server


def admin_token(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["users"][0]["user"]["token"])


# ---------------------------------------------------------------- /proc sampling


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Granian workers are children of the main process)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, []))
    return out


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (imported libraries) counted once across workers."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples VmRSS of a process tree in a thread; peak total and peak single process."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_total_kib = 0
        self.peak_process_kib = 0
        self.peak_pss_kib = 0
        self.baseline_total_kib = 0
        self.samples = 0

    def _sample(self) -> tuple[int, int, int]:
        pids = process_tree(self._pid)
        values = [rss_kib(p) for p in pids]
        return sum(values), max(values, default=0), sum(pss_kib(p) for p in pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            total, largest, pss = self._sample()
            self.peak_total_kib = max(self.peak_total_kib, total)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self.peak_process_kib = max(self.peak_process_kib, largest)
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self.baseline_total_kib = self._sample()[0]
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- command line


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The clients' settings, the same for both registries (wrk, htpasswd)."""
    parser.add_argument("--wrk-duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bcrypt-cost", type=int, default=5)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """Where a run works and what it writes; `--from-json` renders a saved result."""
    parser.add_argument("--workdir", type=Path, default=None, help="scratch parent (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--from-json", type=Path, default=None, help="render a saved result")
    parser.add_argument("--note", action="append", default=[], help="line appended to the docs")


def rendered_saved(
    args: argparse.Namespace, render: Callable[[dict[str, Any]], str], section: str
) -> bool:
    """With `--from-json`: print (and with `--write-docs` write) that saved result, with
    this call's `--note` lines added; False when there is none to render."""
    if not args.from_json:
        return False
    saved = json.loads(args.from_json.read_text())
    saved["notes"] = [*saved.get("notes", []), *args.note]
    print(render(saved))
    if args.write_docs:
        write_doc_section(section, render(saved))
    return True


# ---------------------------------------------------------------- data


def parse_size(text: str) -> int:
    """`256M`, `1G`, `2GiB`, `4096`: bytes."""
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def human(size: int) -> str:
    return f"{size // (1024 * MiB)} GiB" if size % (1024 * MiB) == 0 else f"{size // MiB} MiB"


def make_blob_file(path: Path, size: int) -> None:
    """Random (incompressible) bytes; written once and reused across runs."""
    if path.exists() and path.stat().st_size == size:
        return
    chunk = 8 * MiB
    with path.open("wb") as handle:
        left = size
        while left > 0:
            n = min(chunk, left)
            handle.write(os.urandom(n))
            left -= n


def restamp(path: Path, stamp: int) -> str:
    """Overwrite the first 16 bytes so every repetition pushes a new digest; return it."""
    with path.open("r+b") as handle:
        handle.write(stamp.to_bytes(16, "big"))
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------- OCI client calls


def absolute(server: Server, location: str) -> str:
    return location if location.startswith("http") else server.base_url + location


def start_upload(client: httpx.Client, server: Server, repo: str) -> str:
    resp = client.post(f"/v2/{repo}/blobs/uploads/")
    if resp.status_code != 202:
        raise RuntimeError(f"{server.name}: upload start {resp.status_code} {resp.text[:300]}")
    return absolute(server, resp.headers["Location"])


def with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + digest


def push_small_blob(client: httpx.Client, server: Server, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = with_digest(start_upload(client, server, repo), digest)
    resp = client.put(url, content=data, headers={"Content-Type": "application/octet-stream"})
    if resp.status_code != 201:
        raise RuntimeError(f"{server.name}: blob PUT {resp.status_code} {resp.text[:300]}")
    return digest


def push_image(client: httpx.Client, server: Server, repo: str, tag: str) -> str:
    """A small OCI image (config + one layer) pushed by tag; returns the manifest digest."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    layer = os.urandom(4096)
    config_digest = push_small_blob(client, server, repo, config)
    layer_digest = push_small_blob(client, server, repo, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    resp = client.put(
        f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    if resp.status_code != 201:
        raise RuntimeError(f"{server.name}: manifest PUT {resp.status_code} {resp.text[:300]}")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def push_checked_image(client: httpx.Client, server: Server, repo: str) -> None:
    """The small image of `push_image` as `repo:latest`, then one manifest GET by that tag
    (what the manifest measurements repeat) that must answer 200."""
    push_image(client, server, repo, "latest")
    check = client.get(f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
    if check.status_code != 200:
        raise RuntimeError(f"{server.name}: manifest GET {check.status_code}")


def _curl_base(server: Server, write_out: str = "%{http_code} %{time_total}") -> list[str]:
    argv = ["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-w", write_out]
    if server.cacert:
        argv += ["--cacert", str(server.cacert)]
    if server.authorization:
        argv += ["-H", f"Authorization: {server.authorization}"]
    return argv


def curl_push(server: Server, repo: str, path: Path, digest: str) -> float:
    """POST + monolithic streamed PUT of a file; returns wall seconds for the whole push."""
    with server.client() as client:
        started = time.perf_counter()
        location = start_upload(client, server, repo)
        argv = [
            *_curl_base(server),
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect:",
            "-T",
            str(path),
            with_digest(location, digest),
        ]
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
    if out.returncode != 0 or not out.stdout.startswith("201"):
        raise RuntimeError(f"{server.name}: curl push failed: {out.stdout} {out.stderr[:300]}")
    return elapsed


def curl_pull(server: Server, repo: str, digest: str, expected_size: int) -> float:
    argv = _curl_base(server, "%{http_code} %{size_download}")
    # -L: ours answers 307 to its blob port when that is on (curl does not forward the
    # Authorization header to another port; the link is signed instead).
    argv += ["-L", f"{server.base_url}/v2/{repo}/blobs/{digest}"]
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    fields = out.stdout.split()
    if out.returncode != 0 or not fields or fields[0] != "200" or int(fields[-1]) != expected_size:
        raise RuntimeError(f"{server.name}: curl pull failed: {out.stdout} {out.stderr[:300]}")
    return elapsed


# ---------------------------------------------------------------- wrk

# ---------------------------------------------------------------- blob rounds


def _alternating(servers: list[Server], i: int) -> list[Server]:
    """Round `i`'s order: the servers take turns going first."""
    return servers if i % 2 == 0 else list(reversed(servers))


def push_rounds(
    servers: list[Server], repo: str, path: Path, reps: int, *, warmup: bool
) -> tuple[dict[str, list[float]], str]:
    """`reps` timed pushes of the file at `path` to each server (after one untimed round
    when `warmup`), a new digest each round and `sync` before every push, so one server's
    dirty pages are never written back on the other's clock. Returns each server's
    seconds and the last digest (the one to pull)."""
    size = path.stat().st_size
    seconds: dict[str, list[float]] = {s.name: [] for s in servers}
    digest = ""
    for i in range(reps + (1 if warmup else 0)):
        digest = restamp(path, size + i)
        timings = []
        for server in _alternating(servers, i):
            os.sync()
            took = curl_push(server, repo, path, digest)
            timings.append(f"{server.name} {took:.2f}s")
            if not (warmup and i == 0):
                seconds[server.name].append(took)
        warm = " (warm-up)" if warmup and i == 0 else ""
        print(f"  push {human(size)} #{i}{warm}: {', '.join(timings)}", flush=True)
    return seconds, digest


def pull_rounds(
    servers: list[Server], repo: str, digest: str, size: int, reps: int
) -> dict[str, list[float]]:
    """One untimed GET of `digest` from each server, then `reps` timed ones, alternating."""
    seconds: dict[str, list[float]] = {s.name: [] for s in servers}
    for i in range(reps + 1):
        for server in _alternating(servers, i):
            took = curl_pull(server, repo, digest, size)
            if i > 0:
                seconds[server.name].append(took)
    return seconds


def push_rss(servers: list[Server], repo: str, blob_dir: Path, size: int) -> dict[str, Any]:
    """Each server's memory (`RssSampler`) while it receives one new blob of `size`."""
    path = blob_dir / f"blob-{size}.bin"
    make_blob_file(path, size)
    digest = restamp(path, 7 * size)
    out: dict[str, Any] = {}
    for server in servers:
        os.sync()
        with RssSampler(server.pid) as sampler:
            took = curl_push(server, repo, path, digest)
        out[server.name] = {
            "push_seconds": took,
            "baseline_total_mb": sampler.baseline_total_kib / 1024,
            "peak_total_mb": sampler.peak_total_kib / 1024,
            "peak_process_mb": sampler.peak_process_kib / 1024,
            "peak_pss_mb": sampler.peak_pss_kib / 1024,
            "samples": sampler.samples,
        }
        print(
            f"  RSS {server.name} ({human(size)} push, {took:.0f} s): peak "
            f"{out[server.name]['peak_total_mb']:.0f} MB (largest process "
            f"{out[server.name]['peak_process_mb']:.0f} MB)",
            flush=True,
        )
    return out


WRK_SCRIPT = """
wrk.method = "GET"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
wrk.headers["Accept"] = "{accept}"
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_sec: float
    latency_p50_ms: float
    latency_p99_ms: float
    non_2xx: int
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", output)
    p99 = re.search(r"\s99%\s+(\S+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        rps,
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
        int(non2xx.group(1)) if non2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run_wrk(
    url: str,
    authorization: str,
    *,
    script_dir: Path,
    duration: int,
    connections: int,
    threads: int,
    accept: str = OCI_MANIFEST,
) -> WrkResult:
    script = script_dir / "get.lua"
    script.write_text(WRK_SCRIPT.replace("{accept}", accept))
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    env = {**os.environ, "BENCH_AUTHORIZATION": authorization}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return parse_wrk(out.stdout)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ---------------------------------------------------------------- environment and reporting


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "missing"
        return (
            (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
        )

    git = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "distribution": version([str(DISTRIBUTION_BINARY), "--version"]),
        "curl": version(["curl", "--version"]),
        "wrk": version(["wrk", "--version"]),
        "commit": git + ("+uncommitted src changes" if dirty else ""),
        "loadavg_start": loadavg(),
    }


def loadavg() -> str:
    """Other work on the machine skews results; each run records the load around it."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def save_result(kind: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{kind}-{stamp}.json"
    text = json.dumps(result, indent=2, sort_keys=True)
    path.write_text(text)
    (RESULTS / f"{kind}-latest.json").write_text(text)
    return path


DOC_HEADER = """# Benchmarks

Measured with the scripts in `bench/` (see `bench/README.md`); each section below is
regenerated by `--write-docs` from the run it describes. Numbers are from one machine
and one run each: treat ratios as the result, absolute figures as context.
"""


def write_doc_section(name: str, markdown: str) -> None:
    """Replace (or append) the block between `<!-- BEGIN name -->` and `<!-- END name -->`."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = DOCS.read_text() if DOCS.exists() else DOC_HEADER
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def scratch(keep: bool, base: Path | None = None) -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="regbench-", dir=base))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
