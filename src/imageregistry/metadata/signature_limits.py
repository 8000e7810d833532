"""How many signatures an image may carry: what skopeo and podman can still read.

containers/image reads at most 4 MiB of an image's extension signature list
(`iolimits.MaxSignatureListBodySize`) and fails the whole pull beyond it. Base64 grows
content by 4/3 and each entry adds its name and JSON framing, so the content budget is
half that per signature type, with a cap on the entry count. Every way of adding a
signature (extension PUT, ImageSignature create, Image update) is held to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, func, select

from imageregistry.metadata.tables import signatures

MAX_LIST_CONTENT_BYTES = 2 << 20
MAX_SIGNATURES_PER_IMAGE = 256


def list_refusal(conn: Connection, digest: str, sig_type: str, size: int) -> str | None:
    """Why one more *sig_type* signature of *size* bytes may not be added, or None."""
    row = conn.execute(
        select(func.count(), func.coalesce(func.sum(func.length(signatures.c.content)), 0)).where(
            signatures.c.image_digest == digest, signatures.c.type == sig_type
        )
    ).one()
    count, used = int(row[0]), int(row[1])
    if count >= MAX_SIGNATURES_PER_IMAGE:
        return f"image {digest} already has {count} signatures (limit {MAX_SIGNATURES_PER_IMAGE})"
    if used + size > MAX_LIST_CONTENT_BYTES:
        return (
            f"the signatures of image {digest} would exceed {MAX_LIST_CONTENT_BYTES} bytes "
            "in total, more than clients read from the signature list"
        )
    return None


def over_budget(entries: Iterable[tuple[str, bytes, dict[str, Any]]]) -> list[tuple[str, str]]:
    """The `list_refusal` limits applied to a whole new signature list (an Image update)."""
    count: dict[str, int] = {}
    size: dict[str, int] = {}
    for sig_type, content, _ in entries:
        count[sig_type] = count.get(sig_type, 0) + 1
        size[sig_type] = size.get(sig_type, 0) + len(content)
    causes = []
    for sig_type in count:
        if count[sig_type] > MAX_SIGNATURES_PER_IMAGE:
            causes.append(
                ("signatures", f"more than {MAX_SIGNATURES_PER_IMAGE} {sig_type} signatures")
            )
        if size[sig_type] > MAX_LIST_CONTENT_BYTES:
            causes.append(
                (
                    "signatures",
                    f"{sig_type} signatures exceed {MAX_LIST_CONTENT_BYTES} bytes in total",
                )
            )
    return causes
