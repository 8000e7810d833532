"""Blobs damaged in storage: never served as if intact, found by
`ac adm registry verify`, and repaired by pushing them again.

One plain-HTTP server with the blob port for the module; the damage is done the way a
failing disk or an operator would do it, by rewriting the files under the storage root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.ac_support import ac
from tests.e2e.kubectl_support import add_user_token
from tests.e2e.test_blob_port import REPO, blob_server, push, sha
from tests.support.server import RegistryProcess

BIG = os.urandom(3 * 1024 * 1024 + 5)  # redirected to the blob port when whole


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with blob_server(tmp_path_factory.mktemp("integrity")) as process:
        yield process


@pytest.fixture(scope="module")
def home(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    ac(home, "login", server.url, "--token", server.admin_token)  # plain HTTP: no CA
    return home


def stored(server: RegistryProcess, digest: str) -> Path:
    hexd = digest.split(":")[1]
    return server.data_dir / "blobs" / "blobs" / "sha256" / hexd[:2] / hexd


def flip_a_byte(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def get(server: RegistryProcess, digest: str, **kwargs: object) -> httpx.Response:
    with server.client(server.admin_token) as client:
        return client.get(f"/v2/{REPO}/blobs/{digest}", **kwargs)  # type: ignore[arg-type]


def head(server: RegistryProcess, digest: str) -> httpx.Response:
    with server.client(server.admin_token) as client:
        return client.head(f"/v2/{REPO}/blobs/{digest}")


def error_message(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["message"])


def test_a_truncated_blob_is_refused_everywhere_and_a_push_repairs_it(
    server: RegistryProcess,
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    digest = push(server, data)
    link = get(server, digest).headers["location"]  # minted while the blob was intact
    path = stored(server, digest)
    path.write_bytes(data[:100])

    assert head(server, digest).status_code == 404  # so a pusher uploads it again
    refused = get(server, digest)
    assert refused.status_code == 404
    assert refused.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert "damaged" in error_message(refused)
    ranged = get(server, digest, headers={"Range": "bytes=0-49"})
    assert ranged.status_code == 404
    on_blob_port = httpx.get(link)
    assert on_blob_port.status_code == 404
    assert on_blob_port.content != data[:100] and "damaged" in error_message(on_blob_port)
    assert f"blob {digest} has 100 bytes in storage but {len(data)}" in server.log_text()

    assert push(server, data) == digest  # the commit replaces the short file
    assert path.stat().st_size == len(data)
    assert get(server, digest, follow_redirects=True).content == data
    assert httpx.get(get(server, digest).headers["location"]).content == data


def test_verify_finds_a_flipped_byte_marks_it_and_a_push_repairs_it(
    server: RegistryProcess, home: Path
) -> None:
    small = os.urandom(64 * 1024)
    digest = push(server, small)
    intact = push(server, os.urandom(10_000))
    flip_a_byte(stored(server, digest))

    dry = ac(home, "adm", "registry", "verify", check=False)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "Dry run enabled" in dry.stderr
    assert f"Corrupt blob {digest} (64KiB): content hashes to sha256:" in dry.stdout
    assert "would be marked corrupt" in dry.stdout and intact not in dry.stdout
    assert get(server, digest).status_code == 200  # a dry run marks nothing

    report = json.loads(ac(home, "adm", "registry", "verify", "-o", "json", check=False).stdout)
    assert report["dryRun"] is True and report["continue"] == ""
    assert [b["digest"] for b in report["corrupt"]] == [digest]
    assert report["corrupt"][0]["storedSize"] == len(small)
    assert report["corrupt"][0]["storedDigest"] != digest

    confirmed = ac(home, "adm", "registry", "verify", "--confirm", "--page-size", "1", check=False)
    assert confirmed.returncode == 1
    assert f"Corrupt blob {digest} (64KiB)" in confirmed.stdout
    assert "(marked corrupt)" in confirmed.stdout
    assert "marked 1 corrupt" in confirmed.stdout

    refused = get(server, digest)
    assert refused.status_code == 404 and "corrupt" in error_message(refused)
    assert head(server, digest).status_code == 404
    assert get(server, intact).status_code == 200

    assert push(server, small) == digest  # same size, but marked: replaced
    healed = get(server, digest)
    assert healed.status_code == 200 and healed.content == small
    again = ac(home, "adm", "registry", "verify")
    assert "Found 0 damaged blobs" in again.stdout


def test_verify_resumes_after_a_continue_token(server: RegistryProcess, home: Path) -> None:
    blobs = sorted(push(server, os.urandom(5000)) for _ in range(3))
    flip_a_byte(stored(server, blobs[0]), at=10)
    flip_a_byte(stored(server, blobs[2]), at=10)

    answer = ac(
        home, "adm", "registry", "verify", "--continue", blobs[1], "-o", "json", check=False
    )
    assert answer.stdout, answer.stderr
    resumed = json.loads(answer.stdout)
    found = [b["digest"] for b in resumed["corrupt"]]
    assert blobs[2] in found and blobs[0] not in found  # only blobs after the token
    full = json.loads(ac(home, "adm", "registry", "verify", "-o", "json", check=False).stdout)
    assert {blobs[0], blobs[2]} <= {b["digest"] for b in full["corrupt"]}
    assert full["checked"] > resumed["checked"]
    served = get(server, blobs[0])
    assert served.status_code == 200 and sha(served.content) != blobs[0]  # until marked
    ac(home, "adm", "registry", "verify", "--confirm", "--continue", blobs[1], check=False)
    assert get(server, blobs[2]).status_code == 404
    assert get(server, blobs[0]).status_code == 200  # before the token: not visited


@pytest.mark.parametrize(
    "spec",
    [{"limit": 0}, {"limit": 10_001}, {"limit": "5"}, {"continue": 5}, {"continue": "x" * 201}],
)
def test_a_bad_verification_spec_is_a_400(server: RegistryProcess, spec: dict[str, object]) -> None:
    body = {"apiVersion": "image.alauda.io/v1", "kind": "RegistryVerification", "spec": spec}
    with server.client(server.admin_token) as client:
        answer = client.post(
            "/apis/image.alauda.io/v1/registryverifications",
            params={"dryRun": "All"},
            json=body,
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["kind"] == "Status"


def test_verification_needs_the_pruner_role(server: RegistryProcess) -> None:
    token = add_user_token(server, "nobody")
    with server.client(token) as client:
        answer = client.post(
            "/apis/image.alauda.io/v1/registryverifications",
            params={"dryRun": "All"},
            json={"spec": {}},
        )
    assert answer.status_code == 403, answer.text
