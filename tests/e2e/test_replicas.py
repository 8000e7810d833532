"""Two replicas, one registry: `image-registry serve` twice, each with a data dir of its
own, over one PostgreSQL database and one S3 bucket (docs/operations.md, "Several
replicas"), with real clients: skopeo (`--all`, `--sign-by` with gpg, a signedBy policy),
the `oras` client, kubectl (`auth whoami`, `create token`, `get -w`) and plain HTTP for the
token endpoint and a chunked upload that survives a SIGKILL of the replica it started on.

Each module-scoped pair runs on moto (an S3 *emulator*, PyPI) and on OpenStack Swift's
s3api (a real S3 implementation from Debian).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import oras.client
import oras.oci
import pytest
import yaml

from tests.e2e.ac_images import blob, layer, write_index_layout, write_layout
from tests.e2e.kubectl_support import read_until
from tests.e2e.oci_support import assert_copied, build_layout, skopeo
from tests.support.replicas import S3_KINDS, Replicas, s3_server, two_replicas
from tests.support.server import BIN, RegistryProcess

MiB = 1 << 20
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module", params=S3_KINDS)
def pair(
    request: pytest.FixtureRequest, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    kind = str(request.param)
    root = tmp_path_factory.mktemp(f"replicas-{kind}")
    # One htpasswd file for both, as a mounted Secret would be (configuration, not state).
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    with (
        s3_server(kind) as s3,
        two_replicas(
            root,
            postgres_server,
            s3,
            name=f"replicas_{kind}",
            extra_args=["--htpasswd-file", str(htpasswd)],
        ) as replicas,
    ):
        yield replicas


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def _kubectl(
    kubeconfig: Path, server: RegistryProcess, cache: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["kubectl", "--kubeconfig", str(kubeconfig), "--server", server.url]
    command += ["--cache-dir", str(cache / f"kube-{server.port}")]
    if token:
        command.append(f"--token={token}")
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def _copy(*args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        ["skopeo", "copy", "--quiet", "--preserve-digests", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr


def test_skopeo_copy_all_of_an_index_to_a_and_back_from_b(pair: Replicas, work: Path) -> None:
    a, b = pair.both
    layout, index, children = write_index_layout(
        work / "src",
        {
            "amd64": [blob(os.urandom(6 * MiB)), layer("amd64-top", 4096)],
            "arm64": [layer("arm64-base", 8192), layer("arm64-top", 2048)],
        },
    )
    _copy(
        "--all",
        f"--dest-registry-token={a.admin_token}",
        f"--dest-cert-dir={a.cert_dir(work)}",
        f"oci:{layout}:img",
        f"docker://{a.host}/team/multi:v1",
    )
    out = work / "out"
    _copy(
        "--all",
        f"--src-registry-token={b.admin_token}",
        f"--src-cert-dir={b.cert_dir(work)}",
        f"docker://{b.host}/team/multi:v1",
        f"oci:{out}:img",
    )
    pulled = json.loads((out / "index.json").read_text())["manifests"][0]
    assert pulled["digest"] == index.digest
    for source in (layout / "blobs" / "sha256").iterdir():
        assert (out / "blobs" / "sha256" / source.name).read_bytes() == source.read_bytes()
    with b.client(b.admin_token) as client:
        for manifest in children.values():
            head = client.head(f"/v2/team/multi/manifests/{manifest.digest}")
            assert head.status_code == 200
            assert head.headers["docker-content-digest"] == manifest.digest


def test_a_multi_layer_image_pushed_to_a_pulls_from_b_byte_for_byte(
    pair: Replicas, work: Path
) -> None:
    a, b = pair.both
    # 6 MiB of filler per layer: every layer is a multipart upload of two parts.
    image = build_layout(work / "src", "multi-layer", layers=3, filler=6 * MiB)
    _copy(
        f"--dest-registry-token={a.admin_token}",
        f"--dest-cert-dir={a.cert_dir(work)}",
        f"oci:{image.path}:v1",
        f"docker://{a.host}/team/layers:v1",
    )
    out = work / "out"
    _copy(
        f"--src-registry-token={b.admin_token}",
        f"--src-cert-dir={b.cert_dir(work)}",
        f"docker://{b.host}/team/layers:v1",
        f"oci:{out}:v1",
    )
    assert_copied(out, image)


def _oras(server: RegistryProcess, token: str) -> Any:
    client = oras.client.OrasClient(
        hostname=server.host, tls_verify=str(server.ca_file), auth_backend="token"
    )
    client.auth.set_basic_auth("anyone", token)
    return client


def test_an_oras_artifact_pushed_to_a_is_found_through_referrers_on_b(
    pair: Replicas, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair.both
    monkeypatch.chdir(work)
    Path("app.txt").write_text("the application\n")
    Path("sbom.json").write_text('{"packages": ["replicated"]}\n')
    on_a = _oras(a, a.admin_token)
    assert on_a.push(target=f"{a.host}/team/art:v1", files=["app.txt"], quiet=True).ok
    subject = oras.oci.Subject.from_manifest(on_a.get_manifest(f"{a.host}/team/art:v1"))
    pushed = on_a.push(
        target=f"{a.host}/team/art:sbom",
        files=["sbom.json:application/spdx+json"],
        subject=subject,
        manifest_annotations={"kind": "sbom"},
        quiet=True,
    )
    assert pushed.status_code == 201
    with b.client(b.admin_token) as client:
        found = client.get(f"/v2/team/art/referrers/{subject.digest}").json()
    assert [m["digest"] for m in found["manifests"]] == [pushed.headers["Docker-Content-Digest"]]
    assert found["manifests"][0]["annotations"] == {"kind": "sbom"}
    # The artifact's file comes back from B.
    pulled = _oras(b, b.admin_token).pull(
        target=f"{b.host}/team/art@{found['manifests'][0]['digest']}", outdir=str(work / "pulled")
    )
    assert [Path(p).read_text() for p in pulled] == ['{"packages": ["replicated"]}\n']


@dataclass(frozen=True)
class Gpg:
    home: Path
    key: str

    def run(self, *args: str) -> bytes:
        base = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        return subprocess.run(
            [*base, *args],
            capture_output=True,
            check=True,
            timeout=60,
            env={**os.environ, "GNUPGHOME": str(self.home)},
        ).stdout


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpg]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = Gpg(home, "")
    for uid in ("Signer <signer@example.com>", "Other <other@example.com>"):
        keys.run("--quick-gen-key", uid, "ed25519", "sign", "never")
    listing = keys.run("--with-colons", "--list-keys", "signer@example.com").decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    try:
        yield Gpg(home, fingerprint)
    finally:  # skopeo's gpgme started an agent for this GNUPGHOME
        subprocess.run(
            ["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
        )


def _policy(path: Path, key_file: Path, signed_prefix: str, prefix: str) -> Path:
    """A containers-policy.json requiring a signature by `key_file`; a replica's clients
    reach it under another host name, so the signed identity is remapped."""
    requirement = {
        "type": "signedBy",
        "keyType": "GPGKeys",
        "keyPath": str(key_file),
        "signedIdentity": {
            "type": "remapIdentity",
            "prefix": prefix,
            "signedPrefix": signed_prefix,
        },
    }
    path.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {prefix: [requirement]},
                    "oci": {"": [{"type": "insecureAcceptAnything"}]},
                },
            }
        )
    )
    return path


def test_a_signature_pushed_to_a_is_verified_by_skopeo_through_b(
    pair: Replicas, gpg: Gpg, work: Path
) -> None:
    a, b = pair.both
    layout, manifest, _ = write_layout(work / "src", [layer("signed", 4096)])
    _copy(
        f"--sign-by={gpg.key}",
        f"--dest-registry-token={a.admin_token}",
        f"--dest-cert-dir={a.cert_dir(work)}",
        f"oci:{layout}:img",
        f"docker://{a.host}/team/signed:v1",
        env={"GNUPGHOME": str(gpg.home)},
    )
    (work / "signer.gpg").write_bytes(gpg.run("--export", gpg.key))
    (work / "other.gpg").write_bytes(gpg.run("--export", "other@example.com"))
    pull = [
        "--remove-signatures",  # an OCI layout keeps none; the policy is checked all the same
        f"--src-registry-token={b.admin_token}",
        f"--src-cert-dir={b.cert_dir(work)}",
        f"docker://{b.host}/team/signed:v1",
    ]
    accepted = _policy(work / "accept.json", work / "signer.gpg", a.host, b.host)
    _copy(f"--policy={accepted}", *pull, f"oci:{work / 'out'}:img")
    assert json.loads((work / "out" / "index.json").read_text())["manifests"][0]["digest"] == (
        manifest.digest
    )
    # The same pull under a policy naming another key is refused: B served the signature.
    refused = _policy(work / "refuse.json", work / "other.gpg", a.host, b.host)
    result = skopeo("copy", f"--policy={refused}", *pull, f"oci:{work / 'refused'}:img")
    assert result.returncode != 0
    assert "signature" in result.stderr.lower()


def test_the_admin_kubeconfig_of_either_replica_works_on_both(pair: Replicas, work: Path) -> None:
    configs = [yaml.safe_load(s.kubeconfig.read_text()) for s in pair.both]
    # One cluster-admin identity and one CA for the registry, whoever wrote the file.
    assert configs[0]["users"] == configs[1]["users"]
    for replica in pair.both:
        for server in pair.both:
            result = _kubectl(replica.kubeconfig, server, work, "auth", "whoami", "-o", "json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["status"]["userInfo"]["username"] == "system:admin"
    # The served CA is the one in DATA_DIR/tls/ca.crt of either replica.
    assert pair.a.ca_file.read_bytes() == pair.b.ca_file.read_bytes()
    ca = base64.b64decode(configs[1]["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == pair.a.ca_file.read_bytes()


def test_tokens_minted_on_a_are_accepted_on_b(pair: Replicas, work: Path) -> None:
    a, b = pair.both

    def on(server: RegistryProcess, *args: str, token: str | None = None) -> str:
        result = _kubectl(a.kubeconfig, server, work, *args, token=token)
        assert result.returncode == 0, result.stderr
        return result.stdout

    # `kubectl create token` on A, used on B (and the other way round).
    on(a, "create", "namespace", "robots")
    on(a, "create", "serviceaccount", "builder", "-n", "robots")
    for minter, user in ((a, b), (b, a)):
        token = on(minter, "create", "token", "builder", "-n", "robots").strip()
        whoami = json.loads(on(user, "auth", "whoami", "-o", "json", token=token))
        assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:robots:builder"
    forged = _kubectl(a.kubeconfig, b, work, "auth", "whoami", token="not-a-token")
    assert forged.returncode != 0

    # `/v2/token` (a password login, with a refresh token) on A; the token on B.
    with a.client() as on_a, b.client() as on_b:
        issued = on_a.get(
            "/v2/token",
            params={"service": a.host, "offline_token": "true", "client_id": "tests"},
            auth=("alice", PASSWORD),
        )
        assert issued.status_code == 200, issued.text
        access, refresh = issued.json()["token"], issued.json()["refresh_token"]
        assert on_b.get("/v2/", headers={"Authorization": f"Bearer {access}"}).status_code == 200
        assert on_b.get("/v2/", headers={"Authorization": "Bearer forged"}).status_code == 401
        renewed = on_b.post(
            "/v2/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh, "service": b.host},
        )
        assert renewed.status_code == 200, renewed.text
        again = renewed.json()["access_token"]
        assert on_a.get("/v2/", headers={"Authorization": f"Bearer {again}"}).status_code == 200


def test_a_blob_redirect_from_either_replica_serves_the_bytes(pair: Replicas) -> None:
    a, b = pair.both
    data = os.urandom(2 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with a.client(a.admin_token, timeout=120) as on_a, b.client(b.admin_token) as on_b:
        pushed = on_a.post(
            "/v2/team/redirect/blobs/uploads/", params={"digest": digest}, content=data
        )
        assert pushed.status_code == 201, pushed.text
        for client in (on_a, on_b):
            answer = client.get(f"/v2/team/redirect/blobs/{digest}")
            assert answer.status_code == 307
            assert answer.headers["location"].startswith(pair.s3.endpoint)
            assert httpx.get(answer.headers["location"], timeout=120).content == data
    # Authorization comes first on every replica.
    with b.client() as anonymous:
        assert anonymous.get(f"/v2/team/redirect/blobs/{digest}").status_code == 401


def test_kubectl_watch_on_a_sees_a_push_made_on_b(pair: Replicas, work: Path) -> None:
    a, b = pair.both
    assert _kubectl(a.kubeconfig, a, work, "create", "namespace", "watched").returncode == 0
    command = ["kubectl", "--kubeconfig", str(a.kubeconfig), "--cache-dir", str(work / "kw")]
    proc = subprocess.Popen(
        [*command, "get", "imagestreams", "-n", "watched", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        layout, _, _ = write_layout(work / "src", [layer("watched", 2048)])
        _copy(
            f"--dest-registry-token={b.admin_token}",
            f"--dest-cert-dir={b.cert_dir(work)}",
            f"oci:{layout}:img",
            f"docker://{b.host}/watched/pushed-on-b:v1",
        )
        seen = read_until(proc, "imagestream.image.alauda.io/pushed-on-b", limit=120.0)
    finally:
        proc.kill()
        proc.wait()
    assert "imagestream.image.alauda.io/pushed-on-b" in seen, seen


def test_a_replica_killed_mid_upload_the_client_finishes_on_the_other(pair: Replicas) -> None:
    """PATCH a chunk to A, start the next one and SIGKILL A while its bytes stream; the
    client asks B where the upload stands, sends the rest there and commits on B."""
    a, b = pair.both
    token = a.admin_token
    data = os.urandom(6 * MiB) + os.urandom(9 * MiB)
    first = 6 * MiB
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    halfway = threading.Event()
    resume = threading.Event()

    def second_chunk() -> Iterator[bytes]:
        yield data[first : first + 2 * MiB]
        halfway.set()
        resume.wait(120)  # A is killed meanwhile: the rest never arrives there
        yield data[first + 2 * MiB :]

    failed: list[BaseException] = []
    try:
        with a.client(token, timeout=120) as on_a:
            started = on_a.post("/v2/team/killed/blobs/uploads/")
            assert started.status_code == 202, started.text
            answer = on_a.patch(
                started.headers["location"],
                content=data[:first],
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 202, answer.text
            location = answer.headers["location"]

            def stream() -> None:
                try:
                    on_a.patch(
                        location,
                        content=second_chunk(),
                        headers={"Content-Type": "application/octet-stream"},
                    )
                except httpx.HTTPError as exc:
                    failed.append(exc)

            sender = threading.Thread(target=stream)
            sender.start()
            assert halfway.wait(120)
            a.kill()
            resume.set()
            sender.join(120)
        assert failed, "the PATCH to the killed replica cannot have succeeded"
        with b.client(token, timeout=120) as on_b:
            status = on_b.get(location)
            assert status.status_code == 204, status.text
            end = int(status.headers["range"].split("-")[1]) + 1
            assert end == first  # exactly the chunk A finished
            rest = on_b.patch(
                status.headers["location"],
                content=data[end:],
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{end}-{len(data) - 1}",
                },
            )
            assert rest.status_code == 202, rest.text
            done = on_b.put(rest.headers["location"], params={"digest": digest})
            assert done.status_code == 201, done.text
            pulled = on_b.get(f"/v2/team/killed/blobs/{digest}", follow_redirects=True)
            assert hashlib.sha256(pulled.content).hexdigest() == digest.split(":")[1]
    finally:
        resume.set()
        if a.proc is not None and a.proc.poll() is not None:
            a.start(timeout=120)  # the other tests of the module keep their pair


def _multipart_uploads(pair: Replicas, key: str) -> int:
    """Multipart uploads under way at `key` of the pair's bucket."""
    client = pair.s3.client()
    uploads = client.list_multipart_uploads(Bucket=pair.bucket).get("Uploads", [])
    return sum(1 for upload in uploads if upload["Key"] == key)


