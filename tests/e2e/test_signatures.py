"""Image signatures end to end with the real skopeo and gpg.

skopeo signs with a test-generated GnuPG key while pushing (`--sign-by`), which stores the
signature through the registry extension; `ac adm verify-image-signature` verifies it and
`--save` records trust; negative cases must fail with a clear message and save nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.signatures import cosign
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload
from tests.e2e.ac_images import layer, write_layout
from tests.e2e.ac_support import AC
from tests.e2e.oci_support import require_signatures
from tests.support.server import RegistryProcess

IMAGES = "/apis/image.alauda.io/v1/images"


@dataclass(frozen=True)
class Gpg:
    home: Path
    key: str
    other: str

    def run(self, *args: str, stdin: bytes = b"") -> bytes:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        base = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        return subprocess.run(
            [*base, *args], input=stdin, capture_output=True, env=env, check=True, timeout=60
        ).stdout

    def sign(self, payload: bytes) -> bytes:
        return self.run(
            "--compress-algo", "none", "--local-user", self.key, "--sign", stdin=payload
        )


def _generate(home: Path, uid: str) -> str:
    gpg = Gpg(home, "", "")
    gpg.run("--quick-gen-key", uid, "ed25519", "sign", "never")
    listing = gpg.run("--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpg]:
    home = Path(tmp_path_factory.mktemp("gnupg"))
    home.chmod(0o700)
    keys = Gpg(home, _generate(home, "Signer <s@example.com>"), _generate(home, "Other <o@x>"))
    try:
        yield keys
    finally:  # skopeo's gpgme started an agent for this GNUPGHOME: stop it
        subprocess.run(
            ["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
        )


@dataclass(frozen=True)
class Env:
    server: RegistryProcess
    gpg: Gpg
    work: Path
    pub: Path
    wrong_pub: Path

    @property
    def ca_dir(self) -> Path:
        return self.server.cert_dir(self.work)

    def api(self, token: str | None = None) -> httpx.Client:
        return self.server.client(token or self.server.admin_token)


@pytest.fixture(scope="module")
def env(registry: RegistryProcess, gpg: Gpg, tmp_path_factory: pytest.TempPathFactory) -> Env:
    work = Path(tmp_path_factory.mktemp("sigwork"))
    (work / "pub.gpg").write_bytes(gpg.run("--export", gpg.key))
    (work / "wrong.gpg").write_bytes(gpg.run("--armor", "--export", gpg.other))
    return Env(registry, gpg, work, work / "pub.gpg", work / "wrong.gpg")


def push(env: Env, name: str, dest: str, *, sign: bool = False) -> str:
    """Push a fresh one-layer image to `dest` (ns/stream:tag); returns its digest."""
    layout, manifest, _config = write_layout(env.work / name, [layer(name, 512)])
    args = ["skopeo", "copy", "--quiet", "--preserve-digests"]
    if sign:
        args.append(f"--sign-by={env.gpg.key}")
    args += [
        f"--dest-creds=x:{env.server.admin_token}",
        f"--dest-cert-dir={env.ca_dir}",
        f"oci:{layout}:img",
        f"docker://{env.server.host}/{dest}",
    ]
    result = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "GNUPGHOME": str(env.gpg.home)}
    )
    assert result.returncode == 0, result.stderr
    return manifest.digest


def ac(env: Env, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--token", token] if token else []
    return subprocess.run(
        [AC, *args, "--kubeconfig", str(env.server.kubeconfig), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(env.work)},
    )


def verify(
    env: Env,
    digest: str,
    identity: str,
    *extra: str,
    key: Path | None = None,
    token: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return ac(
        env,
        "adm",
        "verify-image-signature",
        digest,
        f"--expected-identity={identity}",
        f"--public-key={key or env.pub}",
        *extra,
        token=token,
    )


def image(env: Env, digest: str) -> dict[str, Any]:
    with env.api() as client:
        r = client.get(f"{IMAGES}/{digest}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def conditions(env: Env, digest: str) -> list[list[dict[str, Any]]]:
    return [s.get("conditions") or [] for s in image(env, digest).get("signatures") or []]


def put_signature(env: Env, repo: str, digest: str, content: bytes, suffix: str = "f" * 32) -> None:
    entry = {
        "schemaVersion": 2,
        "name": f"{digest}@{suffix}",
        "type": "atomic",
        "content": base64.b64encode(content).decode(),
    }
    with env.api() as client:
        r = client.put(f"/extensions/v2/{repo}/signatures/{digest}", json=entry)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def signed(env: Env) -> str:
    return push(env, "demo", "ns/demo:latest", sign=True)


def test_skopeo_signature_lands_on_the_image(env: Env, signed: str) -> None:
    sigs = image(env, signed)["signatures"]
    assert len(sigs) == 1
    assert sigs[0]["type"] == "atomic"
    assert sigs[0]["name"].startswith(signed + "@")
    with env.api() as client:
        listed = client.get(f"/extensions/v2/ns/demo/signatures/{signed}").json()
    assert [s["name"] for s in listed["signatures"]] == [sigs[0]["name"]]


def test_verify_confirms_and_writes_nothing(env: Env, signed: str) -> None:
    host = env.server.host
    result = verify(env, signed, f"{host}/ns/demo:latest")
    assert result.returncode == 0, result.stderr
    assert "Verified" in result.stdout
    assert f"identity {host}/ns/demo:latest confirmed" in result.stdout
    assert env.gpg.key[-16:] in result.stdout
    assert "nothing was written" in result.stdout
    assert conditions(env, signed) == [[]]
    # An expected identity without a tag means :latest.
    assert verify(env, signed, f"{host}/ns/demo").returncode == 0


@pytest.mark.parametrize(
    ("identity", "key", "needle"),
    [
        ("{host}/ns/demo:latest", "wrong", "not in the trusted keyring"),
        ("{host}/ns/other:latest", "pub", "identity mismatch"),
        ("{host}/ns/demo:v2", "pub", "not the expected tag"),
    ],
)
def test_verify_negatives_save_nothing(
    env: Env, signed: str, identity: str, key: str, needle: str
) -> None:
    path = env.wrong_pub if key == "wrong" else env.pub
    result = verify(env, signed, identity.format(host=env.server.host), "--save", key=path)
    assert result.returncode != 0
    assert needle in result.stdout
    assert "no signature of image" in result.stderr
    assert conditions(env, signed) == [[]]


def _bad_image(env: Env, name: str, content_for: Any) -> str:
    digest = push(env, name, f"bad/{name}:latest")
    put_signature(env, f"bad/{name}", digest, content_for(digest))
    return digest


def test_bad_signature_contents(env: Env) -> None:
    host = env.server.host
    other = "sha256:" + "1" * 64

    def tampered(digest: str) -> bytes:
        signed = env.gpg.sign(build_payload(f"{host}/bad/tampered:latest", digest))
        at = signed.index(b"latest")
        return signed[:at] + b"LATEST" + signed[at + 6 :]

    cases = {
        "otherdigest": (
            lambda d: env.gpg.sign(build_payload(f"{host}/bad/otherdigest:latest", other)),
            f"signature is for {other}",
        ),
        "tampered": (tampered, "bad signature"),
        "malformed": (
            lambda d: env.gpg.sign(b'{"critical": "nope"}'),
            "critical must be a JSON object",
        ),
    }
    for name, (make, needle) in cases.items():
        digest = _bad_image(env, name, make)
        result = verify(env, digest, f"{host}/bad/{name}:latest", "--save")
        assert result.returncode != 0, name
        assert needle in result.stdout, (name, result.stdout)
        assert conditions(env, digest) == [[]], name


def test_image_without_signatures(env: Env) -> None:
    digest = push(env, "unsigned", "ns/unsigned:latest")
    result = verify(env, digest, f"{env.server.host}/ns/unsigned:latest", "--save")
    assert result.returncode != 0
    assert "has no signatures" in result.stderr
    assert image(env, digest).get("signatures") in (None, [])


def test_save_then_yaml_then_rollback(env: Env) -> None:
    host = env.server.host
    digest = push(env, "saved", "ns/saved:latest", sign=True)
    assert _verified_cell(env, digest) == "no"
    result = verify(env, digest, f"{host}/ns/saved:latest", "--save")
    assert result.returncode == 0, result.stderr
    assert "Saved: 1 trusted signature" in result.stdout
    assert _verified_cell(env, digest) == "yes"
    shown = ac(env, "get", "images.image.alauda.io", digest, "-o", "yaml")
    assert shown.returncode == 0, shown.stderr
    doc = yaml.safe_load(shown.stdout)
    sig = doc["signatures"][0]
    by_type = {c["type"]: c for c in sig["conditions"]}
    assert by_type["Trusted"]["status"] == "True"
    assert by_type["Trusted"]["reason"] == "manually verified"
    assert by_type["ForImage"]["status"] == "True"
    assert sig["issuedBy"]["commonName"] == env.gpg.key[-16:]
    assert sig["imageIdentity"] == f"{host}/ns/saved:latest"
    assert sig["signedClaims"]["docker-manifest-digest"] == digest
    saved_yaml = env.work / "saved-image.yaml"
    saved_yaml.write_text(shown.stdout)

    removed = ac(env, "adm", "verify-image-signature", digest, "--remove-all")
    assert removed.returncode == 0, removed.stderr
    assert "Removed 1 signature" in removed.stdout
    assert image(env, digest).get("signatures") in (None, [])

    # Roll back with kubectl apply of the saved object (resourceVersion dropped).
    doc["metadata"].pop("resourceVersion", None)
    saved_yaml.write_text(yaml.safe_dump(doc))
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(env.server.kubeconfig), "apply", "-f", str(saved_yaml)],
        capture_output=True,
        text=True,
    )
    assert applied.returncode == 0, applied.stderr
    restored = image(env, digest)["signatures"]
    assert [s["name"] for s in restored] == [sig["name"]]
    assert {c["type"] for c in restored[0]["conditions"]} == {"Trusted", "ForImage"}


def _verified_cell(env: Env, digest: str) -> str:
    """The VERIFIED column `ac get images` prints for the image."""
    listed = ac(env, "get", "images")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[-1] == "VERIFIED"
    cells = next(row.split() for row in rows if row.startswith(digest))
    return cells[-1]


def _limited_token(env: Env) -> str:
    """A user who may read images and pull, but not update images."""
    rules = [
        {
            "apiGroups": ["image.alauda.io"],
            "resources": ["images", "imagestreams/layers"],
            "verbs": ["get", "list"],
        },
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"],
            "verbs": ["create"],
        },
    ]
    with env.api() as client:
        for path, body in (
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                {"metadata": {"name": "sig-reader"}, "rules": rules},
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {
                    "metadata": {"name": "sig-reader"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "sig-reader",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "ns"}],
                },
            ),
            ("/api/v1/namespaces/ns/serviceaccounts", {"metadata": {"name": "reader"}}),
        ):
            r = client.post(path, json=body)
            assert r.status_code in (200, 201, 409), r.text
        r = client.post(
            "/api/v1/namespaces/ns/serviceaccounts/reader/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        assert r.status_code in (200, 201), r.text
    return str(r.json()["status"]["token"])


def test_user_without_update_permission(env: Env) -> None:
    host = env.server.host
    digest = push(env, "perm", "ns/perm:latest", sign=True)
    token = _limited_token(env)
    result = verify(env, digest, f"{host}/ns/perm:latest", "--save", token=token)
    assert result.returncode != 0
    assert "may not update images" in result.stderr
    assert conditions(env, digest) == [[]]


def test_policy_denies_unsigned_and_allows_verified(env: Env) -> None:
    host = env.server.host
    unsigned = push(env, "pol-unsigned", "pol/unsigned:latest")
    trusted = push(env, "pol-signed", "pol/signed:latest", sign=True)
    with env.api() as client:
        require_signatures(client, "pol")
    pull = [
        "skopeo",
        "inspect",
        "--raw",
        f"--creds=x:{env.server.admin_token}",
        f"--cert-dir={env.ca_dir}",
    ]
    denied = subprocess.run(
        [*pull, f"docker://{host}/pol/unsigned:latest"], capture_output=True, text=True
    )
    assert denied.returncode != 0
    assert "require-signatures" in denied.stderr
    del unsigned
    # Verification itself still works under the policy (manifest re-hashed from the API).
    saved = verify(env, trusted, f"{host}/pol/signed:latest", "--save")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    allowed = subprocess.run(
        [*pull, f"docker://{host}/pol/signed:latest"], capture_output=True, text=True
    )
    assert allowed.returncode == 0, allowed.stderr


def _push_cosign(env: Env, repo: str, digest: str, size: int, *, referrer: bool) -> bytes:
    """Sign like cosign (ECDSA P-256) and attach as a referrer or under the .sig tag."""
    key = ec.generate_private_key(ec.SECP256R1())
    payload = build_payload(f"{env.server.host}/{repo}:latest", digest, signature_type=COSIGN_TYPE)
    subject = cosign.Descriptor(cosign.OCI_MANIFEST_MEDIA_TYPE, digest, size) if referrer else None
    manifest, config = cosign.build_cosign_signature_manifest(
        payload, cosign.sign_cosign(payload, key), subject
    )
    with env.api() as client:
        for data in (config, payload):
            r = client.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()},
                content=data,
            )
            assert r.status_code == 201, r.text
        ref = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if not referrer:
            ref = cosign.signature_tag(digest)
        r = client.put(
            f"/v2/{repo}/manifests/{ref}",
            content=manifest,
            headers={"Content-Type": cosign.OCI_MANIFEST_MEDIA_TYPE},
        )
        assert r.status_code == 201, r.text
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("referrer", [True, False], ids=["referrer", "sig-tag"])
def test_cosign_signature_verifies_with_pem_key(env: Env, referrer: bool) -> None:
    name = "cosign-ref" if referrer else "cosign-tag"
    digest = push(env, name, f"ns/{name}:latest")
    size = len(image(env, digest)["dockerImageManifest"].encode())
    pem = env.work / f"{name}.pem"
    pem.write_bytes(_push_cosign(env, f"ns/{name}", digest, size, referrer=referrer))
    identity = f"{env.server.host}/ns/{name}:latest"
    result = verify(env, digest, identity, key=pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(cosign): Verified" in result.stdout
    other = env.work / "cosign-other.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    wrong = verify(env, digest, identity, key=other)
    assert wrong.returncode != 0
    assert "does not match" in wrong.stdout


def test_imagesignature_create_clears_trust_and_refuses_duplicates(env: Env) -> None:
    digest = push(env, "apicreate", "ns/apicreate:latest")
    body = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageSignature",
        "metadata": {"name": f"{digest}@" + "a" * 32},
        "type": "atomic",
        "content": base64.b64encode(b"opaque").decode(),
        "conditions": [
            {"type": "Trusted", "status": "True"},
            {"type": "ForImage", "status": "True"},
        ],
        "imageIdentity": "evil/claim:latest",
    }
    with env.api() as client:
        r = client.post("/apis/image.alauda.io/v1/imagesignatures", json=body)
        assert r.status_code == 201, r.text
        body["metadata"] = {"name": f"{digest}@" + "b" * 32}
        dup = client.post("/apis/image.alauda.io/v1/imagesignatures", json=body)
        assert dup.status_code == 409, dup.text
    sigs = image(env, digest)["signatures"]
    assert len(sigs) == 1
    assert not sigs[0].get("conditions") and not sigs[0].get("imageIdentity")


def test_server_validates_edited_trust(env: Env) -> None:
    digest = push(env, "edited", "ns/edited:latest", sign=True)
    current = image(env, digest)
    bad_edits: list[dict[str, Any]] = [
        {"conditions": [{"type": "Trusted", "status": "True"}]},  # ForImage missing
        {"imageIdentity": "someone/else:latest"},  # identity without trust
        {"content": base64.b64encode(b"swapped").decode()},  # content is immutable
    ]
    with env.api() as client:
        for edit in bad_edits:
            body = {**current, "signatures": [{**current["signatures"][0], **edit}]}
            r = client.put(f"{IMAGES}/{digest}", json=body)
            assert r.status_code == 422, (edit, r.text)
    assert conditions(env, digest) == [[]]


# --- the administrator page as written -------------------------------------

REMOVE_TRUSTED = """#!/usr/bin/env python3
import sys

