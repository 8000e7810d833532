"""deploy/kubernetes: the overlays render, validate, and the pod they describe serves.

No cluster can run here, so each overlay is checked in the three ways that are possible
without one: the real `kubectl kustomize` renders it; every rendered object validates
against the Kubernetes 1.32 OpenAPI schemas offline (`kubernetes-validate`, strict: an
unknown field fails); and the server is started with exactly the command, arguments,
environment and config file the rendered Deployment and ConfigMap give the container. Where
the pod would have volumes the test gives local directories (the mount paths are replaced
in the arguments and the config file), the Secrets are filled from the test (a throwaway
PostgreSQL for `ha`, a certificate it makes), the container port becomes a free one, and
`ha`'s placeholder `public_url` becomes the local address (the test is the client).
The probes' paths must then answer as the kubelet would want, and an image is pushed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from imageregistry.pki import ensure_tls
from tests.e2e.oci_support import Layout, build_layout, skopeo
from tests.support.postgres import create_database, free_port
from tests.support.s3servers import create_bucket, swift_server
from tests.support.server import BIN, RegistryProcess

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
K8S_VERSION = "1.32.0"


def render(overlay: str, *components: str) -> list[dict[str, Any]]:
    """An overlay, plus components from a kustomization beside the overlays (kustomize
    accepts only relative paths), as docs/operations.md tells the reader to add them."""
    if not components:
        return _kustomize(OVERLAYS / overlay)
    directory = Path(tempfile.mkdtemp(prefix=".components-test-", dir=OVERLAYS))
    try:
        listed = "".join(f"  - ../../components/{c}\n" for c in components)
        (directory / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - ../{overlay}\ncomponents:\n{listed}"
        )
        return _kustomize(directory)
    finally:
        shutil.rmtree(directory)


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(objects: list[dict[str, Any]]) -> None:
    """Every object is valid for Kubernetes `K8S_VERSION`, strictly (no unknown fields)."""
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


@pytest.mark.parametrize("overlay", ["single", "ha"])
def test_overlay_renders_and_validates_against_kubernetes_1_32(overlay: str) -> None:
    objects = render(overlay)
    validate(objects)
    kinds = sorted(o["kind"] for o in objects)
    expected = ["ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "Service"]
    expected.append("ServiceAccount")
    # single: a volume for everything; ha: PostgreSQL and a bucket, and a disruption budget
    expected.append("PersistentVolumeClaim" if overlay == "single" else "PodDisruptionBudget")
    assert kinds == sorted(expected)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "image-registry", obj["kind"]


@pytest.mark.parametrize("overlay", ["single", "ha"])
def test_pod_is_locked_down_and_probes_are_distinct(overlay: str) -> None:
    objects = render(overlay)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/image-registry"} <= mounts  # the only writable places
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "registry", "protocol": "TCP"}]}]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == ({53, 5432, 443} if overlay == "ha" else {53})


def test_ha_spreads_three_replicas_and_takes_secrets() -> None:
    objects = render("ha")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert budget["selector"]["matchLabels"] == selector
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"]}
    assert env == {
        "IMAGE_REGISTRY_DATABASE": {"name": "image-registry-database", "key": "url"},
        "AWS_ACCESS_KEY_ID": {"name": "image-registry-s3", "key": "access-key-id"},
        "AWS_SECRET_ACCESS_KEY": {"name": "image-registry-s3", "key": "secret-access-key"},
    }
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["storage"].startswith("s3://")
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])


def test_single_keeps_everything_on_one_volume() -> None:
    objects = render("single")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = one(objects, "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "emptyDir" not in volumes["data"]


# ---------------------------------------------------------------- the pod, run locally


@dataclass
class LocalPod:
    """What the rendered Deployment gives its container, mapped onto this machine."""

    argv: list[str]
    env: dict[str, str]
    port: int
    mounts: dict[str, Path]  # mountPath -> local directory
    probes: dict[str, tuple[str, str]]  # readiness/liveness -> (scheme, path)
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def local(self, pod_path: str) -> Path:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if pod_path == mount or pod_path.startswith(mount + "/"):
                return self.mounts[mount] / pod_path[len(mount) :].lstrip("/")
        raise AssertionError(f"{pod_path} is on no volume: the root filesystem is read-only")


def localize(text: str, mounts: dict[str, Path], port: int, s3_endpoint: str = "") -> str:
    """Mount paths (longest first, whole path components, in one pass) to local dirs."""
    pattern = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    text = re.sub(f"(?<![\\w/.-])({pattern})(?=/|\\s|$)", lambda m: str(mounts[m[1]]), text)
    # The listen address, and public_url: the test is the client (`ha` names a placeholder).
    for address in ("0.0.0.0:5000", "127.0.0.1:5000", "registry.example.com:5000"):
        text = text.replace(address, f"127.0.0.1:{port}")
    if s3_endpoint:  # `ha`'s placeholder object store: the test's own
        text = text.replace("https://s3.example.com", s3_endpoint)
    return text


def local_pod(
    overlay: str, root: Path, secrets: dict[str, dict[str, bytes]], s3_endpoint: str = ""
) -> tuple[LocalPod, dict[str, Any]]:
    objects = render(overlay)
    config_map = one(objects, "ConfigMap")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [5000]
    volumes = {v["name"]: v for v in pod["volumes"]}
    port = free_port()
    mounts = {m["mountPath"]: root / m["name"] for m in container["volumeMounts"]}
    for mount in container["volumeMounts"]:
        directory = root / mount["name"]
        directory.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            for name, data in config_map["data"].items():
                (directory / name).write_text(localize(data, mounts, port, s3_endpoint))
        elif "secret" in volume:
            for name, data in secrets[volume["secret"]["secretName"]].items():
                (directory / name).write_bytes(data)
        else:
            assert set(volume) & {"emptyDir", "persistentVolumeClaim"}, volume
    env = {"PATH": os.environ["PATH"]}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]].decode()
    argv = [localize(a, mounts, port) for a in container["command"] + container["args"]]
    argv[0] = str(BIN / argv[0])  # the image's PATH holds the package's venv first
    probes = {
        kind: (container[kind]["httpGet"]["scheme"].lower(), container[kind]["httpGet"]["path"])
        for kind in ("readinessProbe", "livenessProbe")
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "registry"
    return LocalPod(argv, env, port, mounts, probes), yaml.safe_load(
        config_map["data"]["config.yaml"]
    )


def run_pod(pod: LocalPod, root: Path, wrapper: list[str] | None = None) -> subprocess.Popen[bytes]:
    log = open(root / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*(wrapper or []), *pod.argv],
        env=pod.env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pod.proc = proc
    return proc


def probe(pod: LocalPod, kind: str, timeout: float = 60.0) -> httpx.Response:
    """GET the probe's path as the kubelet does (HTTPS without verifying the certificate)."""
    scheme, path = pod.probes[kind]
    deadline = time.monotonic() + timeout
    while True:
        assert pod.proc is not None
        if pod.proc.poll() is not None:
            raise AssertionError(f"the server exited with {pod.proc.returncode}")
        try:
            return httpx.get(f"{scheme}://127.0.0.1:{pod.port}{path}", verify=False, timeout=10)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(pod: LocalPod) -> int:
    assert pod.proc is not None
    pod.proc.send_signal(signal.SIGTERM)  # what the kubelet sends
    try:
        return pod.proc.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pod.proc.pid, signal.SIGKILL)


