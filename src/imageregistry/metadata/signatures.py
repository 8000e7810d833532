"""SQL for image signatures (`Image.signatures[]`) and the per-namespace signature policy.

Signatures are rows of the `signatures` table keyed by the image digest; their verification record
(conditions, imageIdentity, signedClaims, issuedBy, issuedTo) is the JSON `status`. Every change
bumps the owning Image's resourceVersion through the change log so watches and `-o yaml` see it.
Duplicate content for one image, or a reused name, is a `SignatureConflict` (the extension API
answers 409, the API server AlreadyExists). `list_for_extension` is the cheap read every skopeo pull
triggers (docs/clients.md#skopeo): one indexed query. The pull-time signature policy lives in
`metadata.signature_policy`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from imageregistry import apigroups
from imageregistry.metadata.db import as_utc, record_change
from imageregistry.metadata.signature_limits import list_refusal, over_budget
from imageregistry.metadata.tables import (
    manifests,
    repositories,
    repository_blobs,
    repository_manifests,
    signatures,
)

IMAGES_RESOURCE = f"images.{apigroups.IMAGE}"
STATUS_KEYS = ("conditions", "imageIdentity", "signedClaims", "issuedBy", "issuedTo")
# containers/image names extension signatures `<digest>@<32 hex>`; accept any sane suffix.
_SIG_SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNATURE_TYPES = ("atomic", "cosign")

# Error messages for one verification record (none when valid). The rules are core's
# (`signatures.verify.validate_signature_object`), passed in: metadata never imports core.
StatusValidator = Callable[[Mapping[str, Any]], list[str]]


class SignatureError(Exception):
    """Base class of the signature metadata errors."""


class SignatureConflict(SignatureError):
    """The same content (or the same name) is already stored for the image."""


class SignatureNotFound(SignatureError):
    """No signature of that name."""


class ImageNotFound(SignatureError):
    """The signed image does not exist."""


class InvalidSignatureName(SignatureError):
    """A name that is not `<image digest>@<signature name>`."""


class SignatureLimitExceeded(SignatureError):
    """One more signature would make the image's list longer than clients read
    (`metadata.signature_limits`)."""


class SignatureDenied(SignatureError):
    """A pushed signature manifest would record signatures its pusher may not create."""


@dataclass(frozen=True)
class SignatureRecord:
    """One stored signature; `status` holds only the keys of `STATUS_KEYS`."""

    image: str
    name: str
    type: str
    content: bytes
    created: datetime
    status: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def split_name(name: str) -> tuple[str, str]:
    """`sha256:<hex>@<sig>` → (image digest, signature suffix); raise if malformed."""
    image, sep, suffix = name.partition("@")
    if not sep or not image.startswith(("sha256:", "sha512:")) or not _SIG_SUFFIX_RE.match(suffix):
        raise InvalidSignatureName(
            f"signature name {name!r} must be <image digest>@<signature name>"
        )
    return image, suffix


def _record(row: Any) -> SignatureRecord:
    status = {k: v for k, v in (row.status or {}).items() if k in STATUS_KEYS}
    return SignatureRecord(
        image=row.image_digest,
        name=row.name,
        type=row.type,
        content=bytes(row.content),
        created=as_utc(row.created),
        status=MappingProxyType(status),
    )


def list_signatures(conn: Connection, digest: str) -> list[SignatureRecord]:
    """The signatures of one image, oldest first."""
    rows = conn.execute(
        select(signatures).where(signatures.c.image_digest == digest).order_by(signatures.c.id)
    ).all()
    return [_record(r) for r in rows]


def signatures_by_image(
    conn: Connection, digests: Iterable[str]
) -> dict[str, list[SignatureRecord]]:
    """Signatures of many images in one query (for rendering Image lists)."""
    wanted = sorted(set(digests))
    result: dict[str, list[SignatureRecord]] = {d: [] for d in wanted}
    if not wanted:
        return result
    rows = conn.execute(
        select(signatures).where(signatures.c.image_digest.in_(wanted)).order_by(signatures.c.id)
    ).all()
    for row in rows:
        result[row.image_digest].append(_record(row))
    return result


def list_for_extension(conn: Connection, digest: str) -> list[tuple[str, str, bytes]]:
    """`(name, type, content)` of an image's signatures: the extension GET, kept cheap."""
    rows = conn.execute(
        select(signatures.c.name, signatures.c.type, signatures.c.content)
        .where(signatures.c.image_digest == digest)
        .order_by(signatures.c.id)
    ).all()
    return [(r.name, r.type, bytes(r.content)) for r in rows]


