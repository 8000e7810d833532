"""The real kubectl 1.32 against the server: seed commands, resources, RBAC and hostile input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kubectl_support import Kubectl, add_user_token, push_image, read_until
from tests.support.server import RegistryProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("kubectl")
    with RegistryProcess(data_dir=root / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def k(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(server, tmp_path_factory.mktemp("kube-cache"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def test_seed_rolebindings_and_can_i(k: Kubectl) -> None:
    k.ok("create", "ns", "team-a")
    k.ok("create", "ns", "app")
    assert "serviceaccount/builder created" in k.ok("create", "sa", "builder", "-n", "app")
    can_i = ["auth", "can-i", "get", "imagestreams/layers.image.alauda.io", "-n", "team-a"]
    before = k.run(*can_i, "--as=system:serviceaccount:app:builder")
    assert (before.stdout.strip(), before.returncode) == ("no", 1)
    out = k.ok(
        "create",
        "rolebinding",
        "image-puller-alice",
        "--clusterrole=system:image-puller",
        "--user=alice",
        "-n",
        "team-a",
    )
    assert "rolebinding.rbac.authorization.k8s.io/image-puller-alice created" in out
    k.ok(
        "create",
        "rolebinding",
        "image-puller-builder",
        "--clusterrole=system:image-puller",
        "--serviceaccount=app:builder",
        "-n",
        "team-a",
    )
    k.ok(
        "create",
        "rolebinding",
        "image-puller-devs",
        "--clusterrole=system:image-puller",
        "--group=devs",
        "-n",
        "team-a",
    )
    table = k.ok("-n", "team-a", "get", "rolebinding")
    assert table.split("\n")[0].split() == ["NAME", "ROLE", "AGE"]
    assert "ClusterRole/system:image-puller" in table and "image-puller-devs" in table
    wide = k.ok("-n", "team-a", "get", "rolebinding", "-o", "wide")
    assert "app/builder" in wide and "alice" in wide and "devs" in wide
    assert k.ok(*can_i, "--as=system:serviceaccount:app:builder").strip() == "yes"
    other = k.run(*can_i, "--as=system:serviceaccount:app:other")
    assert (other.stdout.strip(), other.returncode) == ("no", 1)
    elsewhere = k.run(
        "auth",
        "can-i",
        "get",
        "imagestreams/layers.image.alauda.io",
        "-n",
        "app",
        "--as=system:serviceaccount:app:builder",
    )
    assert elsewhere.stdout.strip() == "no"


def test_can_i_list_and_whoami(k: Kubectl) -> None:
    k.ok("create", "ns", "list-ns")
    k.ok(
        "create",
        "rolebinding",
        "p",
        "--clusterrole=system:image-puller",
        "--serviceaccount=app:lister",
        "-n",
        "list-ns",
    )
    listing = k.ok(
        "auth", "can-i", "--list", "-n", "list-ns", "--as=system:serviceaccount:app:lister"
    )
    assert "imagestreams.image.alauda.io/layers" in listing
    who = k.ok("auth", "whoami")
    assert "system:admin" in who and "system:masters" in who


def test_create_namespace_sa_and_token(k: Kubectl) -> None:
    assert "namespace/tok-ns created" in k.ok("create", "ns", "tok-ns")
    k.ok("create", "sa", "robot", "-n", "tok-ns")
    token = k.ok("create", "token", "robot", "-n", "tok-ns", "--duration=10m")
    assert token.count(".") == 2
    who = k.ok("auth", "whoami", token=token)
    assert "system:serviceaccount:tok-ns:robot" in who and "system:serviceaccounts:tok-ns" in who
    short = k.fails("create", "token", "robot", "-n", "tok-ns", "--duration=1m")
    assert "may not specify a duration less than 10 minutes" in short
    bound = k.fails(
        "create", "token", "robot", "-n", "tok-ns", "--bound-object-kind=Secret",
        "--bound-object-name=s1",
    )  # fmt: skip
    assert 'secrets "s1" not found' in bound
    missing = k.fails("create", "sa", "x", "-n", "no-such-ns")
    assert 'namespaces "no-such-ns" not found' in missing
    assert "already exists" in k.fails("create", "ns", "tok-ns")


def test_image_commands(k: Kubectl, server: RegistryProcess, work: Path) -> None:
    k.ok("create", "ns", "img")
    digest = push_image(server, work, "img/demo:latest", "first")
    images = k.ok("get", "images")
    # docs/behaviour.md#image-api-resources columns plus VERIFIED (trusted-signature status).
    assert images.split("\n")[0].split() == ["NAME", "IMAGE", "REFERENCE", "VERIFIED"]
    assert f"{server.host}/img/demo@{digest}" in images
    row = next(line for line in images.splitlines() if line.startswith(digest))
    assert row.split()[-1] == "no"
    streams = k.ok("get", "imagestreams", "-n", "img")
    assert streams.split("\n")[0].split() == ["NAME", "IMAGE", "REPOSITORY", "TAGS", "UPDATED"]
    assert f"{server.host}/img/demo" in streams and "latest" in streams
    wide = k.ok("get", "imagestreamtags", "demo:latest", "-n", "img", "-o", "wide")
    assert "IMAGE NAME" in wide and digest in wide
    assert "IMAGE NAME" not in k.ok("get", "imagestreamtags", "demo:latest", "-n", "img")
    doc = yaml.safe_load(k.ok("get", "images.image.alauda.io", digest, "-o", "yaml"))
    assert doc["kind"] == "Image" and doc["metadata"]["name"] == digest
    assert doc["dockerImageMetadata"]["architecture"] == "amd64"
    out = k.ok("delete", "imagestreamtag", "demo:latest", "-n", "img")
    assert 'imagestreamtag.image.alauda.io "demo:latest" deleted' in out
    assert "NotFound" in k.fails("get", "imagestreamtags", "demo:latest", "-n", "img")


def test_apply_and_label(k: Kubectl, work: Path) -> None:
    k.ok("create", "ns", "apply-ns")
    stream = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": "web", "namespace": "apply-ns"},
        "spec": {"lookupPolicy": {"local": False}},
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "pullers", "namespace": "apply-ns"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:image-puller",
        },
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
    }
    for obj, what in (
        (stream, "imagestream.image.alauda.io/web"),
        (binding, "rolebinding.rbac.authorization.k8s.io/pullers"),
    ):
        path = work / f"{obj['kind']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        assert f"{what} created" in k.ok("apply", "-f", str(path))
        assert f"{what} unchanged" in k.ok("apply", "-f", str(path))
        if obj is stream:
            stream["spec"] = {"lookupPolicy": {"local": True}}
        else:
            binding["subjects"] = [
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}
            ]
        path.write_text(yaml.safe_dump(obj))
        assert f"{what} configured" in k.ok("apply", "-f", str(path))
    assert (
        yaml.safe_load(k.ok("get", "is", "web", "-n", "apply-ns", "-o", "yaml"))["spec"][
            "lookupPolicy"
        ]["local"]
        is True
    )
    assert "bob" in k.ok("get", "rolebinding", "pullers", "-n", "apply-ns", "-o", "wide")
    k.ok("label", "is", "web", "-n", "apply-ns", "team=web")
    k.ok("label", "rolebinding", "pullers", "-n", "apply-ns", "team=rb")
    assert "team=web" in k.ok("get", "is", "-n", "apply-ns", "--show-labels")
    assert "pullers" in k.ok("get", "rolebinding", "-n", "apply-ns", "-l", "team=rb")
    assert (
        "No resources found"
        in k.run("get", "rolebinding", "-n", "apply-ns", "-l", "team=other").stderr
    )


def test_strict_field_validation_rejects_unknown_fields(k: Kubectl, work: Path) -> None:
    k.ok("create", "ns", "strict-ns")
    bad = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": "bad", "namespace": "strict-ns"},
        "spec": {"bogusField": 1},
    }
    path = work / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    err = k.fails("create", "-f", str(path))
    assert 'unknown field "spec.bogusField"' in err
    assert "No resources found" in k.run("get", "is", "-n", "strict-ns").stderr


def test_get_watch_receives_push_event(k: Kubectl, server: RegistryProcess, work: Path) -> None:
    k.ok("create", "ns", "watch-ns")
    proc = k.popen("get", "imagestreams", "-n", "watch-ns", "-w")
    try:
        push_image(server, work, "watch-ns/watched:v1", "watched")
        # Wait for the whole row (the repository column), not only the name: a row may
        # reach the pipe in more than one read.
        seen = read_until(proc, f"{server.host}/watch-ns/watched")
    finally:
        proc.kill()
        proc.wait()
    assert "watched" in seen and f"{server.host}/watch-ns/watched" in seen


def test_get_watch_on_imagestreamtags(k: Kubectl, server: RegistryProcess, work: Path) -> None:
    k.ok("create", "ns", "istag-watch")
    first = push_image(server, work, "istag-watch/app:v1", "istag-one")
    proc = k.popen("get", "istag", "-n", "istag-watch", "-w", "-o", "wide")
    try:
        assert first in read_until(proc, first)  # the listed tag
        second = push_image(server, work, "istag-watch/app:v2", "istag-two")
        seen = read_until(proc, second)
    finally:
        proc.kill()
        proc.wait()
    assert "app:v2" in seen and second in seen


def test_impersonation_requires_the_verb(k: Kubectl, server: RegistryProcess) -> None:
    token = add_user_token(server, "mallory")
    # Discovery as mallory would be refused too, and kubectl reports a refused discovery
    # request only as "Forbidden: unknown" (it reads discovery answers raw, as kube's
    # apiserver would be read); fill the cache as admin so the GET itself is what fails.
    k.ok("api-resources")
    err = k.fails("get", "ns", "--as=system:admin", token=token)
    assert 'User "mallory" cannot impersonate resource "users"' in err
    err = k.fails("-n", "team-a", "get", "rolebinding", token=token)
    assert (
        'rolebindings.rbac.authorization.k8s.io is forbidden: User "mallory" cannot list resource '
        '"rolebindings" in API group "rbac.authorization.k8s.io" in the namespace "team-a"'
    ) in err


def test_namespace_admin_cannot_grant_cluster_admin(k: Kubectl, server: RegistryProcess) -> None:
    k.ok("create", "ns", "owned")
    k.ok(
        "create", "rolebinding", "carol-admin", "--clusterrole=admin", "--user=carol", "-n", "owned"
    )
    token = add_user_token(server, "carol")
    err = k.fails(
        "create",
        "rolebinding",
        "grab",
        "--clusterrole=cluster-admin",
        "--user=carol",
        "-n",
        "owned",
        token=token,
    )
    assert "attempting to grant RBAC permissions not currently held" in err
    k.ok(
        "create",
        "rolebinding",
        "share",
        "--clusterrole=system:image-puller",
        "--user=dave",
        "-n",
        "owned",
        token=token,
    )
    err = k.fails(
        "create",
        "clusterrolebinding",
        "grab",
        "--clusterrole=cluster-admin",
        "--user=carol",
        token=token,
    )
    assert "forbidden" in err


def test_bad_token_is_unauthorized(k: Kubectl) -> None:
    err = k.fails("get", "ns", token="ir_not-a-real-token")
    assert "You must be logged in to the server" in err


def test_edit_with_an_editor_script(k: Kubectl, work: Path) -> None:
    """`kubectl edit` sends a strategic merge patch for a RoleBinding and a merge patch for an
    ImageStream; the editor here is a sed script."""
    k.ok("create", "ns", "edit-ns")
    k.ok(
        "create",
        "rolebinding",
        "editme",
        "--clusterrole=view",
        "--user=alice",
        "--user=carol",
        "-n",
        "edit-ns",
    )
    editor = work / "editor.sh"
    editor.write_text(
        '#!/bin/sh\nsed -i -e "s/name: alice/name: bob/" -e "s/local: false/local: true/" "$1"\n'
    )
    editor.chmod(0o755)
    env = {"KUBE_EDITOR": str(editor), "EDITOR": str(editor)}
    edited = k.run("edit", "rolebinding", "editme", "-n", "edit-ns", env=env)
    assert edited.returncode == 0, edited.stderr
    assert "rolebinding.rbac.authorization.k8s.io/editme edited" in edited.stdout
    binding = yaml.safe_load(k.ok("get", "rolebinding", "editme", "-n", "edit-ns", "-o", "yaml"))
    assert [s["name"] for s in binding["subjects"]] == ["bob", "carol"]
    assert binding["roleRef"]["name"] == "view"
    k.ok(
        "create",
        "-f",
        "-",
        "-n",
        "edit-ns",
        stdin=yaml.safe_dump(
            {"apiVersion": "image.alauda.io/v1", "kind": "ImageStream", "metadata": {"name": "web"}}
        ),
    )
    edited = k.run("edit", "is", "web", "-n", "edit-ns", env=env)
    assert edited.returncode == 0, edited.stderr
    stream = yaml.safe_load(k.ok("get", "is", "web", "-n", "edit-ns", "-o", "yaml"))
    assert stream["spec"]["lookupPolicy"]["local"] is True


def test_create_imagestreamtag_from_another_tag(
    k: Kubectl, server: RegistryProcess, work: Path
) -> None:
    k.ok("create", "ns", "istag-create")
    digest = push_image(server, work, "istag-create/app:v1", "istag-create")
    istag = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStreamTag",
        "metadata": {"name": "release:stable", "namespace": "istag-create"},
        "tag": {"from": {"kind": "ImageStreamTag", "name": "app:v1"}},
    }
    out = k.ok("create", "-f", "-", stdin=yaml.safe_dump(istag))
    assert "imagestreamtag.image.alauda.io/release:stable created" in out
    wide = k.ok("get", "istag", "release:stable", "-n", "istag-create", "-o", "wide")
    assert digest in wide


def test_can_i_type_slash_name_checks_a_stream_named_so_and_subresource_the_pull_right(
    k: Kubectl, server: RegistryProcess, work: Path
) -> None:
    """docs/operations.md shows both `can-i` forms: `imagestreams/layers.image.alauda.io`
    is TYPE/NAME (a stream *named* layers.image.alauda.io), `--subresource=layers` is the
    right a pull or push is authorized with."""
    k.ok("create", "ns", "cani")
    k.ok("create", "role", "stream-reader", "--verb=get", "--resource=imagestreams", "-n", "cani")
    k.ok("create", "rolebinding", "reader", "--role=stream-reader", "--user=carol", "-n", "cani")
    k.ok(
        "create",
        "rolebinding",
        "pusher",
        "--clusterrole=system:image-pusher",
        "--user=dave",
        "-n",
        "cani",
    )
    named = ("auth", "can-i", "get", "imagestreams/layers.image.alauda.io", "-n", "cani")
    pull = ("auth", "can-i", "get", "imagestreams.image.alauda.io", "--subresource=layers")
    push_right = ("auth", "can-i", "update", "imagestreams", "--subresource=layers")
    assert k.run(*named, "--as=carol").stdout.strip() == "yes"  # may read the stream object
    assert k.run(*pull, "-n", "cani", "--as=carol").stdout.strip() == "no"  # may not pull
    assert k.run(*push_right, "-n", "cani", "--as=carol").stdout.strip() == "no"
    assert k.run(*pull, "-n", "cani", "--as=dave").stdout.strip() == "yes"
    assert k.run(*push_right, "-n", "cani", "--as=dave").stdout.strip() == "yes"
    assert k.run(*push_right, "-n", "team-a", "--as=dave").stdout.strip() == "no"
    # What the registry does agrees with the subresource form.
    push_image(server, work, "cani/app:v1", "cani")
    carol, dave = add_user_token(server, "carol"), add_user_token(server, "dave")
    with server.client(carol) as client:
        assert client.get("/v2/cani/app/manifests/v1").status_code in (401, 403)
    with server.client(dave) as client:
        assert client.get("/v2/cani/app/manifests/v1").status_code == 200
