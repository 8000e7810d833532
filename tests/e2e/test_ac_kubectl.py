"""`ac` and the real kubectl print the same thing for the same objects on one server.

Images are pushed with skopeo; `ac get|describe` output (tables, `-o wide|yaml|json|name`,
the `images.image.alauda.io` form) is compared byte for byte with kubectl's. `ac tag`,
`ac tag -d`, `ac delete istag` and `ac adm policy` are checked through kubectl
(`get`, `auth can-i --as`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.ac_images import layer, push, write_layout
from tests.e2e.ac_support import AC
from tests.e2e.kubectl_support import Kubectl
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("kubectl") is None,
    reason="needs skopeo and kubectl",
)
CAN_PULL = ("auth", "can-i", "get", "imagestreams/layers.image.alauda.io", "-n", "team-a")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("ack") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def k(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(server, tmp_path_factory.mktemp("kube-cache"))


@pytest.fixture(scope="module")
def digests(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("layouts")
    certs = server.cert_dir(root)
    base = layer("parity-base", 4000)
    demo = write_layout(root / "demo", [base, layer("demo", 900)], labels={"x": "y"})
    other = write_layout(root / "other", [base, layer("other", 700)], env=["MODE=on"])
    for layout, dest in [
        (demo, "team-a/demo:latest"),
        (demo, "team-a/demo:v1"),
        (demo, "team-a/demo:v2"),
        (other, "team-a/other:latest"),
    ]:
        push(layout[0], f"{server.host}/{dest}", server.admin_token, certs)
    return {"demo": demo[1].digest, "other": other[1].digest}


def ac(server: RegistryProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    return subprocess.run([AC, *args], env=env, capture_output=True, text=True, timeout=60)


def ac_ok(server: RegistryProcess, *args: str) -> str:
    result = ac(server, *args)
    assert result.returncode == 0, f"ac {' '.join(args)}: {result.stderr}"
    return result.stdout


_AGE = re.compile(r"(?<= )[0-9]+[smhdy](?:[0-9]+[smh])?(?= |$) *", re.MULTILINE)


def assert_same(server: RegistryProcess, k: Kubectl, *args: str) -> str:
    """Both print the same text; AGE/UPDATED cells (which tick between runs) are masked."""
    theirs = k.ok(*args)
    ours = ac_ok(server, *args)
    assert _AGE.sub("<age> ", ours) == _AGE.sub("<age> ", theirs), (
        f"ac and kubectl differ for {' '.join(args)}:\n{ours}\n---\n{theirs}"
    )
    return ours


@pytest.mark.parametrize(
    "args",
    [
        ("get", "images"),
        ("get", "is", "-n", "team-a"),
        ("get", "is", "-A"),
        ("get", "istag", "-n", "team-a"),
        ("get", "istag", "demo:latest", "-n", "team-a", "-o", "wide"),
        ("get", "is", "-n", "team-a", "-o", "yaml"),
        ("get", "is", "demo", "-n", "team-a", "-o", "json"),
        ("get", "istag", "demo:latest", "-n", "team-a", "-o", "yaml"),
        ("get", "images", "-o", "name"),
        ("get", "ns"),
        ("describe", "is", "demo", "-n", "team-a"),
        ("describe", "istag", "-n", "team-a"),
    ],
)
def test_get_and_describe_match_kubectl(
    server: RegistryProcess, k: Kubectl, digests: dict[str, str], args: tuple[str, ...]
) -> None:
    assert assert_same(server, k, *args).strip()


def test_image_by_full_resource_name_matches_kubectl(
    server: RegistryProcess, k: Kubectl, digests: dict[str, str]
) -> None:
    name = digests["demo"]
    out = assert_same(server, k, "get", "images.image.alauda.io", name, "-o", "yaml")
    assert f"name: {name}\n" in out and 'x: "y"' in out  # go-yaml quotes the YAML-1.1 bool
    described = assert_same(server, k, "describe", "images.image.alauda.io", name)
    assert described.startswith(f"Name:         {name}\n")
    isimage = f"demo@{name}"
    assert_same(server, k, "get", "isimage", isimage, "-n", "team-a", "-o", "yaml")


def test_tag_and_untag(server: RegistryProcess, k: Kubectl, digests: dict[str, str]) -> None:
    out = ac_ok(server, "tag", "team-a/demo:latest", "team-a/copy:stable", "-n", "team-a")
    assert out == f"Tag copy:stable set to {digests['demo']}.\n"
    jsonpath = "-o=jsonpath={.image.metadata.name}"
    assert k.ok("get", "istag", "copy:stable", "-n", "team-a", jsonpath) == digests["demo"]
    ac_ok(server, "tag", f"other@{digests['other']}", "copy:stable", "-n", "team-a")
    assert k.ok("get", "istag", "copy:stable", "-n", "team-a", jsonpath) == digests["other"]
    assert ac_ok(server, "tag", "-d", "copy:stable", "-n", "team-a") == (
        "Deleted tag team-a/copy:stable.\n"
    )
    assert "NotFound" in k.fails("get", "istag", "copy:stable", "-n", "team-a")
    missing = ac(server, "tag", "nope:latest", "copy:x", "-n", "team-a")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.stderr


def test_delete_istag_like_kubectl(
    server: RegistryProcess, k: Kubectl, digests: dict[str, str]
) -> None:
    ours = ac_ok(server, "delete", "istag", "demo:v2", "-n", "team-a")
    assert ours == 'imagestreamtag.image.alauda.io "demo:v2" deleted\n'
    assert "NotFound" in k.fails("get", "istag", "demo:v2", "-n", "team-a")
    again = ac(server, "delete", "istag", "demo:v2", "-n", "team-a")
    assert again.returncode == 1
    assert again.stderr == 'error: imagestreamtags.image.alauda.io "demo:v2" not found\n'


def can_pull(k: Kubectl, who: str) -> bool:
    result = k.run(*CAN_PULL, f"--as={who}")
    return result.stdout.strip() == "yes"


def test_policy_grants_and_revokes(
    server: RegistryProcess, k: Kubectl, digests: dict[str, str]
) -> None:
    k.ok("create", "ns", "app")
    k.ok("create", "sa", "builder", "-n", "app")
    k.ok("create", "sa", "bot", "-n", "team-a")
    builder, bot = "system:serviceaccount:app:builder", "system:serviceaccount:team-a:bot"
    assert not any(can_pull(k, who) for who in ("bob", builder, bot))
    policy = ("adm", "policy")
    out = ac_ok(server, *policy, "add-role-to-user", "system:image-puller", "bob", "-n", "team-a")
    assert out == 'clusterrole.rbac.authorization.k8s.io/system:image-puller added: "bob"\n'
    ac_ok(server, *policy, "add-role-to-user", "system:image-puller", builder, "-n", "team-a")
    ac_ok(server, *policy, "add-role-to-user", "system:image-puller", "-z", "bot", "-n", "team-a")
    ac_ok(server, *policy, "add-role-to-group", "system:image-puller", "devs", "-n", "team-a")
    assert all(can_pull(k, who) for who in ("bob", builder, bot))
    group = k.run(*CAN_PULL, "--as=carol", "--as-group=devs")
    assert group.stdout.strip() == "yes"
    ac_ok(server, *policy, "remove-role-from-user", "system:image-puller", "bob", "-n", "team-a")
    assert not can_pull(k, "bob") and can_pull(k, builder)
    ac_ok(
        server,
        *policy,
        "remove-role-from-user",
        "system:image-puller",
        builder,
        "-z",
        "bot",
        "-n",
        "team-a",
    )
    assert not any(can_pull(k, who) for who in ("bob", builder, bot))
    assert k.run(*CAN_PULL, "--as=carol", "--as-group=devs").stdout.strip() == "yes"
