"""ResourceQuota and LimitRange for images with the real kubectl and skopeo.

Quotas are created and read with kubectl (`create quota`, `describe quota`, `get -o yaml`);
images are pushed with skopeo from OCI layouts whose blob sizes the test knows, so every
usage number is checked against bytes computed here, not against the server's own sums.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.e2e.ac_images import Blob, blob, write_layout
from tests.e2e.ac_support import ac, login_admin
from tests.e2e.kubectl_support import Kubectl, add_user_token
from tests.support.postgres import create_database
from tests.support.server import RegistryProcess

MI = 1 << 20
STREAMS = "count/imagestreams.image.alauda.io"
STORAGE = "image.alauda.io/storage"
IMAGES = "image.alauda.io/images"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("quota")
    with RegistryProcess(data_dir=root / "data") as process:
        yield process


@pytest.fixture(scope="module")
def kubectl(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(server, tmp_path_factory.mktemp("kcache"))


@pytest.fixture(scope="module")
def certs(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return server.cert_dir(tmp_path_factory.mktemp("certs"))


def random_blob(seed: str, size: int) -> Blob:
    """Incompressible bytes, so the pushed size is exactly `size`."""
    return blob(random.Random(seed).randbytes(size))


class Image:
    """An OCI layout of one image; `blobs` are every blob it references (layers, config)."""

    def __init__(self, root: Path, name: str, layers: Sequence[Blob]) -> None:
        self.path, self.manifest, config = write_layout(root / name, list(layers), env=[name])
        self.blobs = {b.digest: b.size for b in [*layers, config]}

    @property
    def storage(self) -> int:
        return sum(self.blobs.values())


def skopeo_push(
    server: RegistryProcess, certs: Path, image: Image, dest: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            f"--dest-registry-token={token or server.admin_token}",
            f"--dest-cert-dir={certs}",
            f"oci:{image.path}:img",
            f"docker://{server.host}/{dest}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def distinct_bytes(*images: Image) -> int:
    blobs: dict[str, int] = {}
    for image in images:
        blobs.update(image.blobs)
    return sum(blobs.values())


def quota_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, dict[str, str]]:
    doc = yaml.safe_load(kubectl.ok("get", "quota", name, "-n", namespace, "-o", "yaml"))
    return dict(doc["status"])


def describe_rows(kubectl: Kubectl, namespace: str) -> dict[str, tuple[str, str]]:
    """Resource -> (used, hard) as `kubectl describe quota` prints them."""
    out = kubectl.ok("describe", "quota", "-n", namespace)
    rows: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and ("/" in parts[0]):
            rows[parts[0]] = (parts[1], parts[2])
    return rows


def as_bytes(quantity: str) -> int:
    """A quantity kubectl printed, as an integer (kubectl prints canonical forms)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    assert match, quantity
    return int(match.group(1)) * units.get(match.group(2), 1)


