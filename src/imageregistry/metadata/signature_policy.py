"""The per-namespace signature policy, checked when a manifest is pulled.

A namespace annotated `image.alauda.io/require-signatures: "true"` serves only images that
carry a signature whose `Trusted` and `ForImage` conditions are True, either on the image
itself or on an image index that contains it (clients pull the platform manifest after
verifying the index). Cosign signature artifacts stay pullable so verifiers can fetch
them. The same trust test drives the VERIFIED column of `get images`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from imageregistry import apigroups
from imageregistry.metadata.namespaces import namespace_body
from imageregistry.metadata.signatures import signatures_by_image
from imageregistry.metadata.tables import manifest_blobs, manifest_children

POLICY_ANNOTATION = f"{apigroups.IMAGE}/require-signatures"
COSIGN_LAYER_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"


def is_trusted(status: Mapping[str, Any]) -> bool:
    """Whether a verification record says Trusted=True and ForImage=True."""
    conditions = status.get("conditions") or []
    found = {c.get("type"): c.get("status") for c in conditions if isinstance(c, Mapping)}
    return found.get("Trusted") == "True" and found.get("ForImage") == "True"


def trusted_digests(conn: Connection, digests: Iterable[str]) -> set[str]:
    """The subset of *digests* with at least one Trusted signature (the VERIFIED column)."""
    by_image = signatures_by_image(conn, digests)
    return {d for d, sigs in by_image.items() if any(is_trusted(s.status) for s in sigs)}


def namespace_requires_signatures(conn: Connection, namespace: str) -> bool:
    """Whether the namespace carries `image.alauda.io/require-signatures: "true"`."""
    body = namespace_body(conn, namespace)
    if body is None:
        return False
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(POLICY_ANNOTATION) if isinstance(annotations, Mapping) else None
    return isinstance(value, str) and value.strip().lower() == "true"


def signature_policy_allows(conn: Connection, namespace: str, digest: str) -> tuple[bool, str]:
    """May a manifest of *digest* be pulled from *namespace*? `(allowed, reason)`.

    Allowed when the policy is off, or when the image — or an image index containing it,
    since clients pull the platform manifest after verifying the index — has a Trusted
    signature.
    """
    if not namespace_requires_signatures(conn, namespace):
        return True, ""
    if is_signature_artifact(conn, digest):
        return True, ""  # verifiers must be able to fetch cosign signatures themselves
    parents = select(manifest_children.c.parent_digest).where(
        manifest_children.c.child_digest == digest
    )
    candidates = [digest, *conn.execute(parents).scalars()]
    if trusted_digests(conn, candidates):
        return True, ""
    return False, (
        f"image {digest} has no trusted signature and namespace {namespace!r} requires one "
        f"(policy annotation {POLICY_ANNOTATION}=true); verify it with "
        f"`ac adm verify-image-signature {digest} --expected-identity=... --save`"
    )


def is_signature_artifact(conn: Connection, digest: str) -> bool:
    """Whether the manifest only carries cosign simple-signing layers (a signature, not an
    image: a runtime cannot run it, and verifiers need to pull it)."""
    types = (
        conn.execute(
            select(manifest_blobs.c.media_type).where(
                manifest_blobs.c.manifest_digest == digest, manifest_blobs.c.position >= 0
            )
        )
        .scalars()
        .all()
    )
    return bool(types) and all(t == COSIGN_LAYER_MEDIA_TYPE for t in types)