def image_in_repository(conn: Connection, namespace: str, stream: str, digest: str) -> bool:
    """Whether the image is linked to `<namespace>/<stream>`."""
    query = (
        select(repository_manifests.c.digest)
        .join(repositories, repositories.c.id == repository_manifests.c.repository_id)
        .where(
            repositories.c.namespace == namespace,
            repositories.c.name == stream,
            repository_manifests.c.digest == digest,
        )
    )
    return conn.execute(query).first() is not None


def readable_blobs(
    conn: Connection, namespace: str, stream: str, digests: Iterable[str]
) -> set[str]:
    """The subset of *digests* linked to `<namespace>/<stream>`: the only blobs a push there
    may look into. Reading any other blob would answer differently for another tenant's
    existing blob and a missing one; the push refuses both alike (MANIFEST_BLOB_UNKNOWN)."""
    wanted = sorted(set(digests))
    if not wanted:
        return set()
    rows = conn.execute(
        select(repository_blobs.c.digest)
        .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
        .where(
            repositories.c.namespace == namespace,
            repositories.c.name == stream,
            repository_blobs.c.digest.in_(wanted),
        )
    )
    return set(rows.scalars())


def _image_exists(conn: Connection, digest: str) -> bool:
    return (
        conn.execute(select(manifests.c.digest).where(manifests.c.digest == digest)).first()
        is not None
    )


def touch_image(conn: Connection, digest: str) -> int:
    """Record that the Image changed (its signatures did); returns the new resourceVersion."""
    rv = record_change(conn, IMAGES_RESOURCE, "", digest, "MODIFIED")
    conn.execute(update(manifests).where(manifests.c.digest == digest).values(resource_version=rv))
    return rv


def content_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _clash(conn: Connection, name: str, digest: str, sha: str) -> Any:
    """The stored signature with this name, or with this content on the image, if any."""
    return conn.execute(
        select(
            signatures.c.id,
            signatures.c.name,
            signatures.c.source_repository_id,
            signatures.c.source_manifest,
        ).where(
            (signatures.c.name == name)
            | ((signatures.c.image_digest == digest) & (signatures.c.content_sha256 == sha))
        )
    ).first()


def add_signature(
    conn: Connection,
    name: str,
    sig_type: str,
    content: bytes,
    now: datetime,
    status: Mapping[str, Any] | None = None,
    *,
    source: tuple[int, str] | None = None,
) -> SignatureRecord:
    """Store a new signature named `<image>@<sig>`; raise on conflict, missing image, or
    when the image's list would exceed what clients read (`SignatureLimitExceeded`: every
    way of adding a signature passes here, so every way is held to the limits).
    `source` is the (repository id, manifest digest) of the pushed signature manifest it
    was found in; the signature is removed with that manifest."""
    digest, _suffix = split_name(name)
    if not _image_exists(conn, digest):
        raise ImageNotFound(f"image {digest} not found")
    sha = content_sha256(content)
    clash = _clash(conn, name, digest, sha)
    if clash is not None:
        what = "name" if clash.name == name else "content"
        raise SignatureConflict(f"a signature with the same {what} already exists: {clash.name}")
    refusal = list_refusal(conn, digest, sig_type, len(content))
    if refusal is not None:
        raise SignatureLimitExceeded(refusal)
    clean = {k: v for k, v in (status or {}).items() if k in STATUS_KEYS}
    repo_id, manifest = source if source is not None else (None, None)
    try:
        with conn.begin_nested():
            conn.execute(
                insert(signatures).values(
                    image_digest=digest,
                    name=name,
                    type=sig_type,
                    content=content,
                    content_sha256=sha,
                    created=now,
                    status=clean,
                    source_repository_id=repo_id,
                    source_manifest=manifest,
                )
            )
    except IntegrityError as exc:  # a concurrent writer won the race
        raise SignatureConflict(f"signature {name} already exists") from exc
    touch_image(conn, digest)
    return SignatureRecord(digest, name, sig_type, content, now, MappingProxyType(clean))


def delete_signature(conn: Connection, name: str) -> SignatureRecord:
    """Remove one signature by name; raise `SignatureNotFound` if absent."""
    row = conn.execute(select(signatures).where(signatures.c.name == name)).first()
    if row is None:
        raise SignatureNotFound(f"signature {name} not found")
    conn.execute(delete(signatures).where(signatures.c.id == row.id))
    touch_image(conn, row.image_digest)
    return _record(row)


