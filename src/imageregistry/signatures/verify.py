"""Verifying one stored image signature, and the trust records written when it passes.

Pure given its inputs (the `gpg` binary aside): checks run in the order of
docs/behaviour.md#signatures — cryptographic signature first (type `atomic` through GnuPG, type
`cosign` through ECDSA), then the signed manifest digest against the image digest, then the signed
identity against the expected identity — and the first failure becomes the outcome's reason. The
helpers at the bottom produce the `Trusted`/`ForImage` conditions and derived fields that `--save`
stores, and the server-side validation of those fields on an ImageSignature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imageregistry.clock import rfc3339
from imageregistry.signatures import cosign, gpg
from imageregistry.signatures.errors import SignatureError
from imageregistry.signatures.identity import match_identity
from imageregistry.signatures.simplesigning import (
    ATOMIC_TYPE,
    COSIGN_TYPE,
    SimpleSigningPayload,
    parse_payload,
)

ATOMIC_TYPE_NAME = "atomic"
COSIGN_TYPE_NAME = cosign.COSIGN_TYPE_NAME
TRUSTED = "Trusted"
FOR_IMAGE = "ForImage"
MANUALLY_VERIFIED = "manually verified"


@dataclass(frozen=True)
class StoredSignature:
    """An ImageSignature as stored: `type` is `atomic` or `cosign`."""

    name: str
    type: str
    content: bytes


@dataclass(frozen=True)
class TrustedKeys:
    """Trusted keys: OpenPGP keyrings (armored or binary) and PEM ECDSA public keys."""

    gpg_keyrings: tuple[bytes, ...] = ()
    pem_keys: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SignatureOutcome:
    """The verdict for one signature."""

    name: str
    ok: bool
    reason: str
    key_id: str | None = None
    signer: str | None = None
    payload: SimpleSigningPayload | None = None


@dataclass(frozen=True)
class _Checked:
    payload_bytes: bytes
    key_id: str
    signer: str
    accepted_types: tuple[str, ...] = field(default=(ATOMIC_TYPE,))


def verify_signature(
    image_digest: str,
    signature: StoredSignature,
    expected_identity: str,
    keys: TrustedKeys,
    *,
    gpg_binary: str | None = None,
) -> SignatureOutcome:
    """Verify *signature* for the image *image_digest*; never raises for bad signatures."""
    try:
        checked = _check_crypto(signature, keys, gpg_binary)
        payload = parse_payload(checked.payload_bytes, checked.accepted_types)
    except SignatureError as exc:
        return SignatureOutcome(signature.name, False, str(exc))
    base = SignatureOutcome(signature.name, False, "", checked.key_id, checked.signer, payload)
    if payload.manifest_digest != image_digest:
        reason = f"signature is for {payload.manifest_digest}, not for image {image_digest}"
        return _with(base, False, reason)
    match = match_identity(payload.docker_reference, expected_identity)
    if not match.ok:
        return _with(base, False, f"identity mismatch: {match.reason}")
    return _with(
        base,
        True,
        f"identity {expected_identity} confirmed, signed by key {checked.key_id} "
        f"({checked.signer})",
    )


def _with(outcome: SignatureOutcome, ok: bool, reason: str) -> SignatureOutcome:
    return SignatureOutcome(
        outcome.name, ok, reason, outcome.key_id, outcome.signer, outcome.payload
    )


def _check_crypto(
    signature: StoredSignature, keys: TrustedKeys, gpg_binary: str | None
) -> _Checked:
    if signature.type == ATOMIC_TYPE_NAME:
        if not keys.gpg_keyrings:
            raise SignatureError("atomic signature needs an OpenPGP public key to verify")
        result = gpg.verify_signed_message(signature.content, keys.gpg_keyrings, gpg=gpg_binary)
        return _Checked(result.payload, result.key_id, result.signer_uid)
    if signature.type == COSIGN_TYPE_NAME:
        return _check_cosign(signature.content, keys.pem_keys)
    raise SignatureError(f"unsupported signature type {signature.type!r}")


def _check_cosign(content: bytes, pem_keys: Sequence[bytes]) -> _Checked:
    if not pem_keys:
        raise SignatureError("cosign signature needs a PEM public key to verify")
    stored = cosign.decode_cosign_content(content)
    failures = []
    for pem in pem_keys:
        try:
            cosign.verify_cosign(stored.payload, stored.signature_b64, pem)
        except SignatureError as exc:
            failures.append(str(exc))
            continue
        key_id = cosign.public_key_id(pem)
        return _Checked(stored.payload, key_id, f"ECDSA key sha256:{key_id[:16]}", (COSIGN_TYPE,))
    if len(failures) == 1:
        raise SignatureError(failures[0])
    raise SignatureError(f"cosign signature matches none of the {len(pem_keys)} trusted keys")


def trusted_conditions(
    outcome: SignatureOutcome, verifying_user: str, now: datetime
) -> list[dict[str, str]]:
    """The `Trusted`/`ForImage` conditions to store for a successful outcome."""
    if not outcome.ok or outcome.payload is None:
        raise ValueError("trusted_conditions needs a successful verification outcome")
    stamp = rfc3339(now)
    return [
        {
            "type": TRUSTED,
            "status": "True",
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
            "reason": MANUALLY_VERIFIED,
            "message": f"verified by user {verifying_user!r} with key {outcome.key_id}",
        },
        {
            "type": FOR_IMAGE,
            "status": "True",
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
            "reason": MANUALLY_VERIFIED,
            "message": f"signature is for image {outcome.payload.manifest_digest}",
        },
    ]


def trust_fields(outcome: SignatureOutcome, verifying_user: str, now: datetime) -> dict[str, Any]:
    """All ImageSignature fields `--save` writes: conditions plus the derived fields."""
    payload = outcome.payload
    if not outcome.ok or payload is None:
        raise ValueError("trust_fields needs a successful verification outcome")
    claims = {
        "docker-reference": payload.docker_reference,
        "docker-manifest-digest": payload.manifest_digest,
    }
    if payload.creator is not None:
        claims["creator"] = payload.creator
    if payload.timestamp is not None:
        claims["timestamp"] = str(payload.timestamp)
    return {
        "conditions": trusted_conditions(outcome, verifying_user, now),
        "imageIdentity": payload.docker_reference,
        "signedClaims": claims,
        "issuedBy": {"commonName": outcome.key_id or ""},
    }


# What only a verification (`--save`) writes on a signature, beside its Trusted condition.
VERIFICATION_FIELDS = ("imageIdentity", "signedClaims", "issuedBy")


def _is_trusted(conditions: object) -> bool:
    return isinstance(conditions, list) and any(
        isinstance(c, Mapping) and c.get("type") == TRUSTED and c.get("status") == "True"
        for c in conditions
    )


def drop_revoked_trust(entry: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """An edited signature entry with the verification record it no longer has a claim to
    removed: when the stored signature is Trusted and the edit takes the Trusted condition
    away (or makes it other than True), the ForImage condition and the derived fields that
    still hold their stored values go too.

    Removing the one condition is how an administrator rolls back a saved verification
    (`kubectl edit`); without this the server refused the edit until four more fields were
    removed by hand. Values the edit changed are kept, so validation still refuses an
    identity claimed without trust."""
    out = dict(entry)
    if not _is_trusted(stored.get("conditions")) or _is_trusted(entry.get("conditions")):
        return out
    for key in VERIFICATION_FIELDS:
        if key in out and out[key] == stored.get(key):
            out[key] = None
    conditions = out.get("conditions")
    if isinstance(conditions, list) and not any(
        isinstance(c, Mapping) and c.get("type") == TRUSTED for c in conditions
    ):
        old = [c for c in stored.get("conditions") or () if c.get("type") == FOR_IMAGE]
        out["conditions"] = [c for c in conditions if c not in old]
    return out


def validate_signature_object(sig: Mapping[str, Any]) -> list[str]:
    """Server-side validation of an ImageSignature's verification fields
    (docs/behaviour.md#signatures).
    """
    errors: list[str] = []
    conditions = sig.get("conditions") or []
    if not isinstance(conditions, list):
        return ["conditions: must be a list"]
    statuses: dict[str, str] = {}
    for index, cond in enumerate(conditions):
        where = f"conditions[{index}]"
        if not isinstance(cond, Mapping) or not isinstance(cond.get("type"), str):
            errors.append(f"{where}.type: required")
            continue
        status = cond.get("status")
        if status not in ("True", "False", "Unknown"):
            errors.append(f"{where}.status: must be True, False or Unknown")
        if cond["type"] in statuses:
            errors.append(f"{where}.type: duplicate condition {cond['type']}")
        statuses[cond["type"]] = str(status)
    if (TRUSTED in statuses) != (FOR_IMAGE in statuses):
        errors.append("conditions: Trusted and ForImage must be set together")
    trusted = statuses.get(TRUSTED) == "True"
    if trusted and statuses.get(FOR_IMAGE) != "True":
        errors.append("conditions: a Trusted signature must also be ForImage=True")
    if not trusted:
        for key in VERIFICATION_FIELDS:
            value = sig.get(key)
            if _non_empty(value):
                shown = json.dumps(value, sort_keys=True)
                shown = shown if len(shown) <= 120 else shown[:117] + "..."
                errors.append(
                    f"{key}: Invalid value: {shown}: only a verification sets this field; it "
                    "must be empty unless the Trusted condition is True"
                )
    return errors


def _non_empty(value: object) -> bool:
    if isinstance(value, Mapping):
        return any(_non_empty(v) for v in value.values())
    return bool(value)