def push_demo_as_admin(
    port: int, data: Path, ca_cert: Path, root: Path, name: str
) -> tuple[Layout, str]:
    """skopeo copies a small demo image to the pod as its cluster-admin (the token of the
    admin.kubeconfig the pod wrote into `data`), trusting `ca_cert`: the layout and token."""
    admin = yaml.safe_load((data / "admin.kubeconfig").read_text())
    token = admin["users"][0]["user"]["token"]
    certs = root / "certs"
    certs.mkdir()
    shutil.copy(ca_cert, certs / "ca.crt")
    layout = build_layout(root / "layout", name)
    copied = skopeo(
        "copy",
        "--dest-cert-dir",
        str(certs),
        "--dest-creds",
        f"admin:{token}",
        f"oci:{layout.path}:v1",
        f"docker://127.0.0.1:{port}/team-a/demo:v1",
    )
    assert copied.returncode == 0, copied.stderr
    return layout, token


def kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_single_pod_serves_and_a_service_account_pushes(tmp_path: Path) -> None:
    """The steps of docs/operations.md, "Running in a cluster", against the pod."""
    pod, config = local_pod("single", tmp_path / "pod", secrets={})
    run_pod(pod, tmp_path)
    try:
        ready = probe(pod, "readinessProbe")
        assert ready.status_code == 200, ready.text
        assert probe(pod, "livenessProbe").status_code == 200
        data = pod.local(config["data_dir"])
        # The first start wrote its CA and admin.kubeconfig onto the data volume.
        admin = data / "admin.kubeconfig"
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(data / "tls" / "ca.crt", certs / "ca.crt")
        kubectl(admin, "create", "namespace", "team-a")
        kubectl(admin, "create", "serviceaccount", "ci", "-n", "team-a")
        kubectl(
            admin,
            "create",
            "rolebinding",
            "ci-pusher",
            "--clusterrole=system:image-pusher",
            "--serviceaccount=team-a:ci",
            "-n",
            "team-a",
        )
        token = kubectl(admin, "create", "token", "ci", "-n", "team-a").strip()
        layout = build_layout(tmp_path / "layout", "deploy-single")
        copied = skopeo(
            "copy",
            "--dest-cert-dir",
            str(certs),
            "--dest-creds",
            f"ci:{token}",
            f"oci:{layout.path}:v1",
            f"docker://127.0.0.1:{pod.port}/team-a/demo:v1",
        )
        assert copied.returncode == 0, copied.stderr
        assert (pod.local(config["data_dir"]) / "registry.db").exists()  # SQLite on the volume
    finally:
        assert stop(pod) == 0


