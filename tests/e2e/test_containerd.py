"""containerd (`ctr`) and the kubelet's CRI image service against a real HTTPS server.

containerd asks the token endpoint with the OAuth2 form (`POST /v2/token`) whenever it holds
credentials, and the kubelet pulls through containerd's CRI `ImageService/PullImage` with an
`AuthConfig` made from an image-pull secret. One registry (htpasswd, HTTPS with its own CA)
and one containerd per module: containerd runs on a private socket, root and state dir
under the test's tmp dir, with a `hosts.toml` that points at the registry and its CA
(docs/operations.md, "containerd and the kubelet"). The CRI client is built here from
hand-made descriptors of the few CRI v1 messages it needs (field numbers as in the CRI
API's api.proto), so no generated code is kept.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from tests.e2e.oci_support import Layout, build_layout, skopeo
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.skipif(
    shutil.which("containerd") is None
    or shutil.which("ctr") is None
    or shutil.which("skopeo") is None
    or os.geteuid() != 0,
    reason="needs containerd, ctr and skopeo, and root (containerd's snapshotters)",
)

PASSWORD = "ctr-Pa55-wörd"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TOKEN_REQUEST = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
CRI_NAMESPACE = "k8s.io"  # where the CRI plugin keeps the kubelet's images


@dataclass
class World:
    server: RegistryProcess
    layout: Layout
    puller_token: str  # service account ctr-a/puller, bound to system:image-puller in ctr-a

    def ref(self, repo: str, tag: str = "v1") -> str:
        return f"{self.server.host}/{repo}:{tag}"


def _bind(admin: httpx.Client, ns: str, subject: dict[str, str], role: str) -> None:
    if subject["kind"] != "ServiceAccount":
        subject = {**subject, "apiGroup": "rbac.authorization.k8s.io"}
    body = {
        "metadata": {"name": f"{subject['name'].replace(':', '-')}-{role.replace(':', '-')}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }
    reply = admin.post(f"{RBAC}/namespaces/{ns}/rolebindings", json=body)
    assert reply.status_code == 201, reply.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("containerd-registry")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (root / "htpasswd").write_text(f"alice:{hashed}\n")
    # The failed-password throttle is not what this module tests; a 429 must not be what
    # makes a wrong password fail here.
    with RegistryProcess(
        data_dir=root / "data",
        extra_args=["--htpasswd-file", str(root / "htpasswd")],
        env={"IMAGE_REGISTRY_FAILED_LOGINS_PER_MINUTE": "0"},
    ) as server:
        with server.client(server.admin_token) as admin:
            for ns in ("ctr-a", "ctr-b"):
                reply = admin.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
                assert reply.status_code == 201, reply.text
            _bind(admin, "ctr-a", {"kind": "User", "name": "alice"}, "system:image-pusher")
            accounts = "/api/v1/namespaces/ctr-a/serviceaccounts"
            assert admin.post(accounts, json={"metadata": {"name": "puller"}}).status_code == 201
            _bind(admin, "ctr-a", {"kind": "ServiceAccount", "name": "puller",
                  "namespace": "ctr-a"}, "system:image-puller")  # fmt: skip
            minted = admin.post(f"{accounts}/puller/token", json=TOKEN_REQUEST)
            assert minted.status_code == 201, minted.text
            puller = str(minted.json()["status"]["token"])
        layout = build_layout(root / "layout", "containerd")
        certs = server.cert_dir(root)
        for repo in ("ctr-a/app", "ctr-b/app"):
            copied = skopeo(
                "copy",
                "--dest-cert-dir",
                str(certs),
                "--dest-creds",
                f"admin:{server.admin_token}",
                f"oci:{layout.path}:v1",
                f"docker://{server.host}/{repo}:v1",
            )
            assert copied.returncode == 0, copied.stderr
        yield World(server, layout, puller)


@dataclass
class Containerd:
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def hosts_dir(self) -> Path:
        return self.root / "certs.d"

    def ctr(self, *args: str, namespace: str = "test") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=180,
        )

    def pull(self, ref: str, *options: str) -> subprocess.CompletedProcess[str]:
        return self.ctr("images", "pull", "--hosts-dir", str(self.hosts_dir), *options, ref)

    def push(self, ref: str, *options: str) -> subprocess.CompletedProcess[str]:
        return self.ctr("images", "push", "--hosts-dir", str(self.hosts_dir), *options, ref)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _config(root: Path) -> str:
    """containerd config version 2, every path under `root`; the CRI plugin reads registry
    hosts from `certs.d` (`config_path`), never from the deprecated `mirrors`."""
    return f"""version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd-ttrpc.sock"
