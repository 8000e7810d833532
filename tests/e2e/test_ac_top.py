"""`ac` against a real server: login (token and htpasswd), top images/imagestreams, image info.

Three streams share base layers; `team-a/app` is built on `team-a/base`; a retag moves a
tag to a new image. Images are pushed with skopeo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from tests.e2e.ac_images import layer, push, write_layout
from tests.support.server import RegistryProcess

AC = str(Path(sys.executable).parent / "ac")
pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")


class _Process(RegistryProcess):
    """Waits for health before the CA file exists (the base class reads it too early)."""

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        if not self.plain_http and not self.ca_file.exists():
            return httpx.Client(base_url=self.url, verify=False, timeout=1.0)
        return super().client(token, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = Path(tmp_path_factory.mktemp("ac"))
    htpasswd = root / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    proc = _Process(data_dir=root / "data", extra_args=["--htpasswd-file", str(htpasswd)])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def ac(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
    result = subprocess.run([AC, *args], env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def admin_home(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = Path(tmp_path_factory.mktemp("home"))
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


@pytest.fixture(scope="module")
def pushed(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = Path(tmp_path_factory.mktemp("images"))
    certs = root / "certs"
    certs.mkdir()
    shutil.copy(server.ca_file, certs / "ca.crt")
    b1, b2 = layer("base-1", 300_000), layer("base-2", 200_000)
    app, tool, new = layer("app", 100_000), layer("tool", 50_000), layer("new", 10_000)
    images = {
        "base": write_layout(root / "base", [b1, b2]),
        "app": write_layout(root / "app", [b1, b2, app], env=["MODE=prod"], labels={"team": "a"}),
        "tool": write_layout(root / "tool", [b1, tool]),
        "app2": write_layout(root / "app2", [b1, b2, new]),
    }
    host, token = server.host, server.admin_token
    for name, dest in [
        ("base", "team-a/base:latest"),
        ("app", "team-a/app:latest"),
        ("app", "team-a/app:v1.0"),
        ("app", "team-a/app:v1.1"),
        ("tool", "team-b/tool:latest"),
        ("app2", "team-a/app:v1.1"),  # retag: v1.1 moves to app2
    ]:
        push(images[name][0], f"{host}/{dest}", token, certs)
    return {name: value[1].digest for name, value in images.items()}


def test_login_with_token_shares_the_kubeconfig_with_kubectl(
    server: RegistryProcess, admin_home: Path
) -> None:
    assert ac(admin_home, "whoami").stdout.strip() == "system:admin"
    assert ac(admin_home, "whoami", "-t").stdout.strip() == server.admin_token
    config = yaml.safe_load((admin_home / "kubeconfig").read_text())
    assert config["current-context"] in {c["name"] for c in config["contexts"]}
    if shutil.which("kubectl"):
        result = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(admin_home / "kubeconfig"),
                "auth",
                "whoami",
                "--cache-dir",
                str(admin_home / "cache"),
            ],
            capture_output=True,
            text=True,
        )
        assert "system:admin" in result.stdout, result.stderr


def test_login_with_htpasswd_password(server: RegistryProcess, tmp_path: Path) -> None:
    ac(
        tmp_path,
        "login",
        server.url,
        "-u",
        "alice",
        "-p",
        "s3cret",
        "--certificate-authority",
        str(server.ca_file),
    )
    assert ac(tmp_path, "whoami").stdout.strip() == "alice"
    bad = ac(
        tmp_path,
        "login",
        server.url,
        "-u",
        "alice",
        "-p",
        "wrong",
        "--certificate-authority",
        str(server.ca_file),
        check=False,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: login failed")


def test_top_images(admin_home: Path, pushed: dict[str, str]) -> None:
    lines = ac(admin_home, "adm", "top", "images").stdout.splitlines()
    assert lines[0].split() == ["NAME", "IMAGESTREAMTAG", "PARENTS", "USAGE", "METADATA", "STORAGE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert lines[1].split()[0] == pushed["app"]  # two tags: first
    assert "team-a/app (latest,v1.0)" in rows[pushed["app"]]
    assert "team-a/app (v1.1)" in rows[pushed["app2"]]
    assert pushed["base"] in rows[pushed["app"]].split("   ")[2]  # PARENTS
    assert "<none>" in rows[pushed["base"]]


def test_top_imagestreams(admin_home: Path, pushed: dict[str, str]) -> None:
    lines = ac(admin_home, "adm", "top", "imagestreams").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STORAGE", "IMAGES", "LAYERS"]
    names = [line.split()[0] for line in lines[1:]]
    assert set(names) == {"team-a/app", "team-a/base", "team-b/tool"}
    app = next(line.split() for line in lines[1:] if line.startswith("team-a/app "))
    assert app[2:] == ["2", "6"]  # two current images, 3 + 3 layers


def test_image_info(server: RegistryProcess, admin_home: Path, pushed: dict[str, str]) -> None:
    out = ac(admin_home, "image", "info", f"{server.host}/team-a/app:latest").stdout
    assert f"Digest:        {pushed['app']}\n" in out
    assert "Media Type:    application/vnd.oci.image.manifest.v1+json\n" in out
    assert "in 3 layers" in out and "OS:            linux" in out
    assert "Environment:   MODE=prod" in out and "Labels:        team=a" in out
    missing = ac(admin_home, "image", "info", f"{server.host}/team-a/app:nope", check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