def test_ha_pod_serves_from_postgresql_and_the_bucket(tmp_path: Path, postgres_server: str) -> None:
    """`ha` against a throwaway PostgreSQL and a real S3 implementation on loopback
    (OpenStack Swift's s3api, tests/support/s3servers.py); then the object store goes
    away and /readyz says so."""
    url = create_database(postgres_server, "deploy_ha")
    tls = ensure_tls(tmp_path / "made-by-cert-manager", ["127.0.0.1", "localhost"])
    with swift_server() as swift:
        secrets = {
            "image-registry-database": {"url": url.encode()},
            "image-registry-s3": {
                "access-key-id": swift.access_key.encode(),
                "secret-access-key": swift.secret_key.encode(),
            },
            "image-registry-tls": {
                "tls.crt": tls.cert.read_bytes(),
                "tls.key": tls.key.read_bytes(),
            },
        }
        pod, config = local_pod("ha", tmp_path / "pod", secrets, s3_endpoint=swift.endpoint)
        create_bucket(swift, config["storage"].removeprefix("s3://").split("/")[0])
        run_pod(pod, tmp_path)
        try:
            ready = probe(pod, "readinessProbe")
            assert ready.status_code == 200, ready.text
            assert probe(pod, "livenessProbe").status_code == 200
            data = pod.local(config["data_dir"])
            layout, token = push_demo_as_admin(pod.port, data, tls.ca_cert, tmp_path, "deploy-ha")
            # The layers are in the bucket (a pull is sent there), the metadata in PostgreSQL.
            layer = next(d for d in layout.blobs if d != layout.manifest_digest)
            with httpx.Client(
                base_url=f"https://127.0.0.1:{pod.port}",
                verify=ssl.create_default_context(cafile=tls.ca_cert),
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            ) as client:
                pulled = client.get(f"/v2/team-a/demo/blobs/{layer}")
                assert pulled.status_code == 307, pulled.text
                assert pulled.headers["location"].startswith(swift.endpoint)
                assert (
                    httpx.get(pulled.headers["location"], timeout=60).content
                    == (layout.blobs[layer])
                )
            assert not (data / "registry.db").exists()
            assert not (data / "blobs").exists()
        except BaseException:
            stop(pod)
            raise
    # The object store is gone: the pod is taken out of its Service, not restarted.
    try:
        down = probe(pod, "readinessProbe")
        assert down.status_code == 503, down.text
        assert down.text.startswith("blob store: "), down.text
        assert probe(pod, "livenessProbe").status_code == 200
    finally:
        assert stop(pod) == 0


# The pod's user on a read-only root filesystem: a mount namespace of the test's own whose
# root mount is read-only, with only the pod's volumes writable, and the server run as the
# pod's uid/gid. The interpreter may live under a directory other users cannot enter (pyenv
# under /root here): that directory is replaced by a tmpfs holding only the interpreter's
# tree, so the server can run it without being given anything else there. A checkout (and
# its .venv) under /tmp is bound back into place after the pod's /tmp volume covers /tmp.
CONFINE = r"""
set -eu
pod=$1 uid=$2 gid=$3 hidden=$4 keep=$5 checkout=$6; shift 6
mount --make-rprivate /
mount --bind "$pod" "$pod"
if [ -n "$hidden" ]; then
    mkdir "$pod/.interpreter"
    mount --bind "$hidden/$keep" "$pod/.interpreter"
    mount -t tmpfs -o mode=755 tmpfs "$hidden"
    mkdir "$hidden/$keep"
    mount --bind "$pod/.interpreter" "$hidden/$keep"
fi
if [ -n "$checkout" ]; then
    mkdir "$pod/.checkout"
    mount --bind "$checkout" "$pod/.checkout"
fi
mount --bind "$pod/tmp" /tmp
if [ -n "$checkout" ]; then
    mkdir -p "$checkout"
    mount --bind "$pod/.checkout" "$checkout"
fi
mount -o remount,bind,ro /
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"""