def delete_all(conn: Connection, digest: str) -> int:
    """Remove every signature of an image; returns how many were removed."""
    removed = conn.execute(delete(signatures).where(signatures.c.image_digest == digest)).rowcount
    if removed:
        touch_image(conn, digest)
    return int(removed or 0)


def update_status(conn: Connection, name: str, status: Mapping[str, Any]) -> SignatureRecord:
    """Replace a signature's verification record (unknown keys are dropped)."""
    row = conn.execute(select(signatures).where(signatures.c.name == name)).first()
    if row is None:
        raise SignatureNotFound(f"signature {name} not found")
    clean = {k: v for k, v in status.items() if k in STATUS_KEYS}
    if clean != (row.status or {}):
        conn.execute(update(signatures).where(signatures.c.id == row.id).values(status=clean))
        touch_image(conn, row.image_digest)
    return SignatureRecord(
        row.image_digest,
        row.name,
        row.type,
        bytes(row.content),
        as_utc(row.created),
        MappingProxyType(clean),
    )


def has_signatures(conn: Connection, digest: str) -> bool:
    return bool(conn.execute(select(exists().where(signatures.c.image_digest == digest))).scalar())


class InvalidSignatureUpdate(SignatureError):
    """An Image update whose `signatures` cannot be applied; `causes` are (field, message)."""

    def __init__(self, causes: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in causes))
        self.causes = causes


def apply_image_signatures(
    conn: Connection,
    digest: str,
    entries: object,
    now: datetime,
    *,
    validate: StatusValidator,
) -> bool:
    """Make the image's signatures equal the `signatures` list of an updated Image body.

    How `ac adm verify-image-signature --save` and `kubectl edit`/`apply` change trust:
    entries are matched by name; a stored signature's `type` and `content` are immutable,
    its verification record is replaced once `validate` finds no error in it; unknown names
    are added (content required); stored names missing from the list are deleted.
    `entries is None` means the body did not mention signatures: nothing changes.
    Returns whether anything changed; raises `InvalidSignatureUpdate` before writing.
    """
    if entries is None:
        return False
    if not isinstance(entries, list):
        raise InvalidSignatureUpdate([("signatures", "must be a list")])
    stored = {s.name: s for s in list_signatures(conn, digest)}
    causes: list[tuple[str, str]] = []
    wanted: dict[str, tuple[str, bytes, dict[str, Any]]] = {}
    for index, entry in enumerate(entries):
        where = f"signatures[{index}]"
        parsed = _parse_entry(entry, where, digest, stored, causes)
        if parsed is None:
            continue
        name, sig_type, content, status = parsed
        if name in wanted:
            causes.append((f"{where}.name", f"duplicate signature {name}"))
        causes += [(where, m) for m in validate(status)]
        wanted[name] = (sig_type, content, status)
    if wanted.keys() - stored.keys():
        causes += over_budget(wanted.values())
    if causes:
        raise InvalidSignatureUpdate(causes)
    changed = False
    for name in stored.keys() - wanted.keys():
        delete_signature(conn, name)
        changed = True
    for name, (sig_type, content, status) in wanted.items():
        if name not in stored:
            add_signature(conn, name, sig_type, content, now, status)
            changed = True
        elif dict(stored[name].status) != status:
            update_status(conn, name, status)
            changed = True
    return changed


def _parse_entry(
    entry: object,
    where: str,
    digest: str,
    stored: Mapping[str, SignatureRecord],
    causes: list[tuple[str, str]],
) -> tuple[str, str, bytes, dict[str, Any]] | None:
    import base64
    import binascii

    if not isinstance(entry, Mapping):
        causes.append((where, "must be an object"))
        return None
    name = entry.get("name") or (entry.get("metadata") or {}).get("name")
    if not isinstance(name, str) or split_name_or_none(name) != digest:
        causes.append((f"{where}.name", f"must be {digest}@<signature name>"))
        return None
    old = stored.get(name)
    sig_type = entry.get("type") or (old.type if old else "atomic")
    content_b64 = entry.get("content")
    try:
        content = base64.b64decode(str(content_b64), validate=True) if content_b64 else b""
    except (binascii.Error, ValueError):
        causes.append((f"{where}.content", "must be base64"))
        return None
    if old is not None:
        if content and content != old.content:
            causes.append((f"{where}.content", "is immutable"))
        if sig_type != old.type:
            causes.append((f"{where}.type", "is immutable"))
        content = old.content
    elif not content:
        causes.append((f"{where}.content", "required for a new signature"))
    if sig_type not in SIGNATURE_TYPES:
        causes.append((f"{where}.type", f"unsupported value {sig_type!r}"))
    status = {k: entry[k] for k in STATUS_KEYS if k in entry and entry[k] not in (None, "", [], {})}
    return name, str(sig_type), content, status


