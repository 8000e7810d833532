"""Hostile references, replayed with the real kubectl against a server subprocess.

A RoleBinding (or ClusterRoleBinding) may only name a role that exists, unless its creator
holds `bind` on that role: otherwise a namespace admin could pre-bind a role a cluster admin
creates later. And no API path may make an image stream reference an image its caller could
not pull: a namespace-scoped pruner writing `imagestreams/status`, an ImageStreamTag, an
ImageStreamMapping or a prune undo would otherwise copy another namespace's image into a
stream whose readers then see its manifest and config.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kubectl_support import Kubectl, add_user_token, push_image
from tests.support.server import RegistryProcess

RBAC = "rbac.authorization.k8s.io/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("references") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def k(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    kubectl = Kubectl(server, tmp_path_factory.mktemp("kube-cache"))
    kubectl.ok("api-resources")  # discovery cached as admin: later refusals are the request's
    return kubectl


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def _apply(k: Kubectl, obj: dict[str, object], token: str | None = None) -> str:
    return k.ok("create", "-f", "-", token=token, stdin=yaml.safe_dump(obj))


def _cluster_role(name: str, rules: list[dict[str, object]]) -> dict[str, object]:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


# --- bindings to roles that do not exist ---------------------------------


def test_namespace_admin_cannot_prebind_a_role_created_later(
    k: Kubectl, server: RegistryProcess
) -> None:
    k.ok("create", "ns", "prebind")
    k.ok(
        "create",
        "rolebinding",
        "carol-admin",
        "--clusterrole=admin",
        "--user=carol",
        "-n",
        "prebind",
    )
    carol = add_user_token(server, "carol")

    err = k.fails(
        "create", "rolebinding", "later", "--clusterrole=future-admin", "--user=carol",
        "-n", "prebind", token=carol,
    )  # fmt: skip
    assert 'clusterroles.rbac.authorization.k8s.io "future-admin" not found' in err
    err = k.fails(
        "create", "rolebinding", "later-role", "--role=future-role", "--user=carol",
        "-n", "prebind", token=carol,
    )  # fmt: skip
    assert 'roles.rbac.authorization.k8s.io "future-role" not found' in err

    # the cluster admin creates the role later: carol did not get it in advance
    _apply(
        k, _cluster_role("future-admin", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
    )
    assert "later" not in k.ok("get", "rolebinding", "-n", "prebind", "-o", "name")
    assert k.run("auth", "can-i", "delete", "namespaces", token=carol).stdout.strip() == "no"
    # and binding it now is the ordinary escalation refusal
    err = k.fails(
        "create", "rolebinding", "later", "--clusterrole=future-admin", "--user=carol",
        "-n", "prebind", token=carol,
    )  # fmt: skip
    assert "attempting to grant RBAC permissions not currently held" in err


def test_cluster_binding_to_a_missing_role_needs_bind(k: Kubectl, server: RegistryProcess) -> None:
    _apply(
        k,
        _cluster_role(
            "binding-writer",
            [{"verbs": ["create", "get"], "apiGroups": ["rbac.authorization.k8s.io"],
              "resources": ["clusterrolebindings"]}],
        ),
    )  # fmt: skip
    k.ok(
        "create", "clusterrolebinding", "erin-writer", "--clusterrole=binding-writer", "--user=erin"
    )
    erin = add_user_token(server, "erin")
    err = k.fails(
        "create", "clusterrolebinding", "erin-later", "--clusterrole=not-yet", "--user=erin",
        token=erin,
    )  # fmt: skip
    assert 'clusterroles.rbac.authorization.k8s.io "not-yet" not found' in err
    assert "erin-later" not in k.ok("get", "clusterrolebinding", "-o", "name")

    # `bind` on that role name is what kube asks for to bind a role that is not there yet
    _apply(
        k,
        _cluster_role(
            "not-yet-binder",
            [{"verbs": ["bind"], "apiGroups": ["rbac.authorization.k8s.io"],
              "resources": ["clusterroles"], "resourceNames": ["not-yet"]}],
        ),
    )  # fmt: skip
    k.ok(
        "create", "clusterrolebinding", "erin-binder", "--clusterrole=not-yet-binder", "--user=erin"
    )
    out = k.ok(
        "create", "clusterrolebinding", "erin-later", "--clusterrole=not-yet", "--user=erin",
        token=erin,
    )  # fmt: skip
    assert "clusterrolebinding.rbac.authorization.k8s.io/erin-later created" in out
    # a cluster admin (system:masters) may pre-bind too, as in Kubernetes (a namespace of its
    # own, so this test does not depend on another one having run first)
    k.ok("create", "ns", "admin-prebind")
    k.ok(
        "create",
        "rolebinding",
        "admin-later",
        "--clusterrole=also-not-yet",
        "--user=x",
        "-n",
        "admin-prebind",
    )


# --- images copied into a stream -----------------------------------------

MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
MISSING = "sha256:" + "5" * 64


@pytest.fixture(scope="module")
def images(k: Kubectl, server: RegistryProcess, work: Path) -> dict[str, str]:
    """team-a/secret:v1, and team-b/app:v1 pushed twice (history: new, old), team-b/private:v1."""
    k.ok("create", "ns", "team-a")
    k.ok("create", "ns", "team-b")
    return {
        "secret": push_image(server, work, "team-a/secret:v1", "team-a-secret"),
        "old": push_image(server, work, "team-b/app:v1", "team-b-old"),
        "new": push_image(server, work, "team-b/app:v1", "team-b-new"),
        "private": push_image(server, work, "team-b/private:v1", "team-b-private"),
    }


def _tags(k: Kubectl, namespace: str) -> str:
    return k.ok("get", "istag", "-n", namespace, "-o", "name")


def test_namespace_pruner_cannot_copy_an_image_in_through_status(
    k: Kubectl, server: RegistryProcess, images: dict[str, str]
) -> None:
    for role in ("system:image-pruner", "view"):
        k.ok(
            "create", "rolebinding", f"mallory-{role.replace(':', '-')}", f"--clusterrole={role}",
            "--user=mallory", "-n", "team-b",
        )  # fmt: skip
    mallory = add_user_token(server, "mallory")

    def put_status(extra_tag: dict[str, object]) -> subprocess.CompletedProcess[str]:
        stream = json.loads(k.ok("get", "is", "app", "-n", "team-b", "-o", "json", token=mallory))
        stream["status"]["tags"].append(extra_tag)
        return k.run(
            "replace", "--subresource=status", "-f", "-", token=mallory, stdin=json.dumps(stream)
        )

    # The attack: point a team-b tag at team-a's image through imagestreams/status.
    stolen = put_status({"tag": "stolen", "items": [{"image": images["secret"]}]})
    assert stolen.returncode != 0, stolen.stdout
    assert "Forbidden" in stolen.stderr
    assert 'User "mallory" cannot get resource "imagestreams/layers"' in stolen.stderr
    assert "stolen" not in _tags(k, "team-b")
    with server.client(mallory) as client:
        manifest = f"/v2/team-b/app/manifests/{images['secret']}"
        assert client.get(manifest, headers={"Accept": MANIFEST_ACCEPT}).status_code == 404
    # a digest nobody stores answers the same, so the write cannot probe for digests
    probe = put_status({"tag": "probe", "items": [{"image": MISSING}]})
    assert probe.returncode != 0 and "Forbidden" in probe.stderr

    # The pruner's own work still goes through: v1 back to the stream's older image.
    stream = json.loads(k.ok("get", "is", "app", "-n", "team-b", "-o", "json", token=mallory))
    v1 = next(t for t in stream["status"]["tags"] if t["tag"] == "v1")
    v1["items"].insert(0, {"image": images["old"]})
    k.ok("replace", "--subresource=status", "-f", "-", token=mallory, stdin=json.dumps(stream))
    current = k.ok(
        "get", "istag", "app:v1", "-n", "team-b", "-o", "jsonpath={.image.metadata.name}"
    )
    assert current == images["old"]
    # and a cluster administrator may still put any stored image on top
    stream = json.loads(k.ok("get", "is", "private", "-n", "team-b", "-o", "json"))
    stream["status"]["tags"].append({"tag": "copied", "items": [{"image": images["secret"]}]})
    k.ok("replace", "--subresource=status", "-f", "-", stdin=json.dumps(stream))
    assert "private:copied" in _tags(k, "team-b")


def _istag(name: str, source: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStreamTag",
        "metadata": {"name": name, "namespace": "team-b"},
        "tag": {"from": source},
    }


def test_tags_and_mappings_need_pull_on_the_source_even_in_the_same_namespace(
    k: Kubectl, server: RegistryProcess, images: dict[str, str]
) -> None:
    """A tagger who may pull only `app` (resourceNames) cannot tag or map `private`'s image."""
    role: dict[str, object] = {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"name": "app-tagger", "namespace": "team-b"},
        "rules": [
            {"verbs": ["get"], "apiGroups": ["image.alauda.io"],
             "resources": ["imagestreams/layers"], "resourceNames": ["app"]},
            {"verbs": ["create", "update", "get"], "apiGroups": ["image.alauda.io"],
             "resources": ["imagestreamtags", "imagestreammappings"]},
        ],
    }  # fmt: skip
    _apply(k, role)
    k.ok("create", "rolebinding", "tina-tagger", "--role=app-tagger", "--user=tina", "-n", "team-b")
    tina = add_user_token(server, "tina")

    for source in (
        {"kind": "ImageStreamTag", "name": "private:v1"},
        {"kind": "ImageStreamImage", "name": f"private@{images['private']}"},
        {"kind": "DockerImage", "name": f"{server.host}/team-b/private:v1"},
        {"kind": "ImageStreamTag", "name": "private:no-such-tag"},  # 403 too, not 404
        {"kind": "ImageStreamTag", "name": "secret:v1", "namespace": "team-a"},
    ):
        refused = k.run(
            "create", "-f", "-", token=tina, stdin=yaml.safe_dump(_istag("out:v1", source))
        )
        assert refused.returncode != 0, source
        assert "Forbidden" in refused.stderr and "imagestreams/layers" in refused.stderr, source
    assert "out:" not in _tags(k, "team-b")
    allowed = _istag("out:v1", {"kind": "ImageStreamTag", "name": "app:v1"})
    k.ok("create", "-f", "-", token=tina, stdin=yaml.safe_dump(allowed))
    assert "out:v1" in _tags(k, "team-b")

    with server.client(tina) as client:

        def mapping(image: str) -> int:
            body = {
                "metadata": {"name": "mapped"},
                "tag": "v1",
                "image": {"metadata": {"name": image}},
            }
            path = "/apis/image.alauda.io/v1/namespaces/team-b/imagestreammappings"
            return client.post(path, json=body).status_code

        # unreadable and unknown digests answer alike: 403
        assert [mapping(images["private"]), mapping(images["secret"]), mapping(MISSING)] == [
            403
        ] * 3
        assert mapping(images["old"]) == 201
    assert "mapped:v1" in _tags(k, "team-b")