def test_a_chunk_sent_to_b_while_a_streams_one_to_the_same_upload_is_refused(
    pair: Replicas,
) -> None:
    """Two chunks for the same offset of one upload, one streaming into A when the other
    reaches B: B refuses its chunk (409, the session is busy) instead of staging it at
    the same offset, and the upload commits as exactly the bytes A received
    (docs/operations.md, "Several replicas")."""
    a, b = pair.both
    token = a.admin_token
    mine = os.urandom(8 * MiB)  # more than one part: A's stream is visible in the bucket
    other = os.urandom(MiB)
    digest = "sha256:" + hashlib.sha256(mine).hexdigest()
    other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
    streaming = threading.Event()
    resume = threading.Event()

    def chunk() -> Iterator[bytes]:
        yield mine[: 6 * MiB]
        streaming.set()
        resume.wait(120)
        yield mine[6 * MiB :]

    answers: list[httpx.Response | BaseException] = []
    with a.client(token, timeout=120) as on_a, b.client(token, timeout=120) as on_b:
        started = on_a.post("/v2/team/contended/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        upload_id = location.rstrip("/").rsplit("/", 1)[1]
        segment = f"{pair.prefix}/uploads/{upload_id}/data/{0:020d}"

        def stream() -> None:
            try:
                answers.append(
                    on_a.patch(
                        location,
                        content=chunk(),
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"0-{len(mine) - 1}",
                        },
                    )
                )
            except BaseException as exc:  # reported by the assertion below
                answers.append(exc)

        sender = threading.Thread(target=stream)
        sender.start()
        try:
            assert streaming.wait(120)
            # A has passed its offset check and is sending parts of segment 0 to the store.
            deadline = time.monotonic() + 120
            while _multipart_uploads(pair, segment) == 0:
                assert time.monotonic() < deadline, "A never started streaming its chunk"
                time.sleep(0.1)
            refused = on_b.patch(
                location,
                content=other,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"0-{len(other) - 1}",
                },
            )
        finally:
            resume.set()
            sender.join(120)
        assert refused.status_code == 409, refused.text
        assert refused.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        assert answers[0].status_code == 202, answers[0].text
        assert answers[0].headers["range"] == f"0-{len(mine) - 1}"
        # The loser's replica sees A's chunk and commits exactly those bytes.
        status = on_b.get(location)
        assert status.headers["range"] == f"0-{len(mine) - 1}"
        done = on_b.put(location, params={"digest": digest})
        assert done.status_code == 201, done.text
        pulled = on_b.get(f"/v2/team/contended/blobs/{digest}", follow_redirects=True)
        assert pulled.status_code == 200
        assert hashlib.sha256(pulled.content).hexdigest() == digest.split(":")[1]
        assert on_a.head(f"/v2/team/contended/blobs/{other_digest}").status_code == 404


