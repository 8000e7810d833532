"""Helpers for driving the real `kubectl` against a test server (fresh cache dir per server)."""

from __future__ import annotations

import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from imageregistry.auth.tokens import hash_token, new_opaque_token
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.tokens import TokenStore
from tests.e2e.ac_images import layer, push, write_layout
from tests.support.server import RegistryProcess


@dataclass
class Kubectl:
    server: RegistryProcess
    cache_dir: Path

    def run(
        self,
        *args: str,
        token: str | None = None,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            "kubectl",
            "--kubeconfig",
            str(self.server.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
        ]
        if token is not None:
            cmd.append(f"--token={token}")
        return subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
            env={**os.environ, **env} if env else None,
        )

    def ok(self, *args: str, token: str | None = None, stdin: str | None = None) -> str:
        result = self.run(*args, token=token, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def fails(self, *args: str, token: str | None = None) -> str:
        result = self.run(*args, token=token)
        assert result.returncode != 0, (
            f"kubectl {' '.join(args)} unexpectedly succeeded: {result.stdout}"
        )
        return result.stderr

    def popen(self, *args: str) -> subprocess.Popen[str]:
        cmd = [
            "kubectl",
            "--kubeconfig",
            str(self.server.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
            *args,
        ]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def add_user_token(server: RegistryProcess, username: str, groups: tuple[str, ...] = ()) -> str:
    """An opaque token for a named user, written straight into the server's database."""
    token = new_opaque_token()
    db = Database(open_engine(f"sqlite:///{server.data_dir / 'registry.db'}"))
    try:
        TokenStore(db).add(hash_token(token), username, groups)
    finally:
        db.dispose()
    return token


def push_image(
    server: RegistryProcess, root: Path, repo: str, seed: str, token: str | None = None
) -> str:
    """Push a one-layer image built from `seed` to `<host>/<repo>`; return its digest."""
    layout, manifest, _ = write_layout(root / f"layout-{seed}", [layer(seed, 2048)])
    push(layout, f"{server.host}/{repo}", token or server.admin_token, server.cert_dir(root))
    return manifest.digest


def read_until(proc: subprocess.Popen[str], needle: str, limit: float = 60.0) -> str:
    """A watch's output until `needle` shows up (the limit only guards against a hang).

    Reads the pipe's fd directly: a buffered readline() may pull two lines (header and row)
    into Python's buffer, after which select() on the empty pipe would never fire again."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    end = time.monotonic() + limit
    while needle.encode() not in seen and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    return seen.decode("utf-8", "replace")