import yaml

path = sys.argv[-1]
with open(path) as f:
    doc = yaml.safe_load(f)
for sig in doc.get("signatures") or []:
    sig["conditions"] = [c for c in sig.get("conditions") or [] if c["type"] != "Trusted"]
with open(path, "w") as f:
    yaml.safe_dump(doc, f)
"""


def _kubectl(env: Env, *args: str, editor: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"KUBE_EDITOR": f"{sys.executable} {editor}"} if editor else {}
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(env.server.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **extra},
    )


def test_rollback_by_removing_the_trusted_condition_with_kubectl_edit(env: Env) -> None:
    """The page's rollback: edit the Image and remove the saved condition. That one removal
    clears everything only a verification sets (ForImage, identity, claims, issuer)."""
    digest = push(env, "editback", "ns/editback:latest", sign=True)
    saved = verify(env, digest, f"{env.server.host}/ns/editback:latest", "--save")
    assert saved.returncode == 0, saved.stderr
    assert _verified_cell(env, digest) == "yes"
    editor = env.work / "remove-trusted.py"
    editor.write_text(REMOVE_TRUSTED)

    edited = _kubectl(env, "edit", f"images.image.alauda.io/{digest}", editor=editor)
    assert edited.returncode == 0, edited.stderr
    assert "edited" in edited.stdout
    sig = image(env, digest)["signatures"][0]
    assert not sig.get("conditions")
    for key in ("imageIdentity", "signedClaims", "issuedBy"):
        assert not sig.get(key), (key, sig)
    assert base64.b64decode(sig["content"])  # the signature itself stays
    assert _verified_cell(env, digest) == "no"
    # verifying again restores trust
    again = verify(env, digest, f"{env.server.host}/ns/editback:latest", "--save")
    assert again.returncode == 0, again.stderr
    assert _verified_cell(env, digest) == "yes"


CLAIM_IDENTITY = """#!/usr/bin/env python3
import sys