def test_quota_streams_storage_and_shared_layers(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    kubectl.ok("create", "namespace", "team-a")
    kubectl.ok("create", "quota", "q", "-n", "team-a", f"--hard={STREAMS}=2,{STORAGE}=50Mi")
    status = quota_status(kubectl, "team-a", "q")
    assert status["hard"] == {STREAMS: "2", STORAGE: "50Mi"}  # mirrors spec.hard
    assert status["used"] == {STREAMS: "0", STORAGE: "0"}

    base = random_blob("base", 3 * MI)  # shared by both streams' images
    one = Image(tmp_path, "one", [base, random_blob("one", 2 * MI)])
    two = Image(tmp_path, "two", [base, random_blob("two", 4 * MI + 123)])
    assert skopeo_push(server, certs, one, "team-a/one:v1").returncode == 0
    assert skopeo_push(server, certs, two, "team-a/two:v1").returncode == 0

    # The shared layer counts once; describe agrees with the bytes of the layouts.
    expected = distinct_bytes(one, two)
    assert expected == one.storage + two.storage - base.size
    rows = describe_rows(kubectl, "team-a")
    assert rows[STREAMS] == ("2", "2")
    assert as_bytes(rows[STORAGE][0]) == expected and rows[STORAGE][1] == "50Mi"
    assert as_bytes(quota_status(kubectl, "team-a", "q")["used"][STORAGE]) == expected

    # A third stream is refused, and none is created.
    three = Image(tmp_path, "three", [random_blob("three", 1024)])
    refused = skopeo_push(server, certs, three, "team-a/three:v1")
    assert refused.returncode != 0
    assert f"exceeded quota q: {STREAMS} requested 1, used 2, limited 2" in refused.stderr, (
        refused.stderr
    )
    names = kubectl.ok("get", "imagestreams", "-n", "team-a", "-o", "name").split()
    assert sorted(names) == ["imagestream.image.alauda.io/one", "imagestream.image.alauda.io/two"]

    # A push over the storage limit is refused with the message and records nothing.
    big = Image(tmp_path, "big", [base, random_blob("big", 45 * MI)])
    refused = skopeo_push(server, certs, big, "team-a/one:big")
    assert refused.returncode != 0
    message = re.search(
        rf"exceeded quota q: {re.escape(STORAGE)} requested (\S+), used (\S+), limited 50Mi",
        refused.stderr,
    )
    assert message, refused.stderr
    assert message.group(1) == "45Mi"  # the shared base layer is not requested again
    tags = json.loads(kubectl.ok("get", "is", "one", "-n", "team-a", "-o", "json"))
    assert [t["tag"] for t in tags["status"].get("tags") or []] == ["v1"]
    assert as_bytes(describe_rows(kubectl, "team-a")[STORAGE][0]) == expected
    with server.client(server.admin_token) as client:
        r = client.get(f"/v2/team-a/one/manifests/{big.manifest.digest}")
        assert r.status_code == 404

    # Pushing an image the namespace already has (another tag) needs no room.
    assert skopeo_push(server, certs, two, "team-a/one:again").returncode == 0
    assert as_bytes(describe_rows(kubectl, "team-a")[STORAGE][0]) == expected


def test_several_quotas_all_apply_and_images_count(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    kubectl.ok("create", "namespace", "team-b")
    kubectl.ok("create", "quota", "roomy", "-n", "team-b", f"--hard={STORAGE}=1Gi,{IMAGES}=100")
    kubectl.ok("create", "quota", "tight", "-n", "team-b", f"--hard={IMAGES}=1")
    first = Image(tmp_path, "b1", [random_blob("b1", 1000)])
    second = Image(tmp_path, "b2", [random_blob("b2", 1000)])
    assert skopeo_push(server, certs, first, "team-b/app:1").returncode == 0
    refused = skopeo_push(server, certs, second, "team-b/app:2")
    assert f"exceeded quota tight: {IMAGES} requested 1, used 1, limited 1" in refused.stderr
    assert quota_status(kubectl, "team-b", "roomy")["used"] == {
        STORAGE: str(first.storage),
        IMAGES: "1",
    }
    # Tagging an image of another namespace in through the image API is a new image too.
    home = login_admin(server, tmp_path / "home")
    assert skopeo_push(server, certs, second, "team-x/app:2").returncode == 0
    tagged = ac(home, "tag", "team-x/app:2", "team-b/app:imported", check=False)
    assert tagged.returncode != 0
    assert f"exceeded quota tight: {IMAGES} requested 1, used 1, limited 1" in tagged.stderr
    ac(home, "tag", "team-b/app:1", "team-b/copy:1")  # an image team-b holds: no request


def test_concurrent_pushes_never_over_admit(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    """8 pushes at once against a limit with room for exactly 5 of them."""
    kubectl.ok("create", "namespace", "race")
    images = [Image(tmp_path, f"r{i}", [random_blob(f"race-{i}", MI)]) for i in range(8)]
    sizes = {image.storage for image in images}
    assert len(sizes) == 1  # equal sizes: any 5 fit, no 6 do
    each = sizes.pop()
    kubectl.ok("create", "quota", "q", "-n", "race", f"--hard={STORAGE}={5 * each + each // 2}")

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda pair: skopeo_push(server, certs, pair[1], f"race/app:t{pair[0]}"),
                enumerate(images),
            )
        )
    ok = [images[i] for i, r in enumerate(results) if r.returncode == 0]
    refused = [r for r in results if r.returncode != 0]
    assert len(ok) == 5, [r.stderr for r in refused]
    assert all("exceeded quota q: " + STORAGE in r.stderr for r in refused)
    used = quota_status(kubectl, "race", "q")["used"][STORAGE]
    assert as_bytes(used) == distinct_bytes(*ok)


def test_delete_releases_and_undo_charges_again_or_refuses(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    home = login_admin(server, tmp_path / "home")
    kubectl.ok("create", "namespace", "undo")
    kubectl.ok("create", "quota", "q", "-n", "undo", f"--hard={IMAGES}=1")
    first = Image(tmp_path, "u1", [random_blob("u1", 2000)])
    second = Image(tmp_path, "u2", [random_blob("u2", 3000)])
    assert skopeo_push(server, certs, first, "undo/app:v1").returncode == 0

    # Deleting the image (a prune run) releases its quota at once.
    with server.client(server.admin_token) as client:
        r = client.delete(f"/v2/undo/app/manifests/{first.manifest.digest}")
        assert r.status_code == 202
        run = r.headers["X-Registry-Prune-Run"]
    assert quota_status(kubectl, "undo", "q")["used"] == {IMAGES: "0"}

    # The freed room is used by another image: restoring the first would pass the limit.
    assert skopeo_push(server, certs, second, "undo/app:v2").returncode == 0
    refused = ac(home, "adm", "prune", "images", "--undo", run, "--confirm", check=False)
    assert refused.returncode != 0
    assert f"exceeded quota q: {IMAGES} requested 1, used 1, limited 1" in refused.stderr
    assert quota_status(kubectl, "undo", "q")["used"] == {IMAGES: "1"}

    # With the room back, the undo restores the image and charges it again.
    with server.client(server.admin_token) as client:
        r = client.delete(f"/v2/undo/app/manifests/{second.manifest.digest}")
        assert r.status_code == 202
    ac(home, "adm", "prune", "images", "--undo", run, "--confirm")
    assert quota_status(kubectl, "undo", "q")["used"] == {IMAGES: "1"}
    with server.client(server.admin_token) as client:
        assert client.get(f"/v2/undo/app/manifests/{first.manifest.digest}").status_code == 200


def test_limit_range_names_itself(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    kubectl.ok("create", "namespace", "limited")
    limit_range = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "image-limits", "namespace": "limited"},
        "spec": {
            "limits": [
                {"type": "image.alauda.io/Image", "max": {"storage": "1Mi"}},
                {
                    "type": "image.alauda.io/ImageStream",
                    "max": {"image.alauda.io/image-tags": "2", "image.alauda.io/images": "2"},
                },
            ]
        },
    }
    kubectl.ok("apply", "-f", "-", stdin=json.dumps(limit_range))
    got = yaml.safe_load(
        kubectl.ok("get", "limitrange", "image-limits", "-n", "limited", "-o", "yaml")
    )
    assert got["spec"]["limits"][0] == {"type": "image.alauda.io/Image", "max": {"storage": "1Mi"}}

    too_big = Image(tmp_path, "l-big", [random_blob("l-big", MI + 1)])
    refused = skopeo_push(server, certs, too_big, "limited/app:big")
    assert "refused by LimitRange image-limits: image.alauda.io/Image max storage is 1Mi" in (
        refused.stderr
    ), refused.stderr

    small = [Image(tmp_path, f"l{i}", [random_blob(f"l{i}", 100)]) for i in range(3)]
    assert skopeo_push(server, certs, small[0], "limited/app:a").returncode == 0
    assert skopeo_push(server, certs, small[1], "limited/app:b").returncode == 0
    refused = skopeo_push(server, certs, small[2], "limited/app:c")
    assert "refused by LimitRange image-limits: image.alauda.io/ImageStream max" in refused.stderr
    # Moving an existing tag adds neither a tag nor an image.
    assert skopeo_push(server, certs, small[1], "limited/app:a").returncode == 0

    bad = {**limit_range, "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}}
    bad["metadata"] = {"name": "bad", "namespace": "limited"}
    error = kubectl.run("apply", "-f", "-", stdin=json.dumps(bad))
    assert error.returncode != 0 and "is not supported" in error.stderr


def test_invalid_quota_is_refused(kubectl: Kubectl) -> None:
    kubectl.ok("create", "namespace", "invalid")
    error = kubectl.fails("create", "quota", "q", "-n", "invalid", "--hard=pods=10")
    assert "unsupported resource" in error
    error = kubectl.fails("create", "quota", "q", "-n", "invalid", f"--hard={STORAGE}=lots")
    assert error  # kubectl itself refuses a malformed quantity


def test_namespace_roles_read_quotas_only_cluster_admin_writes(
    server: RegistryProcess, kubectl: Kubectl
) -> None:
    kubectl.ok("create", "namespace", "tenant")
    kubectl.ok("create", "quota", "q", "-n", "tenant", f"--hard={IMAGES}=5")
    kubectl.ok(
        "create", "rolebinding", "boss", "-n", "tenant", "--clusterrole=admin", "--user=boss"
    )
    kubectl.ok("create", "rolebinding", "peek", "-n", "tenant", "--clusterrole=view", "--user=peek")
    boss, peek = add_user_token(server, "boss"), add_user_token(server, "peek")
    for token in (boss, peek):
        assert "q" in kubectl.ok("get", "quota", "-n", "tenant", token=token)
        assert kubectl.ok("get", "limitranges", "-n", "tenant", token=token) == ""
    assert "forbidden" in kubectl.fails("delete", "quota", "q", "-n", "tenant", token=boss)
    assert "forbidden" in kubectl.fails(
        "create", "quota", "more", "-n", "tenant", f"--hard={IMAGES}=500", token=boss
    )
    kubectl.ok("delete", "quota", "q", "-n", "tenant")  # cluster-admin


def test_ac_output_agrees_with_kubectl_describe(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    home = login_admin(server, tmp_path / "home")
    kubectl.ok("create", "namespace", "team-c")
    kubectl.ok("create", "quota", "bytes", "-n", "team-c", f"--hard={STORAGE}=1G,{STREAMS}=1000")
    kubectl.ok("create", "quota", "count", "-n", "team-c", f"--hard={IMAGES}=10")
    image = Image(tmp_path, "c1", [random_blob("c1", 1_999_000)])
    assert skopeo_push(server, certs, image, "team-c/app:v1").returncode == 0
    described = kubectl.ok("describe", "quota", "-n", "team-c")
    assert ac(home, "describe", "quota", "-n", "team-c").stdout == described
    assert as_bytes(describe_rows(kubectl, "team-c")[STORAGE][0]) == image.storage
    top = ac(home, "adm", "top", "imagestreams", "-n", "team-c").stdout
    assert top.startswith("NAME")
    assert "team-c/app" in top
    for block in described.strip().split("\n\n"):
        assert block.strip() in top


def test_prune_releases_quota_at_once_and_reports_it(
    server: RegistryProcess, kubectl: Kubectl, certs: Path, tmp_path: Path
) -> None:
    home = login_admin(server, tmp_path / "home")
    kubectl.ok("create", "namespace", "pruned")
    kubectl.ok("create", "quota", "q", "-n", "pruned", f"--hard={STORAGE}=1Gi,{IMAGES}=10")
    base = random_blob("p-base", 5000)
    old = Image(tmp_path, "p-old", [base, random_blob("p-old", 7000)])
    new = Image(tmp_path, "p-new", [base, random_blob("p-new", 3000)])
    assert skopeo_push(server, certs, old, "pruned/app:latest").returncode == 0
    assert skopeo_push(server, certs, new, "pruned/app:latest").returncode == 0
    assert quota_status(kubectl, "pruned", "q")["used"][IMAGES] == "2"
    flags = ("--keep-tag-revisions=1", "--keep-younger-than=0", "--confirm")
    done = ac(home, "adm", "prune", "images", *flags)
    freed = distinct_bytes(old, new) - new.storage  # the old layer and config, not the base
    line = f"Released quota in namespace pruned: {IMAGES} 1, {STORAGE} 7.21Ki ({freed} bytes)"
    assert freed == 7380 and line in done.stdout, done.stdout
    status = quota_status(kubectl, "pruned", "q")["used"]
    assert status == {IMAGES: "1", STORAGE: str(new.storage)}
    ac(home, "adm", "registry", "gc", "--confirm")  # reclaiming the bytes changes nothing more
    assert quota_status(kubectl, "pruned", "q")["used"] == status


def test_two_servers_sharing_postgresql_never_over_admit(
    tmp_path: Path, postgres_server: str
) -> None:
    """The namespace lock is PostgreSQL's, so replicas decide one after the other too:
    8 pushes spread over two server processes, room for exactly 5."""
    url = create_database(postgres_server, f"quota_{uuid.uuid4().hex[:10]}")
    blobs = tmp_path / "blobs"
    first = RegistryProcess(tmp_path / "a", database=url, extra_args=["--storage", str(blobs)])
    second = RegistryProcess(tmp_path / "b", database=url, extra_args=["--storage", str(blobs)])
    with first.start(timeout=120), second.start(timeout=120):
        kubectl = Kubectl(first, tmp_path / "kcache")
        kubectl.ok("create", "namespace", "race")
        images = [Image(tmp_path, f"pg{i}", [random_blob(f"pg-{i}", MI)]) for i in range(8)]
        each = images[0].storage
        assert all(image.storage == each for image in images)
        kubectl.ok("create", "quota", "q", "-n", "race", f"--hard={STORAGE}={5 * each + each // 2}")
        servers = [first, second]
        certs = [s.cert_dir(tmp_path / f"certs-{i}") for i, s in enumerate(servers)]

        def one(i: int) -> subprocess.CompletedProcess[str]:
            server = servers[i % 2]
            return skopeo_push(server, certs[i % 2], images[i], f"race/app:t{i}", first.admin_token)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
        ok = [images[i] for i, r in enumerate(results) if r.returncode == 0]
        assert len(ok) == 5, [r.stderr for r in results if r.returncode != 0]
        used = quota_status(kubectl, "race", "q")["used"][STORAGE]
        assert as_bytes(used) == distinct_bytes(*ok)
