"""Immutable tags end to end: an `ImageTagPolicy` written with the real kubectl, and every
client that could move or delete a protected tag refused with a message naming the policy
(skopeo push and delete, kubectl on ImageStreamTags, ImageStreams and Images, `ac tag`),
while an identical re-push succeeds, a namespace admin may lift the policy and a pusher may
not, and `ac adm prune images` keeps (and says it keeps) the protected image.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.ac_images import layer, write_layout
from tests.e2e.ac_support import ac, login_admin
from tests.e2e.kubectl_support import Kubectl, add_user_token
from tests.support.server import RegistryProcess

REFUSED = 'tag v1.0 of team-a/app is immutable by ImageTagPolicy "release"'


def said(result: subprocess.CompletedProcess[str]) -> str:
    """skopeo's error line, with the quotes its log format (and the JSON body it quotes)
    escape put back."""
    return re.sub(r'\\+"', '"', result.stderr)


def policy_json(name: str, namespace: str, streams: list[str], tags: list[str]) -> str:
    return json.dumps(
        {
            "apiVersion": "image.alauda.io/v1",
            "kind": "ImageTagPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"immutableTags": [{"imageStreams": streams, "tags": tags}]},
        }
    )


@dataclass
class Env:
    server: RegistryProcess
    k: Kubectl
    root: Path
    certs: Path
    alice: str  # namespace admin of team-a and team-b
    bob: str  # image pusher and deleter there
    home: Path  # `ac` logged in as the cluster admin

    def skopeo_push(self, seed: str, dest: str, token: str) -> subprocess.CompletedProcess[str]:
        layout = self.root / f"layout-{seed}"
        if not layout.exists():
            write_layout(layout, [layer(seed, 2048)])
        return subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--preserve-digests",
                f"--dest-registry-token={token}",
                f"--dest-cert-dir={self.certs}",
                f"oci:{layout}:img",
                f"docker://{self.server.host}/{dest}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def digest(self, seed: str) -> str:
        index = json.loads((self.root / f"layout-{seed}" / "index.json").read_text())
        return str(index["manifests"][0]["digest"])

    def current(self, namespace: str, istag: str) -> str:
        return self.k.ok(
            "-n", namespace, "get", "istag", istag, "-o", "jsonpath={.image.metadata.name}"
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("tagpolicy")
    with RegistryProcess(data_dir=root / "data") as server:
        k = Kubectl(server, root / "kube-cache")
        for ns in ("team-a", "team-b", "team-p"):
            k.ok("create", "namespace", ns)
            k.ok("-n", ns, "create", "rolebinding", "alice", "--clusterrole=admin", "--user=alice")
            for role in ("system:image-pusher", "system:image-deleter"):
                name = "bob-" + role.rsplit("-", 1)[-1]
                k.ok("-n", ns, "create", "rolebinding", name, f"--clusterrole={role}", "--user=bob")
        yield Env(
            server,
            k,
            root,
            server.cert_dir(root / "certs"),
            add_user_token(server, "alice"),
            add_user_token(server, "bob"),
            login_admin(server, root / "home"),
        )


@pytest.fixture(scope="module")
def release(env: Env) -> Env:
    """team-a/app: v1.0 -> image `one`, latest -> image `two`; policy `release` on v*."""
    for seed, tag in (("one", "v1.0"), ("two", "latest")):
        result = env.skopeo_push(seed, f"team-a/app:{tag}", env.bob)
        assert result.returncode == 0, result.stderr
    out = env.k.ok(
        "apply",
        "-f",
        "-",
        token=env.alice,
        stdin=policy_json("release", "team-a", ["*"], ["v*"]),
    )
    assert "imagetagpolicy.image.alauda.io/release created" in out
    return env


def test_kubectl_manages_policies_like_any_resource(release: Env) -> None:
    k = release.k
    resources = k.ok("api-resources", "--api-group=image.alauda.io", "--namespaced=true")
    assert any(
        line.split()[0] == "imagetagpolicies" and line.split()[-1] == "ImageTagPolicy"
        for line in resources.splitlines()
    )
    table = k.ok("-n", "team-a", "get", "imagetagpolicies").splitlines()
    assert table[0].split() == ["NAME", "IMAGE", "STREAMS", "IMMUTABLE", "TAGS", "AGE"]
    assert table[1].split()[:3] == ["release", "*", "v*"]
    stored = json.loads(k.ok("-n", "team-a", "get", "imagetagpolicy", "release", "-o", "json"))
    assert stored["spec"] == {"immutableTags": [{"imageStreams": ["*"], "tags": ["v*"]}]}
    # apply again: unchanged; a bad glob and a bad shape: 422 with the fields named
    same = k.ok("apply", "-f", "-", stdin=policy_json("release", "team-a", ["*"], ["v*"]))
    assert "imagetagpolicy.image.alauda.io/release unchanged" in same
    bad = k.run("apply", "-f", "-", stdin=policy_json("bad", "team-a", ["App"], ["v[1"]))
    assert bad.returncode != 0
    assert 'The ImageTagPolicy "bad" is invalid' in bad.stderr
    assert "spec.immutableTags[0].imageStreams[0]" in bad.stderr
    assert "spec.immutableTags[0].tags[0]" in bad.stderr and "unclosed '['" in bad.stderr
    empty = k.run("apply", "-f", "-", stdin=policy_json("bad", "team-a", [], ["v*"]))
    assert "spec.immutableTags[0].imageStreams: Required value" in empty.stderr
    assert "bad" not in k.ok("-n", "team-a", "get", "imagetagpolicies", "-o", "name")


def test_a_watch_sees_policies_come_and_go(release: Env) -> None:
    k = release.k
    watch = k.popen("-n", "team-b", "get", "imagetagpolicies", "--watch", "-o", "name")
    try:
        k.ok("apply", "-f", "-", stdin=policy_json("watched", "team-b", ["x"], ["y"]))
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "imagetagpolicy.image.alauda.io/watched"
    finally:
        watch.kill()
        watch.communicate(timeout=30)
    k.ok("-n", "team-b", "delete", "imagetagpolicy", "watched")


def test_only_a_namespace_admin_writes_policies(release: Env) -> None:
    """admin writes; edit (like view) only reads; the image roles get nothing."""
    k, bob, alice = release.k, release.bob, release.alice
    carol = add_user_token(release.server, "carol")
    k.ok("-n", "team-a", "create", "rolebinding", "carol", "--clusterrole=edit", "--user=carol")

    def can(verb: str, token: str) -> str:
        return k.run("-n", "team-a", "auth", "can-i", verb, "imagetagpolicies", token=token).stdout

    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert can(verb, alice).strip() == "yes", verb
        assert can(verb, bob).strip() == "no", verb
        assert can(verb, carol).strip() == ("yes" if verb in ("get", "list", "watch") else "no")
    refused = k.fails("-n", "team-a", "delete", "imagetagpolicy", "release", token=bob)
    assert "Forbidden" in refused and "imagetagpolicies" in refused
    refused = k.fails("-n", "team-a", "delete", "imagetagpolicy", "release", token=carol)
    assert "Forbidden" in refused
    assert "release" in k.ok("-n", "team-a", "get", "imagetagpolicies", "-o", "name", token=carol)
    assert "release" in k.ok("-n", "team-a", "get", "imagetagpolicies", "-o", "name")


def test_every_client_is_refused_with_the_policy_named(release: Env) -> None:
    env, k = release, release.k
    one, two = env.digest("one"), env.digest("two")
    # a push of another image to the tag: DENIED
    moved = env.skopeo_push("two", "team-a/app:v1.0", env.bob)
    assert moved.returncode != 0 and REFUSED in said(moved), moved.stderr
    assert "denied" in moved.stderr.lower()
    # the identical re-push (a retry) succeeds; a new tag that matches may be created
    again = env.skopeo_push("one", "team-a/app:v1.0", env.bob)
    assert again.returncode == 0, again.stderr
    new = env.skopeo_push("two", "team-a/app:v2.0", env.bob)
    assert new.returncode == 0, new.stderr
    # skopeo delete by tag and by digest (the image an immutable tag points at)
    for ref in ("team-a/app:v1.0", f"team-a/app@{one}"):
        deleted = subprocess.run(
            [
                "skopeo",
                "delete",
                f"--registry-token={env.bob}",
                f"--cert-dir={env.certs}",
                f"docker://{env.server.host}/{ref}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert deleted.returncode != 0 and REFUSED in said(deleted), deleted.stderr
    # kubectl: delete the ImageStreamTag (a deleter), the ImageStream, the Image; move the
    # tag with apply (the namespace admin)
    istag = k.fails("-n", "team-a", "delete", "istag", "app:v1.0", token=env.bob)
    assert 'imagestreamtags.image.alauda.io "app:v1.0" is forbidden: ' + REFUSED in istag
    stream = k.fails("-n", "team-a", "delete", "imagestream", "app", token=env.alice)
    assert "Forbidden" in stream and "tag v1.0 of team-a/app is immutable" in stream
    image = k.fails("delete", "image", one)
    assert f'images.image.alauda.io "{one}" is forbidden: ' + REFUSED in image
    applied = k.run(
        "apply",
        "-f",
        "-",
        token=env.alice,
        stdin=json.dumps(
            {
                "apiVersion": "image.alauda.io/v1",
                "kind": "ImageStreamTag",
                "metadata": {"name": "app:v1.0", "namespace": "team-a"},
                "tag": {"from": {"kind": "ImageStreamTag", "name": "app:latest"}},
            }
        ),
    )
    assert applied.returncode != 0 and REFUSED in applied.stderr, applied.stderr
    # ac tag (an ImageStreamMapping) and ac tag -d (an ImageStreamTag delete)
    tagged = ac(env.home, "tag", "team-a/app:latest", "team-a/app:v1.0", check=False)
    assert tagged.returncode != 0 and REFUSED in tagged.stderr, tagged.stderr
    untagged = ac(env.home, "tag", "-d", "team-a/app:v1.0", check=False)
    assert untagged.returncode != 0 and REFUSED in untagged.stderr, untagged.stderr
    # an imagestreams/status update (a cluster admin's) putting another image on top of v1.0
    stream_obj = json.loads(k.ok("-n", "team-a", "get", "imagestream", "app", "-o", "json"))
    for entry in stream_obj["status"]["tags"]:
        if entry["tag"] == "v1.0":
            entry["items"].insert(0, {"image": two})
    status = k.run("replace", "--subresource=status", "-f", "-", stdin=json.dumps(stream_obj))
    assert status.returncode != 0 and REFUSED in status.stderr, status.stderr
    # ImageStream spec.tags are stored, never acted on: applying one moves nothing
    spec = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": "app", "namespace": "team-a"},
        "spec": {
            "tags": [{"name": "v1.0", "from": {"kind": "ImageStreamTag", "name": "app:latest"}}]
        },
    }
    k.ok("apply", "-f", "-", token=env.alice, stdin=json.dumps(spec))
    # nothing moved; tags the policy does not match still move
    assert env.current("team-a", "app:v1.0") == one
    assert env.current("team-a", "app:v2.0") == two
    ac(env.home, "tag", "team-a/app:v1.0", "team-a/app:latest")
    assert env.current("team-a", "app:latest") == one


def test_admin_deletes_the_policy_then_the_tag_moves(release: Env) -> None:
    env, k = release, release.k
    assert env.skopeo_push("three", "team-b/app:v1", env.bob).returncode == 0
    k.ok("apply", "-f", "-", token=env.alice, stdin=policy_json("freeze", "team-b", ["app"], ["*"]))
    moved = env.skopeo_push("four", "team-b/app:v1", env.bob)
    assert 'tag v1 of team-b/app is immutable by ImageTagPolicy "freeze"' in said(moved)
    assert k.run("-n", "team-b", "delete", "imagetagpolicy", "freeze", token=env.bob).returncode
    out = k.ok("-n", "team-b", "delete", "imagetagpolicy", "freeze", token=env.alice)
    assert 'imagetagpolicy.image.alauda.io "freeze" deleted' in out
    moved = env.skopeo_push("four", "team-b/app:v1", env.bob)
    assert moved.returncode == 0, moved.stderr
    assert env.current("team-b", "app:v1") == env.digest("four")


def test_prune_keeps_the_image_of_an_immutable_tag_and_says_why(release: Env) -> None:
    """Last in the module: a `--all` prune of back-dated history removes everything else."""
    env, k = release, release.k
    assert env.skopeo_push("five", "team-p/svc:v1", env.bob).returncode == 0
    assert env.skopeo_push("six", "team-p/svc:dev", env.bob).returncode == 0
    k.ok("apply", "-f", "-", stdin=policy_json("keep", "team-p", ["svc"], ["v*"]))
    when = datetime.now(UTC) - timedelta(days=10)
    engine = create_engine(f"sqlite:///{env.server.data_dir / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE tag_events SET created = :t"), {"t": when})
        conn.execute(text("UPDATE manifests SET created = :t, pushed = :t"), {"t": when})
    engine.dispose()
    five, six = env.digest("five"), env.digest("six")
    why = f'Kept image {five}: tag v1 of team-p/svc is immutable by ImageTagPolicy "keep"'
    dry = ac(env.home, "adm", "prune", "images", "--all")
    assert why in dry.stdout and f"Deleting image {six}" in dry.stdout
    assert f"Deleting image {five}" not in dry.stdout
    done = ac(env.home, "adm", "prune", "images", "--all", "--confirm")
    assert why in done.stdout and f"Deleting image {six}" in done.stdout
    assert env.current("team-p", "svc:v1") == five
    names = k.ok("get", "images", "-o", "name")
    assert f"image.image.alauda.io/{five}" in names and six not in names
