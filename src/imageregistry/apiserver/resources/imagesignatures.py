"""`image.alauda.io/v1` ImageSignature: create and delete only, named `<image>@<signature>`.

Creating one appends to the image's `signatures`, deleting removes it
(docs/behaviour.md#signatures). Conditions and the derived fields (imageIdentity, signedClaims,
issuedBy, issuedTo) given on create are cleared: trust is recorded only by an Image update, which
validates it with `signatures.verify.validate_signature_object` (passed to
`metadata.signatures.apply_image_signatures`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from imageregistry import apigroups
from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceHandler, ResourceInfo
from imageregistry.apiserver.status import FieldCause, already_exists, invalid, not_found
from imageregistry.clock import rfc3339
from imageregistry.metadata import signatures as sigs
from imageregistry.metadata.db import Database

GROUP = apigroups.IMAGE


class ImageSignatures(ResourceHandler):
    info = ResourceInfo(
        GROUP,
        "imagesignatures",
        "imagesignature",
        "ImageSignature",
        False,
        verbs=("create", "delete"),
    )
    schema = object_schema(
        type=ANY,
        content=ANY,
        conditions=ANY,
        imageIdentity=ANY,
        signedClaims=ANY,
        created=ANY,
        issuedBy=ANY,
        issuedTo=ANY,
    )

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = str((body.get("metadata") or {}).get("name") or "")
        sig_type = body.get("type") or "atomic"
        try:
            content = base64.b64decode(str(body.get("content") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise invalid(
                "ImageSignature",
                GROUP,
                name,
                [FieldCause("content", "Invalid value: must be base64")],
            ) from None
        causes = []
        if not content:
            causes.append(FieldCause("content", "Required value", "FieldValueRequired"))
        if sig_type not in sigs.SIGNATURE_TYPES:
            causes.append(
                FieldCause("type", f'Unsupported value: "{sig_type}"', "FieldValueNotSupported")
            )
        try:
            sigs.split_name(name)
        except sigs.InvalidSignatureName as exc:
            causes.append(FieldCause("metadata.name", f"Invalid value: {exc}"))
        if causes:
            raise invalid("ImageSignature", GROUP, name, causes)
        # Verification is recorded only by an Image update (`ac adm verify-image-signature
        # --save`): a new signature is never born trusted (docs/behaviour.md#signatures).
        status: dict[str, Any] = {}
        if ctx.dry_run:
            return body
        try:
            with self.db.write() as conn:
                record = sigs.add_signature(conn, name, str(sig_type), content, ctx.clock(), status)
        except sigs.SignatureLimitExceeded as exc:  # the extension GET must stay readable
            raise invalid(
                "ImageSignature", GROUP, name, [FieldCause("content", f"Too long: {exc}")]
            ) from None
        except sigs.ImageNotFound:
            raise not_found("images", GROUP, sigs.split_name(name)[0]) from None
        except sigs.SignatureConflict:
            raise already_exists("imagesignatures", GROUP, name) from None
        return _render(record)

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        try:
            with self.db.write() as conn:
                record = sigs.delete_signature(conn, name)
                if ctx.dry_run:
                    conn.rollback()
        except sigs.SignatureNotFound:
            raise not_found("imagesignatures", GROUP, name) from None
        return _render(record)


def _render(record: sigs.SignatureRecord) -> dict[str, Any]:
    return {
        "kind": "ImageSignature",
        "apiVersion": apigroups.IMAGE_V1,
        "metadata": {
            "name": record.name,
            "creationTimestamp": rfc3339(record.created),
        },
        "type": record.type,
        "content": base64.b64encode(record.content).decode(),
        **dict(record.status),
    }
