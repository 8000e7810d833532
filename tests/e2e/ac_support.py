"""Running the real `ac` console script of this venv with its own HOME and kubeconfig."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import RegistryProcess

AC = str(Path(sys.executable).parent / "ac")


def ac(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ac ARGS` with HOME and KUBECONFIG inside ``home``; by default it must succeed."""
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
    result = subprocess.run([AC, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def login_admin(server: RegistryProcess, home: Path) -> Path:
    """`ac login` into ``home`` with the server's admin token and CA; returns ``home``."""
    ac(
        home,
        "login",
        server.url,
        "--token",
        server.admin_token,
        "--certificate-authority",
        str(server.ca_file),
    )
    return home
