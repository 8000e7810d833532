"""The image API as an aggregated API: the front-proxy contract on `front_proxy_listen`.

kube-apiserver cannot run on these machines, so the test plays the aggregator: it makes a
request-header CA and a front-proxy client certificate (`CN=front-proxy-client`, client
auth, as kubeadm's), starts the server with `--front-proxy-listen`,
`--requestheader-client-ca-file` and `--requestheader-allowed-names`, and sends what the
aggregator sends: the request over TLS with that certificate and the user in `X-Remote-User`,
`X-Remote-Group` and `X-Remote-Extra-*` (httpx: kubectl cannot add those headers). The
identity the server took is read back from a SelfSubjectReview (`kubectl auth whoami`'s
call). Then the attacks: the same headers with no certificate, a certificate from another
CA (served as anonymous, not refused at the handshake), a certificate of the right CA with
a name not allowed, and on the main port; none of
them may act as the named user. Real kubectl goes through the same port with the client
certificate in its kubeconfig (discovery, get, watch).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.certs import Authority
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess, refused_serve

pytestmark = pytest.mark.timeout(300)

PROXY_NAME = "front-proxy-client"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
STREAMS = "/apis/image.alauda.io/v1/namespaces/team-a/imagestreams"


@dataclass
class Setup:
    server: RegistryProcess
    front_port: int
    proxy_cert: tuple[str, str]
    other_ca_cert: tuple[str, str]
    wrong_name_cert: tuple[str, str]
    root: Path

    @property
    def front_url(self) -> str:
        return f"https://127.0.0.1:{self.front_port}"

    def front(self, cert: tuple[str, str] | None = None, token: str | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=self.server.ca_file)
        if cert is not None:
            context.load_cert_chain(*cert)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.front_url, verify=context, headers=headers, timeout=30)


def whoami(
    client: httpx.Client, headers: dict[str, str] | list[tuple[str, str]]
) -> dict[str, object]:
    reply = client.post(WHOAMI, json=REVIEW, headers=headers)
    if reply.status_code == 403:  # anonymous may not even ask
        assert "system:anonymous" in reply.json()["message"], reply.text
        return {"username": "system:anonymous"}
    assert reply.status_code == 201, reply.text
    user: dict[str, object] = reply.json()["status"]["userInfo"]
    return user


FORGED = [
    ("X-Remote-User", "alice"),
    ("X-Remote-Group", "system:masters"),
    ("X-Remote-Group", "developers"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("aggregated")
    certs = root / "certs"
    certs.mkdir()
    request_header_ca = Authority.create(certs, "front-proxy-ca")
    other_ca = Authority.create(certs, "other-ca")
    front_port = free_port()
    server = RegistryProcess(
        data_dir=root / "data",
        extra_args=[
            "--front-proxy-listen",
            f"127.0.0.1:{front_port}",
            "--requestheader-client-ca-file",
            str(request_header_ca.path),
            "--requestheader-allowed-names",
            f"{PROXY_NAME},another-proxy",
        ],
    )
    with server:
        with server.client(server.admin_token) as admin:
            reply = admin.post("/api/v1/namespaces", json={"metadata": {"name": "team-a"}})
            assert reply.status_code == 201, reply.text
        yield Setup(
            server,
            front_port,
            request_header_ca.client(certs, PROXY_NAME),
            other_ca.client(certs, PROXY_NAME),
            request_header_ca.client(certs, "not-the-proxy"),
            root,
        )


def test_front_proxy_headers_name_the_user(setup: Setup) -> None:
    with setup.front(setup.proxy_cert) as client:
        user = whoami(
            client,
            [
                ("X-Remote-User", "alice"),
                ("X-Remote-Group", "developers"),
                ("X-Remote-Group", "testers"),
                ("X-Remote-Extra-Scopes", "view"),
                ("X-Remote-Extra-Scopes", "edit"),
                ("X-Remote-Extra-Example.com%2FTeam", "a"),
            ],
        )
    assert user["username"] == "alice"
    assert user["groups"] == ["developers", "testers", "system:authenticated"]
    assert user["extra"] == {"scopes": ["view", "edit"], "example.com/team": ["a"]}


def test_the_aggregators_availability_check_is_answered(setup: Setup) -> None:
    """kube-aggregator's APIService availability check: discovery of the group version as
    `system:kube-aggregator` in `system:masters` (kube's apiservice_available_controller)."""
    aggregator = [("X-Remote-User", "system:kube-aggregator"), ("X-Remote-Group", "system:masters")]
    with setup.front(setup.proxy_cert) as client:
        reply = client.get("/apis/image.alauda.io/v1", headers=aggregator)
    assert reply.status_code == 200, reply.text
    assert "imagestreams" in {r["name"] for r in reply.json()["resources"]}


def test_front_proxy_user_wins_over_a_bearer_token(setup: Setup) -> None:
    """kube's request-header authenticator comes before the token authenticator."""
    with setup.front(setup.proxy_cert, token=setup.server.admin_token) as client:
        assert whoami(client, [("X-Remote-User", "alice")])["username"] == "alice"


def test_front_proxy_user_is_authorized_by_rbac(setup: Setup) -> None:
    as_bob = [("X-Remote-User", "bob"), ("X-Remote-Group", "team-a-readers")]
    with setup.front(setup.proxy_cert) as client:
        denied = client.get(STREAMS, headers=as_bob)
        assert denied.status_code == 403, denied.text
        assert 'User "bob" cannot list resource "imagestreams"' in denied.json()["message"]
        with setup.server.client(setup.server.admin_token) as admin:
            binding = {
                "metadata": {"name": "readers", "namespace": "team-a"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "view",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Group",
                        "name": "team-a-readers",
                    }
                ],
            }
            path = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings"
            reply = admin.post(path, json=binding)
            assert reply.status_code == 201, reply.text
        allowed = client.get(STREAMS, headers=as_bob)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["kind"] == "ImageStreamList"
        # The binding is in team-a only; the group without it is not enough elsewhere.
        elsewhere = client.get(STREAMS.replace("team-a", "default"), headers=as_bob)
        assert elsewhere.status_code == 403
        # Same user without the bound group (the header decides the groups).
        assert client.get(STREAMS, headers=[("X-Remote-User", "bob")]).status_code == 403


