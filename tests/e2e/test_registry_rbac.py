"""Registry requests obey RBAC: skopeo with service-account and user tokens, and anonymous pulls."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kubectl_support import Kubectl, add_user_token, push_image
from tests.support.server import RegistryProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("rbac") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def k(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(server, tmp_path_factory.mktemp("kube-cache"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def _inspect(
    server: RegistryProcess, work: Path, ref: str, token: str | None
) -> subprocess.CompletedProcess[str]:
    creds = [f"--registry-token={token}"] if token else ["--no-creds"]
    return subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            *creds,
            f"--cert-dir={server.cert_dir(work)}",
            f"docker://{server.host}/{ref}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_service_account_pulls_only_after_binding_and_only_there(
    k: Kubectl, server: RegistryProcess, work: Path
) -> None:
    for ns in ("team-a", "team-b", "app"):
        k.ok("create", "ns", ns)
    push_image(server, work, "team-a/demo:latest", "a")
    push_image(server, work, "team-b/demo:latest", "b")
    k.ok("create", "sa", "builder", "-n", "app")
    token = k.ok("create", "token", "builder", "-n", "app")
    assert _inspect(server, work, "team-a/demo:latest", token).returncode != 0
    k.ok(
        "create",
        "rolebinding",
        "pull",
        "--clusterrole=system:image-puller",
        "--serviceaccount=app:builder",
        "-n",
        "team-a",
    )
    assert _inspect(server, work, "team-a/demo:latest", token).returncode == 0
    assert _inspect(server, work, "team-b/demo:latest", token).returncode != 0


def test_pusher_pushes_into_its_namespace_only(
    k: Kubectl, server: RegistryProcess, work: Path
) -> None:
    k.ok("create", "ns", "push-a")
    k.ok("create", "ns", "push-b")
    k.ok(
        "create",
        "rolebinding",
        "push",
        "--clusterrole=system:image-pusher",
        "--user=paula",
        "-n",
        "push-a",
    )
    token = add_user_token(server, "paula")
    push_image(server, work, "push-a/app:v1", "pa", token=token)
    with pytest.raises(subprocess.CalledProcessError):
        push_image(server, work, "push-b/app:v1", "pb", token=token)
    assert "app" in k.ok("get", "is", "-n", "push-a")


def test_anonymous_pull_only_where_unauthenticated_is_bound(
    k: Kubectl, server: RegistryProcess, work: Path
) -> None:
    k.ok("create", "ns", "public")
    k.ok("create", "ns", "private")
    push_image(server, work, "public/site:latest", "pub")
    push_image(server, work, "private/site:latest", "priv")
    k.ok(
        "create",
        "rolebinding",
        "anon",
        "--clusterrole=system:image-puller",
        "--group=system:unauthenticated",
        "-n",
        "public",
    )
    assert _inspect(server, work, "public/site:latest", None).returncode == 0
    assert _inspect(server, work, "private/site:latest", None).returncode != 0
