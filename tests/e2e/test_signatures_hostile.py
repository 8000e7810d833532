"""Image signatures under hostile and mistaken input, against a real server, gpg and `ac`.

Complements `test_signatures.py` (the happy paths and the obvious negatives): payloads that
different JSON parsers read differently, compression bombs, hostile nesting, signature
lists too large for containers/image to read, path tricks on the extension endpoint,
signature forms gpg accepts (clearsigned, armored, subkeys) and rejects (detached,
revoked), a verifier without permissions and the pull-time policy with a bad signature.
Every refusal must be a clear message with nothing written, never a 5xx or a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imageregistry.signatures.simplesigning import build_payload
from tests.e2e.ac_support import AC
from tests.e2e.oci_support import require_signatures
from tests.support.server import RegistryProcess

IMAGES = "/apis/image.alauda.io/v1/images"
SIGS = "/apis/image.alauda.io/v1/imagesignatures"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Keys:
    """A throwaway GNUPGHOME with a signing key, a stranger, a subkey signer, a revoked key."""

    home: Path
    unrevoked_home: Path  # still signs with the revoked key (revocation imported only in home)
    main: str
    stranger: str
    with_subkey: str
    revoked: str

    def gpg(self, *args: str, stdin: bytes = b"", home: Path | None = None) -> bytes:
        base = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        return subprocess.run(
            [*base, *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, "GNUPGHOME": str(home or self.home)},
            check=True,
            timeout=60,
        ).stdout

    def sign(self, payload: bytes, *, key: str | None = None, how: str = "--sign") -> bytes:
        args = ("--compress-algo", "none", "--local-user", key or self.main, how)
        home = self.unrevoked_home if key == self.revoked else None
        return self.gpg(*args, stdin=payload, home=home)


def _fingerprint(keys: Keys, uid: str) -> str:
    listing = keys.gpg("--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


def _new_key(keys: Keys, uid: str, usage: str = "sign") -> str:
    keys.gpg("--quick-gen-key", uid, "ed25519", usage, "never")
    return _fingerprint(keys, uid)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    home = Path(tmp_path_factory.mktemp("gnupg-hostile"))
    unrevoked = Path(tmp_path_factory.mktemp("gnupg-unrevoked"))
    for path in (home, unrevoked):
        path.chmod(0o700)
    blank = Keys(home, unrevoked, "", "", "", "")
    try:
        with_subkey = _new_key(blank, "Sub <sub@example.com>", "cert")
        blank.gpg("--quick-add-key", with_subkey, "ed25519", "sign", "never")
        revoked = _new_key(blank, "Revoked <rev@example.com>")
        secret = blank.gpg("--export-secret-keys", revoked)
        blank.gpg("--import", stdin=secret, home=unrevoked)
        yield Keys(
            home,
            unrevoked,
            main=_new_key(blank, "Main <main@example.com>"),
            stranger=_new_key(blank, "Stranger <x@example.com>"),
            with_subkey=with_subkey,
            revoked=revoked,
        )
    finally:
        for path in (home, unrevoked):
            subprocess.run(
                ["gpgconf", "--kill", "all"],
                env={**os.environ, "GNUPGHOME": str(path)},
                check=False,
            )


@dataclass(frozen=True)
class Env:
    server: RegistryProcess
    keys: Keys
    work: Path

    def api(self, token: str | None = None) -> httpx.Client:
        return self.server.client(token or self.server.admin_token, timeout=60)

    def key_file(self, fingerprint: str) -> Path:
        path = self.work / f"{fingerprint}.gpg"
        if not path.exists():
            path.write_bytes(self.keys.gpg("--export", fingerprint))
        return path


@pytest.fixture(scope="module")
def env(registry: RegistryProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Env:
    work = Path(tmp_path_factory.mktemp("hostile-work"))
    # The revoked key is exported *after* its revocation, as a verifier would receive it.
    rev = keys.home / "openpgp-revocs.d" / f"{keys.revoked}.rev"
    keys.gpg("--import", stdin=rev.read_bytes().replace(b":-----BEGIN", b"-----BEGIN"))
    return Env(registry, keys, work)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(env: Env, repo: str) -> str:
    """Push a one-layer image to `repo:latest` over the plain registry API."""
    layer = repo.encode() * 8
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    with env.api() as client:
        for blob in (config, layer):
            r = client.post(
                f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(blob)}, content=blob
            )
            assert r.status_code == 201, r.text
        r = client.put(
            f"/v2/{repo}/manifests/latest",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201, r.text
    return _digest(manifest)


def put_signature(env: Env, repo: str, digest: str, content: bytes) -> httpx.Response:
    entry = {
        "schemaVersion": 2,
        "name": f"{digest}@{hashlib.sha256(content).hexdigest()[:32]}",
        "type": "atomic",
        "content": base64.b64encode(content).decode(),
    }
    with env.api() as client:
        return client.put(f"/extensions/v2/{repo}/signatures/{digest}", json=entry)


def verify(
    env: Env, digest: str, identity: str, *extra: str, key: Path | None = None, token: str = ""
) -> subprocess.CompletedProcess[str]:
    args = [AC, "adm", "verify-image-signature", digest, f"--expected-identity={identity}"]
    args += [f"--public-key={key or env.key_file(env.keys.main)}", *extra]
    args += ["--kubeconfig", str(env.server.kubeconfig)]
    if token:
        args += ["--token", token]
    return subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "HOME": str(env.work)}, timeout=120
    )


def signatures_of(env: Env, digest: str) -> list[dict[str, Any]]:
    with env.api() as client:
        r = client.get(f"{IMAGES}/{digest}")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json().get("signatures") or []
    return found


def assert_no_trust(env: Env, digest: str) -> None:
    assert all(not s.get("conditions") for s in signatures_of(env, digest))


def assert_clean_failure(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert needle in result.stdout + result.stderr, result.stdout + result.stderr


def test_duplicate_digest_key_is_not_read_as_the_last_one(env: Env) -> None:
    """`docker-manifest-digest` twice: Python keeps the last, other parsers the first."""
    repo = "hostile/dupkey"
    digest = push(env, repo)
    honest = build_payload(f"{env.server.host}/{repo}:latest", digest)
    other = "sha256:" + "b" * 64
    forged = honest.replace(
        b'"image":{', b'"image":{"docker-manifest-digest":"' + other.encode() + b'",'
    )
    assert put_signature(env, repo, digest, env.keys.sign(forged)).status_code == 201
    result = verify(env, digest, f"{env.server.host}/{repo}:latest", "--save")
    assert_clean_failure(result, "duplicate JSON key 'docker-manifest-digest'")
    assert_no_trust(env, digest)


def test_compression_bomb_is_refused_before_it_is_buffered(env: Env) -> None:
    repo = "hostile/bomb"
    digest = push(env, repo)
    # 8 MiB of zeros compress to a few KiB; gpg would expand them before checking the key.
    bomb = env.keys.gpg(
        "--compress-algo", "zlib", "-z", "9", "--local-user", env.keys.stranger, "--sign",
        stdin=b"\0" * (8 << 20),
    )  # fmt: skip
    assert len(bomb) < 64 << 10
    assert put_signature(env, repo, digest, bomb).status_code == 201
    result = verify(env, digest, f"{env.server.host}/{repo}:latest")
    assert_clean_failure(result, "signed payload is larger than")


def test_deeply_nested_cosign_content_fails_cleanly(env: Env) -> None:
    """A hostile ImageSignature (type cosign) must not crash the verifier for everyone."""
    repo = "hostile/nested"
    digest = push(env, repo)
    good = env.keys.sign(build_payload(f"{env.server.host}/{repo}:latest", digest))
    assert put_signature(env, repo, digest, good).status_code == 201
    body = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageSignature",
        "metadata": {"name": f"{digest}@nested"},
        "type": "cosign",
        "content": base64.b64encode(b"[" * 200_000).decode(),
    }
    with env.api() as client:
        assert client.post(SIGS, json=body).status_code == 201
    pem = env.work / "some.pem"
    pem.write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n"
        b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJ8mH0hF1oRPCZRmRH9tB4p9X+oYh\n"
        b"o3mOvhQ2mtmBZh6kq8y8nZ2VSzPyJXe4V0w4UL0LPXIwpPsaOZKb2z1W0w==\n"
        b"-----END PUBLIC KEY-----\n"
    )
    gpg_key = str(env.key_file(env.keys.main))
    result = verify(
        env, digest, f"{env.server.host}/{repo}:latest", "--public-key", gpg_key, key=pem
    )
    assert result.returncode == 0, result.stdout + result.stderr  # the good one still counts
    assert "Traceback" not in result.stderr
    assert f"{digest}@nested (cosign): Failed" in result.stdout


def test_signature_list_stays_readable_by_containers_image(env: Env) -> None:
    """containers/image reads at most 4 MiB of signature list; beyond it every pull fails."""
    repo = "hostile/many"
    digest = push(env, repo)
    statuses = [
        put_signature(env, repo, digest, bytes([i]) * (700 << 10)).status_code for i in range(6)
    ]
    assert statuses[:2] == [201, 201]
    assert 413 in statuses
    body = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageSignature",
        "metadata": {"name": f"{digest}@viaapi"},
        "type": "atomic",
        "content": base64.b64encode(b"\x07" * (700 << 10)).decode(),
    }
    with env.api() as client:
        refused = client.post(SIGS, json=body)
        listed = client.get(f"/extensions/v2/{repo}/signatures/{digest}")
    assert refused.status_code == 422, refused.text
    assert listed.status_code == 200
    assert len(listed.content) < 4 << 20


@pytest.mark.parametrize(
    "path",
    [
        "/extensions/v2/hostile/paths/signatures/sha256:" + "0" * 63,
        "/extensions/v2/hostile/paths/signatures/sha256:" + "G" * 64,
        "/extensions/v2/../hostile/paths/signatures/{digest}",
        "/extensions/v2/hostile/%2e%2e/paths/signatures/{digest}",
        "/extensions/v2/hostile%2Fpaths/signatures/{digest}",
        "/extensions/v2//signatures/{digest}",
        "/extensions/v2/hostile/paths/signatures/",
    ],
)
def test_extension_path_tricks_never_5xx(env: Env, path: str) -> None:
    digest = push(env, "hostile/paths")
    with env.api() as client:
        r = client.get(path.format(digest=digest))
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"content": ""}, "non-empty"),
        ({"content": "!!!!"}, "base64"),
        ({"content": "AAAA", "name": "{digest}@../../etc"}, "must be <image digest>"),
        ({"content": "AAAA", "name": "{digest}@a/b"}, "must be <image digest>"),
        ({"content": "AAAA", "name": "{digest}@"}, "must be <image digest>"),
        ({"content": "AAAA", "name": "sha256:" + "1" * 64 + "@x"}, "not for image"),
        ({"content": "AAAA", "type": "cosign"}, "type must be"),
        ({"content": "AAAA", "schemaVersion": 1}, "schemaVersion"),
    ],
)
def test_malformed_extension_entries_are_400(env: Env, entry: dict[str, Any], needle: str) -> None:
    digest = push(env, "hostile/entries")
    body = {"schemaVersion": 2, "name": f"{digest}@abc", "type": "atomic", **entry}
    body["name"] = str(body["name"]).format(digest=digest)
    with env.api() as client:
        r = client.put(f"/extensions/v2/hostile/entries/signatures/{digest}", json=body)
        huge = client.put(
            f"/extensions/v2/hostile/entries/signatures/{digest}",
            content=b'{"content":"' + b"A" * (2 << 20) + b'"}',
        )
    assert r.status_code == 400, r.text
    assert needle in r.text
    assert huge.status_code == 413 and "SIZE_INVALID" in huge.text, huge.text  # over 1 MiB
    assert signatures_of(env, digest) == []


def test_signature_forms_and_key_states(env: Env) -> None:
    """Clearsigned, armored and subkey signatures verify (as with gpgme); detached and
    revoked-key ones fail; a good one among bad ones is the only one saved as trusted."""
    repo = "hostile/forms"
    digest = push(env, repo)
    identity = f"{env.server.host}/{repo}:latest"
    payload = build_payload(identity, digest)
    k = env.keys
    forms = {
        "clearsign": (k.sign(payload, how="--clearsign"), k.main, True),
        "armor": (k.gpg("--local-user", k.main, "--armor", "--sign", stdin=payload), k.main, True),
        "subkey": (k.sign(payload, key=k.with_subkey), k.with_subkey, True),
        "detached": (k.sign(payload, how="--detach-sign"), k.main, False),
        "revoked": (k.sign(payload, key=k.revoked), k.revoked, False),
    }
    keyring = env.work / "forms.gpg"
    keyring.write_bytes(k.gpg("--export", k.main, k.with_subkey, k.revoked))
    for content, _key, _ok in forms.values():
        assert put_signature(env, repo, digest, content).status_code == 201
    result = verify(env, digest, identity, "--save", key=keyring)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name, (content, key, ok) in forms.items():
        suffix = hashlib.sha256(content).hexdigest()[:32]
        line = next(x for x in lines if suffix in x)
        assert ("Verified" in line) is ok, (name, line)
        if ok:  # the primary key is named, also for a subkey signature
            assert key[-16:] in line, (name, line)
    assert "revoked key" in result.stdout
    trusted = [s for s in signatures_of(env, digest) if s.get("conditions")]
    assert len(trusted) == 3


def test_verify_without_any_permission_is_a_clear_error(env: Env) -> None:
    repo = "hostile/noperm"
    digest = push(env, repo)
    good = env.keys.sign(build_payload(f"{env.server.host}/{repo}:latest", digest))
    assert put_signature(env, repo, digest, good).status_code == 201
    with env.api() as client:
        r = client.post(
            "/api/v1/namespaces/hostile/serviceaccounts", json={"metadata": {"name": "nobody"}}
        )
        assert r.status_code in (201, 409), r.text
        r = client.post(
            "/api/v1/namespaces/hostile/serviceaccounts/nobody/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        assert r.status_code in (200, 201), r.text
    token = str(r.json()["status"]["token"])
    for extra in ((), ("--save",), ("--remove-all",)):
        result = verify(env, digest, f"{env.server.host}/{repo}:latest", *extra, token=token)
        assert_clean_failure(result, "orbidden")
    assert len(signatures_of(env, digest)) == 1
    assert_no_trust(env, digest)


def test_save_and_remove_all_together_change_nothing(env: Env) -> None:
    repo = "hostile/both"
    digest = push(env, repo)
    good = env.keys.sign(build_payload(f"{env.server.host}/{repo}:latest", digest))
    assert put_signature(env, repo, digest, good).status_code == 201
    result = verify(env, digest, f"{env.server.host}/{repo}:latest", "--save", "--remove-all")
    assert_clean_failure(result, "cannot be used together")
    assert len(signatures_of(env, digest)) == 1
    assert_no_trust(env, digest)


def test_policy_refuses_badly_signed_images(env: Env) -> None:
    """A namespace requiring signatures: an image whose only signature failed verification
    (a stranger's key, or a good key naming another image) stays unpullable after --save."""
    host = env.server.host
    stranger = push(env, "strict/stranger")
    wrong = push(env, "strict/wrong")
    good = push(env, "strict/good")
    for repo, digest, names, key in (
        ("strict/stranger", stranger, stranger, env.keys.stranger),
        ("strict/wrong", wrong, good, env.keys.main),  # a good key naming another image
        ("strict/good", good, good, env.keys.main),
    ):
        content = env.keys.sign(build_payload(f"{host}/{repo}:latest", names), key=key)
        assert put_signature(env, repo, digest, content).status_code == 201
    with env.api() as client:
        require_signatures(client, "strict")
    for repo, digest, ok in (
        ("strict/stranger", stranger, False),
        ("strict/wrong", wrong, False),
        ("strict/good", good, True),
    ):
        result = verify(env, digest, f"{host}/{repo}:latest", "--save")
        assert (result.returncode == 0) is ok, result.stdout + result.stderr
        with env.api() as client:
            pulled = client.get(f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert pulled.status_code == (200 if ok else 403), (repo, pulled.text)