def test_headers_without_a_client_certificate_are_ignored(setup: Setup) -> None:
    with setup.front() as client:
        assert whoami(client, FORGED)["username"] == "system:anonymous"
        assert client.get(STREAMS, headers=FORGED).status_code == 403
    with setup.front(token=setup.server.admin_token) as client:
        user = whoami(client, FORGED)  # its own token, not the headers
        assert user["username"] == "system:admin"
        assert "developers" not in user["groups"]  # type: ignore[operator]


def test_headers_with_a_name_not_allowed_are_ignored(setup: Setup) -> None:
    with setup.front(setup.wrong_name_cert) as client:
        assert whoami(client, FORGED)["username"] == "system:anonymous"
        assert client.get(STREAMS, headers=FORGED).status_code == 403


def test_headers_with_a_certificate_of_another_ca_are_ignored(setup: Setup) -> None:
    """A certificate no request-header CA signed (a forged front proxy with the right
    name) is not refused at the handshake: as in kube-apiserver, the request is served as
    if it had no certificate, so the forged headers are ignored and it is anonymous."""
    with setup.front(setup.other_ca_cert) as client:
        assert whoami(client, FORGED)["username"] == "system:anonymous"
    with setup.front(setup.other_ca_cert, token=setup.server.admin_token) as client:
        assert whoami(client, FORGED)["username"] not in ("alice", "system:anonymous")


def test_headers_on_the_main_port_are_ignored(setup: Setup) -> None:
    with setup.server.client() as client:
        assert whoami(client, FORGED)["username"] == "system:anonymous"
        assert client.get(STREAMS, headers=FORGED).status_code == 403
    with setup.server.client(setup.server.admin_token) as client:
        user = whoami(client, FORGED)
        assert user["username"] == "system:admin"
        assert "developers" not in user["groups"]  # type: ignore[operator]


def _kubeconfig(setup: Setup, cert: tuple[str, str]) -> Path:
    path = setup.root / f"front-{Path(cert[0]).stem}.kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: aggregated
  cluster:
    server: {setup.front_url}
    certificate-authority: {setup.server.ca_file}
users:
- name: proxy
  user:
    client-certificate: {cert[0]}
    client-key: {cert[1]}
    token: {setup.server.admin_token}
contexts:
- name: aggregated
  context: {{cluster: aggregated, user: proxy}}
