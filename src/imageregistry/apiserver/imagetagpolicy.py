"""`ImageTagPolicy` in `image.alauda.io/v1`: which tags of a namespace are immutable.

A namespaced object of the generic store (docs/operations.md, "Immutable tags"):

    spec:
      immutableTags:
      - imageStreams: ["*"]
        tags: ["v*"]

Validation (`tagpolicy.rules.parse_policy`) refuses bad shapes and globs with 422 and one
cause per field. Every write of a policy takes the namespace's policy lock first
(`metadata.tag_policies.lock_for_policy_write`), so it is ordered against the tag writes
that check policies. Enforcement is in the metadata layer, inside each tag write's
transaction; `refused_as_forbidden` turns its `TagImmutable` into a 403 Status for the
image resources.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from imageregistry import apigroups
from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceInfo
from imageregistry.apiserver.status import FieldCause, forbidden
from imageregistry.apiserver.store import StoredResource
from imageregistry.apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, age
from imageregistry.metadata.tag_policies import TagImmutable, lock_for_policy_write
from imageregistry.tagpolicy.rules import parse_policy

GROUP = apigroups.IMAGE


def _joined(patterns: Any) -> str:
    return ",".join(p for p in patterns if isinstance(p, str)) if isinstance(patterns, list) else ""


class ImageTagPolicies(StoredResource):
    info = ResourceInfo(GROUP, "imagetagpolicies", "imagetagpolicy", "ImageTagPolicy", True)
    schema = object_schema(spec={"immutableTags": [{"imageStreams": ANY, "tags": ANY}]})
    columns = (
        NAME_COLUMN,
        Column("Image Streams", description="Stream patterns of the immutable-tag rules"),
        Column("Immutable Tags", description="Tag patterns of the immutable-tag rules"),
        AGE_COLUMN,
    )

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        rules = (obj.get("spec") or {}).get("immutableTags") or []
        rules = [r for r in rules if isinstance(r, dict)]
        return [
            obj["metadata"]["name"],
            ";".join(_joined(r.get("imageStreams")) for r in rules),
            ";".join(_joined(r.get("tags")) for r in rules),
            age(obj["metadata"].get("creationTimestamp"), now),
        ]

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        _, causes = parse_policy(obj["metadata"]["name"], obj.get("spec"))
        return [FieldCause(c.field, c.message, _reason(c.message)) for c in causes]

    def lock(self, conn: Connection, namespace: str) -> None:
        lock_for_policy_write(conn, namespace)


def _reason(message: str) -> str:
    if message.startswith("Required value"):
        return "FieldValueRequired"
    if message.startswith("Unsupported value"):
        return "FieldValueNotSupported"
    if message.startswith("Too many"):
        return "FieldValueTooMany"
    return "FieldValueInvalid"


@contextmanager
def refused_as_forbidden(plural: str, name: str) -> Iterator[None]:
    """A write the metadata layer refused for an immutable tag → 403 naming the policy."""
    try:
        yield
    except TagImmutable as exc:
        raise forbidden(plural, GROUP, name, str(exc)) from None