[debug]
  address = "{root}/containerd-debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{root}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{root}/cni/bin"
    conf_dir = "{root}/cni/conf"
"""


def _hosts_toml(server: RegistryProcess) -> str:
    return f"""server = "{server.url}"

[host."{server.url}"]
  capabilities = ["pull", "resolve", "push"]
  ca = "{server.ca_file}"
"""


@pytest.fixture(scope="module")
def containerd(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    root = tmp_path_factory.mktemp("ctrd")
    (root / "config.toml").write_text(_config(root))
    hosts = root / "certs.d" / world.server.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(_hosts_toml(world.server))
    log = open(root / "containerd.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        ["containerd", "--config", str(root / "config.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    daemon = Containerd(root, proc)
    try:
        deadline = time.monotonic() + 60
        plugins = ""
        while time.monotonic() < deadline and proc.poll() is None:
            if daemon.socket.exists():
                listed = daemon.ctr("plugins", "ls")
                plugins = listed.stdout
                if listed.returncode == 0 and any(
                    line.split()[1:2] == ["cri"] and line.split()[-1] == "ok"
                    for line in plugins.splitlines()
                    if len(line.split()) >= 4
                ):
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"containerd's CRI plugin did not load: {root}/containerd.log")
        yield daemon
    finally:
        daemon.stop()
        log.close()


@pytest.fixture(scope="module")
def pulled(world: World, containerd: Containerd) -> str:
    """ctr-a/app:v1, pulled once with alice's password (the push test pushes it on)."""
    ref = world.ref("ctr-a/app")
    result = containerd.pull(ref, "--user", f"alice:{PASSWORD}")
    assert result.returncode == 0, result.stderr
    return ref


def _image_digest(containerd: Containerd, ref: str, namespace: str = "test") -> str:
    listed = containerd.ctr("images", "ls", namespace=namespace)
    for line in listed.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == ref:
            return fields[2]
    raise AssertionError(f"{ref} not in containerd's images: {listed.stdout}")


def test_ctr_pull_with_an_htpasswd_user_and_by_digest(
    world: World, containerd: Containerd, pulled: str
) -> None:
    assert _image_digest(containerd, pulled) == world.layout.manifest_digest
    by_digest = f"{world.server.host}/ctr-a/app@{world.layout.manifest_digest}"
    result = containerd.pull(by_digest, "--user", f"alice:{PASSWORD}")
    assert result.returncode == 0, result.stderr
    assert _image_digest(containerd, by_digest) == world.layout.manifest_digest


def test_ctr_push_with_an_htpasswd_user(world: World, containerd: Containerd, pulled: str) -> None:
    target = world.ref("ctr-a/pushed", "v2")
    assert containerd.ctr("images", "tag", pulled, target).returncode == 0
    result = containerd.push(target, "--user", f"alice:{PASSWORD}")
    assert result.returncode == 0, result.stderr
    with world.server.client(world.server.admin_token) as admin:
        reply = admin.get(
            "/v2/ctr-a/pushed/manifests/v2",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["docker-content-digest"] == world.layout.manifest_digest


def test_a_puller_service_account_pulls_and_is_refused_push_and_other_namespaces(
    world: World, containerd: Containerd, pulled: str
) -> None:
    user = f"puller:{world.puller_token}"
    result = containerd.pull(world.ref("ctr-a/app"), "--user", user)
    assert result.returncode == 0, result.stderr
    target = world.ref("ctr-a/by-puller")
    assert containerd.ctr("images", "tag", pulled, target).returncode == 0
    refused = containerd.push(target, "--user", user)
    assert refused.returncode != 0
    assert "403" in refused.stderr or "denied" in refused.stderr.lower(), refused.stderr
    other = containerd.pull(world.ref("ctr-b/app"), "--user", user)
    assert other.returncode != 0
    assert "403" in other.stderr or "denied" in other.stderr.lower(), other.stderr
    with world.server.client(world.server.admin_token) as admin:
        assert admin.get("/v2/ctr-a/by-puller/tags/list").status_code == 404


def test_a_wrong_password_fails(world: World, containerd: Containerd) -> None:
    for user in ("alice:wrong-password", "nobody:" + PASSWORD):
        result = containerd.pull(world.ref("ctr-a/app"), "--user", user)
        assert result.returncode != 0, user
        assert "401" in result.stderr or "unauthorized" in result.stderr.lower(), result.stderr
    # (containerd sends credentials only when challenged: a wrong password for a stream
    # anonymous users may pull is never presented, and that pull succeeds.)


# The kubelet's path: CRI runtime.v1.ImageService/PullImage on containerd's socket.


def _cri_messages() -> dict[str, type[Message]]:
    """The CRI v1 messages PullImage needs, with the CRI API's field numbers."""
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    shapes: dict[str, list[tuple[str, int, int, str]]] = {
        "AuthConfig": [
            ("username", 1, string, ""),
            ("password", 2, string, ""),
            ("auth", 3, string, ""),
            ("server_address", 4, string, ""),
            ("identity_token", 5, string, ""),
            ("registry_token", 6, string, ""),
        ],
        "ImageSpec": [("image", 1, string, "")],
        "PullImageRequest": [
            ("image", 1, message, ".runtime.v1.ImageSpec"),
            ("auth", 2, message, ".runtime.v1.AuthConfig"),
        ],
        "PullImageResponse": [("image_ref", 1, string, "")],
    }
    proto = descriptor_pb2.FileDescriptorProto(
        name="tests/cri_pull_image.proto", package="runtime.v1", syntax="proto3"
    )
    for name, fields in shapes.items():
        shape = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            field = shape.field.add(name=field_name, number=number, type=kind, label=optional)
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"runtime.v1.{name}"))
        for name in shapes
    }