def checkout_under_tmp() -> str:
    """The directory holding this checkout and the running venv when it lies under /tmp
    (a CI clone may), else "": the pod's /tmp volume would hide the server's program."""
    found = os.path.commonpath([ROOT, os.path.realpath(sys.prefix)])
    tmp = os.path.realpath("/tmp")
    return found if found.startswith(tmp + os.sep) else ""


def hidden_interpreter_dir() -> tuple[str, str]:
    """(a directory other users cannot enter on the way to the interpreter, the child of
    it that holds the interpreter), or ("", "")."""
    real = Path(os.path.realpath(sys.base_prefix))
    for parent in reversed(real.parents):
        if parent != real and not parent.stat().st_mode & 0o001:
            return str(parent), real.relative_to(parent).parts[0]
    return "", ""


def test_single_pod_runs_as_its_user_on_a_read_only_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a mount namespace and switch to the pod's user")
    objects = render("single")
    pod_spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    uid = pod_spec["securityContext"]["runAsUser"]
    gid = pod_spec["securityContext"]["runAsGroup"]
    # Outside /tmp: the pod's own /tmp volume is mounted over it.
    root = Path(tempfile.mkdtemp(prefix="deploy-ro-", dir="/var/tmp"))
    root.chmod(0o755)  # the kubelet's volume directories are reachable by the pod's user
    try:
        pod, config = local_pod("single", root / "pod", secrets={})
        pod.env["PYTHONDONTWRITEBYTECODE"] = "1"  # the image's ENV
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(root / "pod")], check=True)
        hidden, keep = hidden_interpreter_dir()
        confine = ["unshare", "--mount", "sh", "-c", CONFINE, "confine"]
        checkout = checkout_under_tmp()
        pod_args = [str(root / "pod"), str(uid), str(gid), hidden, keep, checkout]
        run_pod(pod, root, [*confine, *pod_args])
        try:
            ready = probe(pod, "readinessProbe")
            assert ready.status_code == 200, ready.text
            assert pod.proc is not None  # unshare, sh and setpriv exec'd into the server
            status = Path(f"/proc/{pod.proc.pid}/status").read_text()
            (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
            assert set(uids) == {str(uid)}
            mounts = Path(f"/proc/{pod.proc.pid}/mountinfo").read_text().splitlines()
            (root_mount,) = [m.split() for m in mounts if m.split()[4] == "/"]
            assert "ro" in root_mount[5].split(",")
            data = pod.local(config["data_dir"])
            ca = data / "tls" / "ca.crt"
            push_demo_as_admin(pod.port, data, ca, tmp_path, "deploy-read-only")
            owners = {p.stat().st_uid for p in data.rglob("*")}
            assert owners == {uid}  # everything it wrote, it wrote as the pod's user
        finally:
            assert stop(pod) == 0, (root / "server.log").read_text()[-3000:]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_ha_replicas_started_together_all_come_up(tmp_path: Path, postgres_server: str) -> None:
    """`kubectl apply -k overlays/ha` starts three replicas at once on an empty database.

    They used to race to migrate it and to create the bootstrap RBAC objects, and one or
    two of them exited (a duplicate table or row) until the kubelet restarted them; now
    they prepare the database one after the other. Then a push through one replica is
    pulled through another (one database, one blob volume)."""
    url = create_database(postgres_server, "deploy_ha_together")
    blobs = tmp_path / "blobs"
    replicas = [
        RegistryProcess(
            data_dir=tmp_path / f"replica-{i}", database=url, extra_args=["--storage", str(blobs)]
        )
        for i in range(3)
    ]
    failures: list[BaseException] = []

    def start(replica: RegistryProcess) -> None:
        try:
            replica.start(timeout=120)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(180)
        assert not failures, failures
        for replica in replicas:
            with replica.client(timeout=30) as client:
                assert client.get("/readyz").status_code == 200
        first, second = replicas[0], replicas[1]
        data = b"a layer pushed through one replica"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with first.client(first.admin_token, timeout=60) as client:
            started = client.post("/v2/team-a/shared/blobs/uploads/")
            assert started.status_code == 202, started.text
            done = client.put(started.headers["location"], params={"digest": digest}, content=data)
            assert done.status_code == 201, done.text
        with second.client(second.admin_token, timeout=60) as client:
            pulled = client.get(f"/v2/team-a/shared/blobs/{digest}")
            assert pulled.status_code == 200, pulled.text
            assert pulled.content == data
    finally:
        for replica in replicas:
            replica.stop()