def test_rotating_the_admin_token_takes_effect_on_every_replica(pair: Replicas) -> None:
    """`image-registry rotate-secret admin-token`: the old token is refused by both
    replicas (once their few seconds of authentication cache have passed); each writes the
    new one into its admin.kubeconfig when it restarts."""
    old = pair.a.admin_token
    rotated = subprocess.run(
        [
            str(BIN / "image-registry"),
            "rotate-secret",
            "admin-token",
            *("--database", pair.database, "--data-dir", str(pair.a.data_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rotated.returncode == 0, rotated.stderr
    assert old not in rotated.stdout + rotated.stderr
    for replica in pair.both:
        with replica.client(old) as client:
            deadline = time.monotonic() + 60  # a guard against a hang, not a bound
            while (answer := client.get("/v2/")).status_code == 200:
                assert time.monotonic() < deadline, "the rotated token is still accepted"
                time.sleep(0.5)
            assert answer.status_code == 401
        replica.stop()
        replica.start(timeout=120)
    new = pair.a.admin_token
    assert new != old and pair.b.admin_token == new
    for replica in pair.both:
        with replica.client(new) as client:
            assert client.get("/v2/").status_code == 200


PRUNERS = "/apis/imageregistry.operator.alauda.io/v1/imagepruners"


def _prune_runs(server: RegistryProcess) -> float:
    with server.client(server.admin_token) as client:
        text = client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("imageregistry_prune_runs_total{")
    )


def test_scheduled_pruning_runs_on_one_replica_at_a_time(pair: Replicas) -> None:
    """Both replicas run the scheduler loop every 20 s; a schedule due every minute runs
    once per minute in all, on whichever replica holds the lease."""
    if pair.s3.name != "moto":
        pytest.skip("the lease is in the database: one object store suffices")
    a, b = pair.both
    before = _prune_runs(a) + _prune_runs(b)
    pruner = {
        "apiVersion": "imageregistry.operator.alauda.io/v1",
        "kind": "ImagePruner",
        "metadata": {"name": "cluster"},
        "spec": {"schedule": "* * * * *", "successfulJobsHistoryLimit": 10},
    }
    with a.client(a.admin_token) as on_a, b.client(b.admin_token) as on_b:
        created = on_a.post(PRUNERS, json=pruner)
        assert created.status_code == 201, created.text
        try:
            # Two due minutes: by the second run every replica has ticked (every 20 s)
            # through the whole first minute, so a second run of that minute would show.
            deadline = time.monotonic() + 300  # a guard against a hang, not a bound
            history: list[dict[str, Any]] = []
            while len(history) < 2:
                assert time.monotonic() < deadline, f"no two scheduled runs: {history}"
                time.sleep(2)
                status = on_b.get(f"{PRUNERS}/cluster").json().get("status") or {}
                history = status.get("history") or []
            # Each run was counted by the one replica that ran it (a run may land between
            # the reads, hence the history before and after the count).
            runs = _prune_runs(a) + _prune_runs(b) - before
            after = on_b.get(f"{PRUNERS}/cluster").json()["status"]["history"]
            assert len(history) <= runs <= len(after), (runs, after)
            minutes = [str(entry["time"])[:16] for entry in after]
            assert len(set(minutes)) == len(minutes), after
            assert all(entry["succeeded"] for entry in after), after
        finally:
            on_a.delete(f"{PRUNERS}/cluster")


def _rotate(pair: Replicas, *args: str) -> None:
    rotated = subprocess.run(
        [str(BIN / "image-registry"), "rotate-secret", *args, "--database", pair.database],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rotated.returncode == 0, rotated.stderr


def test_rotating_the_token_signing_key_keeps_issued_tokens_until_revoked(
    pair: Replicas, work: Path
) -> None:
    """After `rotate-secret token-signing-key` and a restart of both replicas, a token
    issued before still works on both and new ones are issued; `--revoke-old` ends the
    tokens signed with the previous key."""
    if pair.s3.name != "moto":
        pytest.skip("the keys are in the database: one object store suffices")
    a = pair.a

    def create_token() -> str:
        result = _kubectl(a.kubeconfig, a, work, "create", "token", "rotator", "-n", "rotation")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def accepted(token: str) -> list[int]:
        codes = []
        for replica in pair.both:
            with replica.client(token) as client:
                codes.append(client.get("/v2/").status_code)
        return codes

    def restart_both() -> None:
        for replica in pair.both:
            replica.stop()
            replica.start(timeout=120)

    for args in (
        ("create", "namespace", "rotation"),
        ("create", "sa", "rotator", "-n", "rotation"),
    ):
        assert _kubectl(a.kubeconfig, a, work, *args).returncode == 0
    before = create_token()
    _rotate(pair, "token-signing-key")
    restart_both()
    after = create_token()
    assert accepted(before) == [200, 200]
    assert accepted(after) == [200, 200]
    _rotate(pair, "token-signing-key", "--revoke-old")
    restart_both()
    assert accepted(before) == [401, 401]
    assert accepted(after) == [401, 401]
    assert accepted(create_token()) == [200, 200]