current-context: aggregated
"""
    )
    return path


def test_kubectl_through_the_front_proxy_port(setup: Setup) -> None:
    """kubectl with the proxy's certificate and a token (no X-Remote-User: kubectl cannot
    send it, so the token authenticates): discovery, get and a watch over the listener."""
    kubeconfig = _kubeconfig(setup, setup.proxy_cert)
    base = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(setup.root / "kc")]

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)

    resources = kubectl("api-resources", "--api-group=image.alauda.io")
    assert resources.returncode == 0, resources.stderr
    assert "imagestreams" in resources.stdout
    created = kubectl("create", "imagestream", "web", "-n", "team-a")
    if created.returncode != 0:  # kubectl has no `create imagestream`: apply one
        manifest = (
            "apiVersion: image.alauda.io/v1\nkind: ImageStream\n"
            "metadata: {name: web, namespace: team-a}\n"
        )
        created = subprocess.run(
            [*base, "apply", "-f", "-"], input=manifest, capture_output=True, text=True, timeout=60
        )
    assert created.returncode == 0, created.stderr
    listed = kubectl("get", "imagestreams", "-n", "team-a", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert "imagestream.image.alauda.io/web" in listed.stdout
    whoami_out = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami_out.stdout == "system:admin", whoami_out.stderr
    watch = subprocess.Popen(
        [*base, "get", "imagestreams", "-n", "team-a", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "imagestream.image.alauda.io/web"
        manifest = (
            "apiVersion: image.alauda.io/v1\nkind: ImageStream\n"
            "metadata: {name: api, namespace: team-a}\n"
        )
        applied = subprocess.run(
            [*base, "apply", "-f", "-"], input=manifest, capture_output=True, text=True, timeout=60
        )
        assert applied.returncode == 0, applied.stderr
        assert watch.stdout.readline().strip() == "imagestream.image.alauda.io/api"
    finally:
        watch.kill()
        watch.wait()


def test_serve_refuses_a_request_header_ca_it_cannot_use(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.crt"
    bad.write_text("hello\n")
    for path, message in [
        (tmp_path / "missing.crt", "No such file or directory"),
        (bad, "not a PEM certificate bundle"),
    ]:
        result = refused_serve(
            tmp_path / "data",
            "--front-proxy-listen",
            f"127.0.0.1:{free_port()}",
            "--requestheader-client-ca-file",
            str(path),
        )
        assert result.returncode != 0
        assert f"requestheader_client_ca_file {path}" in result.stderr or str(path) in result.stderr
        assert message in result.stderr
        assert not (tmp_path / "data" / "registry.db").exists()  # refused before preparing


def test_every_worker_serves_the_front_proxy_port(tmp_path: Path) -> None:
    """Each Granian worker listens on `front_proxy_listen` (SO_REUSEPORT): new connections
    spread over both workers and every one is authenticated the same way."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = Authority.create(certs, "front-proxy-ca")
    proxy_cert = ca.client(certs, PROXY_NAME)
    front_port = free_port()
    server = RegistryProcess(
        data_dir=tmp_path / "data",
        extra_args=[
            "--workers",
            "2",
            "--front-proxy-listen",
            f"127.0.0.1:{front_port}",
            "--requestheader-client-ca-file",
            str(ca.path),
        ],
    )
    with server:
        setup = Setup(server, front_port, proxy_cert, proxy_cert, proxy_cert, tmp_path)
        workers = server.worker_pids()
        assert len(workers) == 2
        # The server is ready when one worker answers; the other may still be starting
        # (its lifespan opens the port), so wait for it on a loaded machine.
        deadline = time.monotonic() + 120
        for pid in workers:
            while not listening_sockets(front_port) & socket_inodes(pid):
                assert time.monotonic() < deadline, f"worker {pid} never listened"
                time.sleep(0.5)
        users = set()
        for _ in range(20):
            with setup.front(setup.proxy_cert) as client:  # a new connection each time
                users.add(str(whoami(client, [("X-Remote-User", "alice")])["username"]))
        assert users == {"alice"}


def listening_sockets(port: int) -> set[str]:
    """Inodes of the IPv4 sockets listening on `port` (/proc/net/tcp, state 0A)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(target[8:-1])
    return found


def test_a_rotated_request_header_ca_takes_effect_without_a_restart(tmp_path: Path) -> None:
    """The CA file is replaced the way a ConfigMap volume replaces it (a rename): within
    the reload interval the new CA's front proxy is honoured and the old one's is not."""
    certs = tmp_path / "certs"
    certs.mkdir()
    old_ca, new_ca = Authority.create(certs, "old-ca"), Authority.create(certs, "new-ca")
    bundle = tmp_path / "front-proxy" / "ca.crt"
    bundle.parent.mkdir()
    bundle.write_bytes(old_ca.path.read_bytes())
    front_port = free_port()
    server = RegistryProcess(
        data_dir=tmp_path / "data",
        extra_args=[
            "--front-proxy-listen",
            f"127.0.0.1:{front_port}",
            "--requestheader-client-ca-file",
            str(bundle),
        ],
    )
    with server:
        old_cert, new_cert = old_ca.client(certs, PROXY_NAME), new_ca.client(certs, PROXY_NAME)
        setup = Setup(server, front_port, old_cert, new_cert, new_cert, tmp_path)
        as_alice = [("X-Remote-User", "alice")]
        with setup.front(old_cert) as client:
            assert whoami(client, as_alice)["username"] == "alice"
        replacement = bundle.with_name("ca.crt.new")
        replacement.write_bytes(new_ca.path.read_bytes())
        replacement.rename(bundle)
        deadline = time.monotonic() + 90
        while True:
            try:
                with setup.front(new_cert) as client:
                    if whoami(client, as_alice)["username"] == "alice":
                        break
            except httpx.TransportError:
                pass  # a connection that did not work out; try again
            assert time.monotonic() < deadline, "the new CA was never honoured"
            time.sleep(1)
        with setup.front(old_cert) as client:
            assert whoami(client, as_alice)["username"] == "system:anonymous"