CRI = _cri_messages()


def _cri_pull(containerd: Containerd, image: str, auth: dict[str, str]) -> dict[str, Any]:
    request = json_format.ParseDict(
        {"image": {"image": image}, "auth": auth}, CRI["PullImageRequest"]()
    )
    response_type = CRI["PullImageResponse"]
    with grpc.insecure_channel(f"unix://{containerd.socket}") as channel:
        pull: grpc.UnaryUnaryMultiCallable[Message, Message] = channel.unary_unary(
            "/runtime.v1.ImageService/PullImage",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        response = pull(request, timeout=180)
    return json_format.MessageToDict(response)


def test_cri_pull_image_with_an_image_pull_secrets_username_and_password(
    world: World, containerd: Containerd
) -> None:
    auth = {"username": "alice", "password": PASSWORD, "serverAddress": world.server.url}
    answer = _cri_pull(containerd, world.ref("ctr-a/app"), auth)
    assert answer["imageRef"].startswith("sha256:")
    assert _image_digest(containerd, world.ref("ctr-a/app"), CRI_NAMESPACE) == (
        world.layout.manifest_digest
    )
    # The `auth` form of a secret (base64 user:password) is the same credential.
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    answer = _cri_pull(containerd, world.ref("ctr-a/app"), {"auth": encoded})
    assert answer["imageRef"].startswith("sha256:")


def test_cri_pull_image_with_a_service_account_token_or_a_refresh_token(
    world: World, containerd: Containerd
) -> None:
    # A service-account token as the secret's password, and as its identitytoken (which
    # containerd trades with grant_type=refresh_token).
    for auth in (
        {"username": "puller", "password": world.puller_token},
        {"identityToken": world.puller_token},
    ):
        answer = _cri_pull(containerd, world.ref("ctr-a/app"), auth)
        assert answer["imageRef"].startswith("sha256:"), auth.keys()
    # The refresh token a `docker login` stores as identitytoken.
    with world.server.client() as client:
        offline = client.post(
            "/v2/token",
            data={
                "grant_type": "password",
                "username": "alice",
                "password": PASSWORD,
                "service": "imageregistry",
                "client_id": "tests",
                "access_type": "offline",
            },
        )
    assert offline.status_code == 200, offline.text
    refresh = offline.json()["refresh_token"]
    answer = _cri_pull(containerd, world.ref("ctr-a/app"), {"identityToken": refresh})
    assert answer["imageRef"].startswith("sha256:")


def test_cri_pull_image_fails_with_a_registry_token_a_wrong_password_or_a_bare_server(
    world: World, containerd: Containerd
) -> None:
    # containerd 1.6's CRI ignores `registry_token` (its ParseAuth has no case for it),
    # so the pull goes out anonymously and a private repository refuses it.
    for auth in (
        {"registryToken": world.puller_token},
        {"username": "alice", "password": "wrong-password"},
    ):
        with pytest.raises(grpc.RpcError) as failed:
            _cri_pull(containerd, world.ref("ctr-a/app"), auth)
        error = failed.value
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.UNKNOWN
        assert "401" in (error.details() or ""), error.details()
    # What docs/operations.md warns about: a secret whose server is a bare HOST:PORT gives
    # an AuthConfig that containerd cannot parse; a full URL works (above).
    bare = {"username": "alice", "password": PASSWORD, "serverAddress": world.server.host}
    with pytest.raises(grpc.RpcError) as failed:
        _cri_pull(containerd, world.ref("ctr-a/app"), bare)
    assert "parse server address" in (failed.value.details() or ""), failed.value.details()
