"""skopeo against a real server: copy a multi-layer OCI layout in and back out, inspect,
list-tags and delete (which is refused while a tag points at the image)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.oci_support import Layout, assert_copied, build_layout, skopeo
from tests.support.server import RegistryProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("skopeo")
    with RegistryProcess(data_dir=root / "data") as process:
        yield process


@pytest.fixture(scope="module")
def certs(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(server.cert_dir(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def pushed(server: RegistryProcess, certs: str, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    layout = build_layout(tmp_path_factory.mktemp("src") / "layout", "one")
    result = skopeo(
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        f"x:{server.admin_token}",
        f"oci:{layout.path}:v1",
        f"docker://{server.host}/team/app:v1",
    )
    assert result.returncode == 0, result.stderr
    return layout


def test_copy_in_and_back_out_keeps_digests(
    server: RegistryProcess, certs: str, pushed: Layout, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = skopeo(
        "copy",
        "--src-cert-dir",
        certs,
        "--src-registry-token",
        server.admin_token,
        f"docker://{server.host}/team/app:v1",
        f"oci:{out}:copy",
    )
    assert result.returncode == 0, result.stderr
    assert_copied(out, pushed)


def test_inspect(server: RegistryProcess, certs: str, pushed: Layout) -> None:
    result = skopeo(
        "inspect",
        "--cert-dir",
        certs,
        "--registry-token",
        server.admin_token,
        f"docker://{server.host}/team/app:v1",
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Digest"] == pushed.manifest_digest
    assert info["RepoTags"] == ["v1"]
    assert info["Architecture"] == "amd64"
    assert len(info["Layers"]) == 3


def test_docker_schema2_copy_and_list_tags(
    server: RegistryProcess, certs: str, pushed: Layout, tmp_path: Path
) -> None:
    other = build_layout(tmp_path / "other", "two", tag="v2")
    result = skopeo(
        "copy",
        "--format",
        "v2s2",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        f"x:{server.admin_token}",
        f"oci:{other.path}:v2",
        f"docker://{server.host}/team/app:v2",
    )
    assert result.returncode == 0, result.stderr
    listed = skopeo(
        "list-tags",
        "--cert-dir",
        certs,
        "--registry-token",
        server.admin_token,
        f"docker://{server.host}/team/app",
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["Tags"] == ["v1", "v2"]
    with server.client(server.admin_token) as client:
        r = client.get("/v2/team/app/manifests/v2")
    assert r.headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_delete_refused_while_tagged_then_by_digest(
    server: RegistryProcess, certs: str, pushed: Layout
) -> None:
    base = ("--cert-dir", certs, "--registry-token", server.admin_token)
    refused = skopeo("delete", *base, f"docker://{server.host}/team/app:v1")
    assert refused.returncode != 0
    assert "delete the tag" in refused.stderr
    with server.client(server.admin_token) as client:
        assert client.delete("/v2/team/app/manifests/v1").status_code == 202
    deleted = skopeo("delete", *base, f"docker://{server.host}/team/app@{pushed.manifest_digest}")
    assert deleted.returncode == 0, deleted.stderr
    gone = skopeo("inspect", *base, f"docker://{server.host}/team/app@{pushed.manifest_digest}")
    assert gone.returncode != 0
