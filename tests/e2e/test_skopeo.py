"""skopeo against a real server: copy a multi-layer OCI layout in and back out, inspect,
list-tags, and delete by digest or tag (the image and its tags go; `ac` undoes it)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.ac_support import ac, login_admin
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


def _push(server: RegistryProcess, certs: str, layout: Layout, target: str) -> None:
    result = skopeo(
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        f"x:{server.admin_token}",
        f"oci:{layout.path}:v1",
        f"docker://{server.host}/{target}",
    )
    assert result.returncode == 0, result.stderr


def _delete_run(server: RegistryProcess, reference: str) -> str:
    """The recorded run of a manifest deletion, as an operator finds it with kubectl."""
    listed = subprocess.run(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "get", "imagepruneruns", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    runs = [
        item["metadata"]["name"]
        for item in json.loads(listed.stdout)["items"]
        if item["spec"].get("deleteManifest") == reference
    ]
    assert len(runs) == 1, listed.stdout
    return str(runs[0])


def test_delete_by_digest_removes_the_tagged_image_and_undo_restores_it(
    server: RegistryProcess, certs: str, tmp_path: Path
) -> None:
    layout = build_layout(tmp_path / "layout", "deleted")
    for tag in ("v1", "also"):
        _push(server, certs, layout, f"team/del:{tag}")
    base = ("--cert-dir", certs, "--registry-token", server.admin_token)
    at_digest = f"docker://{server.host}/team/del@{layout.manifest_digest}"
    deleted = skopeo("delete", *base, at_digest)
    assert deleted.returncode == 0, deleted.stderr
    for gone in (at_digest, f"docker://{server.host}/team/del:v1"):
        assert skopeo("inspect", *base, gone).returncode != 0
    listed = skopeo("list-tags", *base, f"docker://{server.host}/team/del")
    assert json.loads(listed.stdout)["Tags"] == []

    run = _delete_run(server, f"team/del@{layout.manifest_digest}")
    home = login_admin(server, tmp_path / "home")
    ac(home, "adm", "prune", "images", "--undo", run, "--confirm")
    out = tmp_path / "out"
    pulled = skopeo(
        "copy",
        "--src-cert-dir",
        certs,
        "--src-registry-token",
        server.admin_token,
        f"docker://{server.host}/team/del:v1",
        f"oci:{out}:copy",
    )
    assert pulled.returncode == 0, pulled.stderr
    assert_copied(out, layout)
    listed = skopeo("list-tags", *base, f"docker://{server.host}/team/del")
    assert sorted(json.loads(listed.stdout)["Tags"]) == ["also", "v1"]


def test_delete_by_tag_resolves_it_and_deletes_the_image(
    server: RegistryProcess, certs: str, tmp_path: Path
) -> None:
    layout = build_layout(tmp_path / "layout", "by-tag")
    _push(server, certs, layout, "team/bytag:v1")
    base = ("--cert-dir", certs, "--registry-token", server.admin_token)
    deleted = skopeo("delete", *base, f"docker://{server.host}/team/bytag:v1")
    assert deleted.returncode == 0, deleted.stderr
    at_digest = f"docker://{server.host}/team/bytag@{layout.manifest_digest}"
    assert skopeo("inspect", *base, at_digest).returncode != 0
    assert _delete_run(server, f"team/bytag@{layout.manifest_digest}").startswith("delete-")


def test_a_push_to_a_one_component_name_shows_the_rule(
    server: RegistryProcess, certs: str, pushed: Layout
) -> None:
    result = skopeo(
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        f"x:{server.admin_token}",
        f"oci:{pushed.path}:v1",
        f"docker://{server.host}/demo:latest",
    )
    assert result.returncode != 0
    assert "repository name must be <namespace>/<stream>" in result.stderr, result.stderr