def split_name_or_none(name: str) -> str | None:
    """The image digest part of a signature name, or None if the name is malformed."""
    try:
        return split_name(name)[0]
    except InvalidSignatureName:
        return None


@dataclass(frozen=True)
class PushedSignatures:
    """The cosign signatures a pushed manifest carries for `image`, as (name, content)
    pairs, and whether the pusher holds the signing right in the pushed repository's
    namespace (`create imagesignatures`, what the extension's PUT needs)."""

    image: str
    found: tuple[tuple[str, bytes], ...]
    may_sign: bool


def record_pushed_signatures(
    conn: Connection,
    repo_id: int,
    manifest_digest: str,
    pushed: PushedSignatures,
    now: datetime,
) -> int:
    """List the cosign signatures of a manifest just pushed to repository `repo_id` on the
    image they sign, inside the push's transaction. Returns how many were added.

    Like the extension's PUT, a signature is recorded only on an image of the repository
    pushed to; for any other image (another namespace's, or one not pushed yet) nothing is
    recorded and the push goes on, answering the same whether that image exists or not.
    For an image of the repository, a new signature the pusher may not create raises
    `SignatureDenied`, and one over the image's limits `SignatureLimitExceeded`: the push
    is refused whole and nothing of it stays. Signatures already stored are skipped; one
    recorded from an earlier push to this repository moves to this manifest (cosign adds
    a layer to the `.sig` manifest per signing, so the newest manifest carries them all).
    """
    if not _manifest_linked(conn, repo_id, pushed.image):
        return 0
    added = 0
    for name, content in pushed.found:
        clash = _clash(conn, name, pushed.image, content_sha256(content))
        if clash is not None:
            if pushed.may_sign and clash.source_repository_id == repo_id:
                conn.execute(
                    update(signatures)
                    .where(signatures.c.id == clash.id)
                    .values(source_manifest=manifest_digest)
                )
            continue
        if not pushed.may_sign:
            raise SignatureDenied(
                f"the manifest carries a cosign signature for image {pushed.image}; recording "
                "it needs `create imagesignatures` in this namespace (role system:image-signer)"
            )
        add_signature(conn, name, "cosign", content, now, source=(repo_id, manifest_digest))
        added += 1
    return added


def drop_pushed_signatures(conn: Connection, repo_id: int, manifest_digest: str) -> int:
    """Remove the signatures recorded from a signature manifest leaving repository
    `repo_id`, bumping each signed Image so watches see it. Call before unlinking; the
    foreign key removes them anyway on paths that do not call this (prune, stream delete)."""
    source = (signatures.c.source_repository_id == repo_id) & (
        signatures.c.source_manifest == manifest_digest
    )
    images = sorted(set(conn.execute(select(signatures.c.image_digest).where(source)).scalars()))
    if not images:
        return 0
    removed = int(conn.execute(delete(signatures).where(source)).rowcount or 0)
    for digest in images:
        touch_image(conn, digest)
    return removed


def restore_signature_rows(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Re-insert signature rows saved by a prune run, after its images and links are back.
    A row recorded from a pushed manifest that is no longer in its repository is left out:
    it would have been removed with that manifest. Returns how many were restored."""
    restored = 0
    for row in rows:
        values = {k: v for k, v in row.items() if k != "id"}
        repo_id, manifest = values.get("source_repository_id"), values.get("source_manifest")
        if manifest is not None and not _manifest_linked(conn, repo_id, manifest):
            continue
        conn.execute(insert(signatures).values(**values))
        restored += 1
    return restored


def _manifest_linked(conn: Connection, repo_id: object, digest: str) -> bool:
    return (
        conn.execute(
            select(repository_manifests.c.digest).where(
                repository_manifests.c.repository_id == repo_id,
                repository_manifests.c.digest == digest,
            )
        ).first()
        is not None
    )
