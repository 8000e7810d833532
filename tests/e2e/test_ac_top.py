"""`ac` against a real server: login (token and htpasswd), top images/imagestreams, image info.

Three streams share base layers; `team-a/app` is built on `team-a/base`; a retag moves a
tag to a new image; `team-m/multi` is a two-platform index. Images are pushed with skopeo,
which must be installed (a missing skopeo fails the tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.e2e.ac_images import Blob, layer, push, write_index_layout, write_layout
from tests.e2e.ac_support import ac, login_admin
from tests.support.server import RegistryProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = Path(tmp_path_factory.mktemp("ac"))
    htpasswd = root / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    with RegistryProcess(
        data_dir=root / "data", extra_args=["--htpasswd-file", str(htpasswd)]
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin_home(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return login_admin(server, Path(tmp_path_factory.mktemp("home")))


@dataclass(frozen=True)
class Pushed:
    """What the tests pushed: manifest digest and blobs (config + layers) per image name."""

    digests: dict[str, str]
    blobs: dict[str, list[Blob]]

    def __getitem__(self, name: str) -> str:
        return self.digests[name]

    def storage(self, *names: str) -> int:
        """Unique layer plus config bytes of the named images (shared layers once)."""
        unique = {b.digest: b.size for name in names for b in self.blobs[name]}
        return sum(unique.values())


def binary_size(size: int) -> str:
    """docs/behaviour.md#ac-adm-top: binary units, four significant digits (`12.34MiB`)."""
    for power, unit in [(3, "GiB"), (2, "MiB"), (1, "KiB")]:
        if size >= 1024**power:
            return f"{size / 1024**power:.4g}{unit}"
    return f"{size}B"


@pytest.fixture(scope="module")
def certs(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return server.cert_dir(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def pushed(
    server: RegistryProcess, certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Pushed:
    root = Path(tmp_path_factory.mktemp("images"))
    b1, b2 = layer("base-1", 300_000), layer("base-2", 200_000)
    app, tool, new = layer("app", 100_000), layer("tool", 50_000), layer("new", 10_000)
    layers = {"base": [b1, b2], "app": [b1, b2, app], "tool": [b1, tool], "app2": [b1, b2, new]}
    images = {
        "base": write_layout(root / "base", layers["base"]),
        "app": write_layout(root / "app", layers["app"], env=["MODE=prod"], labels={"team": "a"}),
        "tool": write_layout(root / "tool", layers["tool"]),
        "app2": write_layout(root / "app2", layers["app2"]),
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
    return Pushed(
        {name: value[1].digest for name, value in images.items()},
        {name: [images[name][2], *layers[name]] for name in images},
    )


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


def test_top_images(admin_home: Path, pushed: Pushed) -> None:
    lines = ac(admin_home, "adm", "top", "images").stdout.splitlines()
    assert lines[0].split() == ["NAME", "IMAGESTREAMTAG", "PARENTS", "USAGE", "METADATA", "STORAGE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert lines[1].split()[0] == pushed["app"]  # two tags: first
    assert "team-a/app (latest,v1.0)" in rows[pushed["app"]]
    assert "team-a/app (v1.1)" in rows[pushed["app2"]]
    assert pushed["base"] in rows[pushed["app"]].split("   ")[2]  # PARENTS
    assert "<none>" in rows[pushed["base"]]
    for name in ["base", "app", "tool", "app2"]:
        assert rows[pushed[name]].split()[-1] == binary_size(pushed.storage(name)), name
    items = json.loads(ac(admin_home, "adm", "top", "images", "-o", "json").stdout)["items"]
    app = next(i for i in items if i["name"] == pushed["app"])
    assert app["imageStreamTags"] == [
        {"namespace": "team-a", "name": "app", "tags": ["latest", "v1.0"]}
    ]
    assert app["parents"] == [pushed["base"]] and app["metadata"] is True
    assert app["storage"] == pushed.storage("app") and app["layers"] == 3


def test_top_imagestreams(admin_home: Path, pushed: Pushed) -> None:
    lines = ac(admin_home, "adm", "top", "imagestreams").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STORAGE", "IMAGES", "LAYERS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert {"team-a/app", "team-a/base", "team-b/tool"} <= set(rows)
    # app and app2 share base-1 and base-2: counted once, not once per image
    shared = pushed.storage("app", "app2")
    assert shared < pushed.storage("app") + pushed.storage("app2")
    assert rows["team-a/app"] == ["team-a/app", binary_size(shared), "2", "6"]
    assert rows["team-a/base"][1] == binary_size(pushed.storage("base"))
    assert rows["team-b/tool"][1] == binary_size(pushed.storage("tool"))
    ours = [name for name in rows if name in {"team-a/app", "team-a/base", "team-b/tool"}]
    assert ours == ["team-a/app", "team-a/base", "team-b/tool"]  # storage descending


def test_image_info(server: RegistryProcess, admin_home: Path, pushed: Pushed) -> None:
    out = ac(admin_home, "image", "info", f"{server.host}/team-a/app:latest").stdout
    assert f"Digest:        {pushed['app']}\n" in out
    assert "Media Type:    application/vnd.oci.image.manifest.v1+json\n" in out
    assert "in 3 layers" in out and "OS:            linux" in out
    assert "Environment:   MODE=prod" in out and "Labels:        team=a" in out
    missing = ac(admin_home, "image", "info", f"{server.host}/team-a/app:nope", check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1


def test_image_info_on_a_multi_arch_index(
    server: RegistryProcess, admin_home: Path, certs: Path, tmp_path: Path
) -> None:
    platforms = {"amd64": [layer("x86", 40_000)], "arm64": [layer("arm", 30_000)]}
    layout, index, children = write_index_layout(tmp_path / "multi", platforms)
    ref = f"{server.host}/team-m/multi:latest"
    push(layout, ref, server.admin_token, certs, all_platforms=True)
    bare = ac(admin_home, "image", "info", ref, check=False)
    assert bare.returncode == 1 and bare.stdout == "" and bare.stderr.count("\n") == 1
    assert "linux/amd64, linux/arm64" in bare.stderr and "--filter-by-os" in bare.stderr
    out = ac(admin_home, "image", "info", ref, "--filter-by-os", "linux/arm64").stdout
    assert f"Digest:        {children['arm64'].digest}\n" in out
    assert f"Manifest List: {index.digest}\n" in out
    assert "Arch:          arm64" in out and "in 1 layers" in out
    both = ac(admin_home, "image", "info", ref, "--show-multiarch").stdout
    digests = [line.split()[1] for line in both.splitlines() if line.startswith("Digest:")]
    assert digests == [children["amd64"].digest, children["arm64"].digest]
