"""The `oras` Python client: push an image and an artifact whose subject is that image,
then find the artifact through the referrers API (token auth against the challenge); pull
files back, delete (by digest, as oras does) and undo the deletion with `ac`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oras.client
import oras.oci
import pytest

from tests.e2e.ac_support import ac, login_admin
from tests.support.server import RegistryProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("oras") / "data") as process:
        yield process


def client(server: RegistryProcess) -> Any:
    c = oras.client.OrasClient(
        hostname=server.host, tls_verify=str(server.ca_file), auth_backend="token"
    )
    c.auth.set_basic_auth("anyone", server.admin_token)
    return c


def test_push_artifact_with_subject_and_find_it(
    server: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("app.txt").write_text("the application\n")
    Path("sbom.json").write_text('{"packages": []}\n')
    c = client(server)
    target = f"{server.host}/team/app:v1"
    r = c.push(target=target, files=["app.txt"], quiet=True)
    assert r.status_code == 201
    manifest = c.get_manifest(target)
    subject = oras.oci.Subject.from_manifest(manifest)
    r = c.push(
        target=f"{server.host}/team/app:sbom",
        files=["sbom.json:application/spdx+json"],
        subject=subject,
        manifest_annotations={"kind": "sbom"},
        quiet=True,
    )
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject.digest
    with server.client(server.admin_token) as http:
        found = http.get(f"/v2/team/app/referrers/{subject.digest}").json()
        assert len(found["manifests"]) == 1
        referrer = found["manifests"][0]
        assert referrer["annotations"] == {"kind": "sbom"}
        assert referrer["digest"] == r.headers["Docker-Content-Digest"]
        pulled = http.get(f"/v2/team/app/manifests/{referrer['digest']}").json()
        assert pulled["subject"]["digest"] == subject.digest
        assert json.loads(http.get("/v2/team/app/tags/list").text)["tags"] == ["sbom", "v1"]


def test_pull_back_files_delete_and_undo(
    server: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("release notes\n")
    c = client(server)
    target = f"{server.host}/team/docs:v1"
    c.push(target=target, files=["notes.txt"], quiet=True)
    out = tmp_path / "out"
    files = c.pull(target=target, outdir=str(out))
    assert [Path(f).read_text() for f in files] == ["release notes\n"]
    # oras deletes a tag by resolving it and deleting the digest: the image goes, with
    # every tag of the stream that points at it (OCI distribution spec); `ac` undoes it.
    deleted = c.delete_tags(f"{server.host}/team/docs", "v1")
    assert deleted == ["v1"]
    with server.client(server.admin_token) as http:
        assert http.get("/v2/team/docs/manifests/v1").status_code == 404
        assert http.get("/v2/team/docs/tags/list").json()["tags"] == []
        runs = http.get("/apis/image.alauda.io/v1/imagepruneruns").json()["items"]
    (run,) = [r["metadata"]["name"] for r in runs if "team/docs@" in r["spec"]["deleteManifest"]]
    home = login_admin(server, tmp_path / "home")
    ac(home, "adm", "prune", "images", "--undo", run, "--confirm")
    files = c.pull(target=target, outdir=str(tmp_path / "again"))
    assert [Path(f).read_text() for f in files] == ["release notes\n"]
