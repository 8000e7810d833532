"""`ac adm verify-image-signature`: verify an image's signatures and optionally record trust.

docs/behaviour.md#signatures. Every signature of the image — the stored ones plus cosign signatures
found in the registry — is checked cryptographically (OpenPGP through `gpg` in a throwaway
keyring, cosign ECDSA with `cryptography`), then its signed digest against the image (whose
manifest is re-hashed, see `verify_fetch`), then its signed identity against
`--expected-identity`. The trusted keys are the `--public-key` files, else the public keys
of the caller's own GnuPG keyring (`$GNUPGHOME`, else `~/.gnupg`), read without being
modified. `--save` writes the result through an Image update (Trusted/ForImage
conditions and derived fields for verified signatures, an empty verification record for the
others); `--remove-all` deletes every ImageSignature of the image; otherwise nothing is
written and the command says so. The exit status is non-zero unless a signature verified.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.login import whoami_user
from imageregistry.cli.ac.options import common_options, session
from imageregistry.cli.ac.session import Session, server_url
from imageregistry.cli.ac.verify_fetch import (
    IMAGES_PATH,
    check_manifest,
    discover_cosign,
    load_image,
    repository_of,
    stored_signatures,
)
from imageregistry.signatures import gpg
from imageregistry.signatures.errors import SignatureError
from imageregistry.signatures.verify import (
    SignatureOutcome,
    StoredSignature,
    TrustedKeys,
    trust_fields,
    verify_signature,
)

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_PEM_MARK = b"-----BEGIN PUBLIC KEY-----"


@dataclass(frozen=True)
class Result:
    signature: StoredSignature
    outcome: SignatureOutcome


def read_keys(paths: tuple[str, ...]) -> TrustedKeys:
    """PEM public keys go to cosign verification, everything else is an OpenPGP keyring."""
    gpg: list[bytes] = []
    pem: list[bytes] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read public key {path}: {exc.strerror}") from None
        (pem if _PEM_MARK in data else gpg).append(data)
    return TrustedKeys(tuple(gpg), tuple(pem))


def keyring_keys() -> TrustedKeys:
    """Without `--public-key`: the public keys of the caller's own GnuPG keyring, as
    `oc adm verify-image-signature` does; read only (`gpg.export_keyring` works on a copy)."""
    home = gpg.user_home()
    try:
        exported = gpg.export_keyring(home)
    except SignatureError as exc:
        raise CliError(str(exc)) from None
    if not exported:
        raise CliError(
            "no public key to verify with: pass --public-key FILE (an OpenPGP public key or "
            "keyring, or a PEM key for cosign signatures), or import the signer's OpenPGP key "
            "into your GnuPG keyring ($GNUPGHOME, else ~/.gnupg), which is read when "
            f"--public-key is not given; {home} holds no public keys"
        )
    click.echo(f"Using the public keys of the GnuPG keyring in {home} (read only)", err=True)
    return TrustedKeys((exported,), ())


def _registry_client(sess: Session, url: str | None, insecure: bool) -> httpx.Client:
    base = server_url(url) if url else sess.server
    return httpx.Client(
        base_url=base,
        headers=sess.headers(),
        verify=False if insecure else sess.verify,
        timeout=60.0,
    )


def _verify_all(
    digest: str,
    signatures: list[StoredSignature],
    identity: str,
    keys: TrustedKeys,
    manifest_ok: bool,
    manifest_detail: str,
) -> list[Result]:
    results = []
    for sig in signatures:
        if manifest_ok:
            outcome = verify_signature(digest, sig, identity, keys)
        else:
            outcome = SignatureOutcome(sig.name, False, manifest_detail)
        results.append(Result(sig, outcome))
    return results


def _print(results: list[Result], as_json: bool, manifest_detail: str) -> None:
    if as_json:
        doc = [
            {
                "name": r.signature.name,
                "type": r.signature.type,
                "verified": r.outcome.ok,
                "message": r.outcome.reason,
                "keyId": r.outcome.key_id,
                "signer": r.outcome.signer,
                "identity": r.outcome.payload.docker_reference if r.outcome.payload else None,
            }
            for r in results
        ]
        click.echo(json.dumps({"manifest": manifest_detail, "signatures": doc}, indent=2))
        return
    for r in results:
        verdict = "Verified" if r.outcome.ok else "Failed"
        click.echo(f"{r.signature.name} ({r.signature.type}): {verdict}: {r.outcome.reason}")


def _entry(result: Result, trust: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": result.signature.name,
        "type": result.signature.type,
        "content": base64.b64encode(result.signature.content).decode(),
    }
    if trust:
        entry.update(trust)
    return entry


def _save(api: httpx.Client, image: dict[str, Any], results: list[Result], user: str) -> int:
    from imageregistry.clock import system_clock

    now = system_clock()
    entries = [
        _entry(r, trust_fields(r.outcome, user, now) if r.outcome.ok else None) for r in results
    ]
    body = {**image, "signatures": entries}
    digest = image["metadata"]["name"]
    response = api.put(f"{IMAGES_PATH}/{digest}", json=body)
    if response.status_code == 403:
        raise CliError(
            f"user {user!r} may not update images, so the verification result was not saved "
            f"({from_response(response)})"
        )
    if response.status_code >= 400:
        raise CliError(f"saving the verification result failed: {from_response(response)}")
    saved = {(s.get("name") or ""): s for s in (load_image(api, digest).get("signatures") or [])}
    trusted = [r for r in results if r.outcome.ok]
    for r in trusted:
        conditions = saved.get(r.signature.name, {}).get("conditions") or []
        if not any(c.get("type") == "Trusted" and c.get("status") == "True" for c in conditions):
            raise CliError(
                f"the server accepted the update but did not store the conditions of "
                f"{r.signature.name}; nothing was saved"
            )
    return len(trusted)


def _remove_all(api: httpx.Client, image: dict[str, Any]) -> int:
    removed = 0
    for sig in stored_signatures(image):
        response = api.delete(f"{apigroups.IMAGE_API}/imagesignatures/{sig.name}")
        if response.status_code == 404:
            continue
        if response.status_code >= 400:
            raise CliError(f"cannot remove signature {sig.name}: {from_response(response)}")
        removed += 1
    return removed


@click.command("verify-image-signature")
@click.argument("image_digest", metavar="sha256:DIGEST")
@click.option("--expected-identity", help="The identity the signatures must claim (REF).")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="Trusted key: OpenPGP keyring/armored key, or PEM for cosign (repeatable). "
    "Default: the public keys of your GnuPG keyring ($GNUPGHOME, else ~/.gnupg), read only.",
)
@click.option("--save", is_flag=True, help="Store the verification result on the image.")
@click.option("--remove-all", is_flag=True, help="Remove every signature of the image.")
@click.option("--registry-url", help="Registry to fetch the manifest from (default: server).")
@click.option("--insecure", is_flag=True, help="Do not verify the registry's TLS certificate.")
@click.option("-o", "--output", type=click.Choice(["json"]), help="Output format.")
@common_options
@click.pass_context
def verify_image_signature(
    ctx: click.Context,
    image_digest: str,
    expected_identity: str | None,
    public_keys: tuple[str, ...],
    save: bool,
    remove_all: bool,
    registry_url: str | None,
    insecure: bool,
    output: str | None,
) -> None:
    """Verify the signatures of an image (sha256:DIGEST) against trusted keys."""
    if not _DIGEST.match(image_digest):
        raise CliError(f"{image_digest!r} is not an image name (sha256:<64 hex>)")
    if save and remove_all:
        raise CliError("--save and --remove-all cannot be used together")
    if not remove_all and not expected_identity:
        raise CliError("--expected-identity is required (e.g. HOST/NAMESPACE/STREAM:TAG)")
    if registry_url:
        server_url(registry_url)
    # Named key files are checked before any request; the keyring only once the image is
    # known to exist and to have signatures, so those errors come first.
    keys = read_keys(public_keys) if public_keys or remove_all else None
    sess = session(ctx)
    with sess.client() as api:
        image = load_image(api, image_digest)
        if remove_all:
            removed = _remove_all(api, image)
            click.echo(f"Removed {removed} signature(s) from image {image_digest}")
            return
        assert expected_identity  # checked above, before any request
        repo = repository_of(image)
        stored = stored_signatures(image)
        with _registry_client(sess, registry_url, insecure) as registry:
            check = check_manifest(registry, repo, image_digest, image)
            found = discover_cosign(registry, repo, image_digest, {s.content for s in stored})
        signatures = stored + found
        if not signatures:
            raise CliError(f"image {image_digest} has no signatures; nothing to verify")
        results = _verify_all(
            image_digest,
            signatures,
            expected_identity,
            keys if keys is not None else keyring_keys(),
            check.ok,
            check.detail,
        )
        _print(results, output == "json", check.detail)
        if save:
            user = str(whoami_user(api).get("username") or sess.user_name or "unknown")
            count = _save(api, image, results, user)
            click.echo(f"Saved: {count} trusted signature(s) recorded on image {image_digest}")
        elif output != "json":
            click.echo("Neither --save nor --remove-all was given: nothing was written.")
    if not any(r.outcome.ok for r in results):
        raise CliError(f"no signature of image {image_digest} could be verified")