import yaml

path = sys.argv[-1]
with open(path) as f:
    text = f.read()
doc = yaml.safe_load(text)
for sig in doc.get("signatures") or []:
    sig["imageIdentity"] = "someone/else:latest"
with open(path, "w") as f:
    f.write("".join(line + "\\n" for line in text.splitlines() if line.startswith("#")))
    yaml.safe_dump(doc, f)
"""


def test_invalid_trust_edit_names_what_is_invalid(env: Env) -> None:
    """An identity claimed without trust stays refused, and kubectl shows which field and
    why: `replace` in its error, `edit` in the reasons it puts above the re-opened object."""
    digest = push(env, "badedit", "ns/badedit:latest", sign=True)
    cause = 'signatures[0].imageIdentity: Invalid value: "someone/else:latest"'
    current = image(env, digest)
    current["signatures"][0]["imageIdentity"] = "someone/else:latest"
    path = env.work / "badedit.yaml"
    path.write_text(yaml.safe_dump(current))
    replaced = _kubectl(env, "replace", "-f", str(path))
    assert replaced.returncode != 0
    assert cause in replaced.stderr
    assert "must be empty unless the Trusted condition is True" in replaced.stderr

    editor = env.work / "claim-identity.py"
    editor.write_text(CLAIM_IDENTITY)
    edited = _kubectl(env, "edit", f"images.image.alauda.io/{digest}", editor=editor)
    assert edited.returncode != 0
    copy = re.search(r'A copy of your changes has been stored to "([^"]+)"', edited.stderr)
    assert copy, edited.stderr
    kept = Path(copy.group(1)).read_text()
    Path(copy.group(1)).unlink()
    assert cause in kept
    assert conditions(env, digest) == [[]]
    assert not image(env, digest)["signatures"][0].get("imageIdentity")


def _tree(home: Path) -> dict[str, bytes | None]:
    """Every entry under `home`: file bytes, None for directories and sockets."""
    return {
        str(p.relative_to(home)): p.read_bytes() if p.is_file() else None
        for p in sorted(home.rglob("*"))
    }


def _keyring(env: Env, home: Path, key: Path) -> Path:
    """A GnuPG home holding one imported public key, as an administrator's would (the
    agent gpg starts for the import is stopped again)."""
    home.mkdir(mode=0o700)
    try:
        Gpg(home, "", "").run("--import", str(key))
    finally:
        gpg_env = {**os.environ, "GNUPGHOME": str(home)}
        subprocess.run(["gpgconf", "--kill", "all"], env=gpg_env, check=False, timeout=60)
        # The agent removes its sockets after `--kill` returns: wait, so the "before"
        # snapshot the tests take is not the stopping agent's.
        deadline = time.monotonic() + 30
        while any(p.is_socket() for p in home.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
    return home


def _verify_with_keyring(
    env: Env, digest: str, identity: str, gnupghome: Path | None, home: Path
) -> subprocess.CompletedProcess[str]:
    """`ac adm verify-image-signature` exactly as the administrator page writes it: no
    `--public-key`; GNUPGHOME set or not, HOME as given."""
    base = {k: v for k, v in os.environ.items() if k != "GNUPGHOME"}
    extra = {"GNUPGHOME": str(gnupghome)} if gnupghome else {}
    kubeconfig = str(env.server.kubeconfig)
    return subprocess.run(
        [
            *(AC, "adm", "verify-image-signature", digest),
            f"--expected-identity={identity}",
            "--kubeconfig",
            kubeconfig,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, "HOME": str(home), **extra},
    )


def test_verify_without_public_key_uses_the_callers_keyring_read_only(
    env: Env, signed: str
) -> None:
    identity = f"{env.server.host}/ns/demo:latest"
    keyring = _keyring(env, env.work / "admin-gnupg", env.pub)
    before = _tree(keyring)
    result = _verify_with_keyring(env, signed, identity, keyring, env.work)
    assert result.returncode == 0, result.stderr
    assert "Verified" in result.stdout and env.gpg.key[-16:] in result.stdout
    assert f"GnuPG keyring in {keyring} (read only)" in result.stderr
    assert _tree(keyring) == before  # byte-identical, nothing added

    # Without GNUPGHOME the keyring is ~/.gnupg; there a keyring of the wrong key fails.
    home = env.work / "admin-home"
    home.mkdir()
    dot = _keyring(env, home / ".gnupg", env.wrong_pub)
    before = _tree(dot)
    wrong = _verify_with_keyring(env, signed, identity, None, home)
    assert wrong.returncode != 0
    assert "not in the trusted keyring" in wrong.stdout
    assert f"GnuPG keyring in {dot}" in wrong.stderr
    assert _tree(dot) == before


def test_verify_without_any_key_names_both_options(env: Env, signed: str) -> None:
    identity = f"{env.server.host}/ns/demo:latest"
    empty = env.work / "empty-gnupg"
    empty.mkdir(mode=0o700)
    for gnupghome, home in ((empty, env.work), (None, env.work / "no-such-home")):
        result = _verify_with_keyring(env, signed, identity, gnupghome, home)
        assert result.returncode != 0
        assert "--public-key" in result.stderr and "GnuPG keyring" in result.stderr
        assert "$GNUPGHOME, else ~/.gnupg" in result.stderr
    assert list(empty.iterdir()) == []
    assert not (env.work / "no-such-home").exists()
    assert conditions(env, signed) == [[]]