def test_prune_undo_needs_pull_on_what_it_restores(
    k: Kubectl, server: RegistryProcess, work: Path, images: dict[str, str]
) -> None:
    """Last in the module: the confirmed prune removes older history everywhere."""
    old = push_image(server, work, "team-a/history:v1", "history-old")
    push_image(server, work, "team-a/history:v1", "history-new")
    prunes = "/apis/image.alauda.io/v1/imageprunes"
    with server.client(server.admin_token) as admin:
        spec = {"keepTagRevisions": 1, "keepYoungerThan": "0"}
        done = admin.post(prunes, json={"spec": spec})
        assert done.status_code == 201, done.text
        run = done.json()["status"]["runID"]
    assert old not in k.ok("get", "images", "-o", "name")
    _apply(
        k,
        _cluster_role(
            "undo-operator",
            [{"verbs": ["create"], "apiGroups": ["image.alauda.io"], "resources": ["imageprunes"]}],
        ),
    )
    k.ok(
        "create",
        "clusterrolebinding",
        "ursula-undo",
        "--clusterrole=undo-operator",
        "--user=ursula",
    )
    ursula = add_user_token(server, "ursula")
    with server.client(ursula) as client:
        refused = client.post(prunes, json={"spec": {"undo": run}})
        assert refused.status_code == 403, refused.text
        assert 'cannot get resource "imagestreams/layers"' in refused.json()["message"]
        assert old not in k.ok("get", "images", "-o", "name")
        # the image pruner's role reads every image, so it may undo
        k.ok(
            "create", "clusterrolebinding", "ursula-pruner", "--clusterrole=system:image-pruner",
            "--user=ursula",
        )  # fmt: skip
        undone = client.post(prunes, json={"spec": {"undo": run}})
        assert undone.status_code == 201, undone.text
    assert old in k.ok("get", "images", "-o", "name")
