"""`v1` Namespaces: DNS-1123 label names, phase Active, and cascading delete.

Deleting a namespace removes everything stored in it (service accounts, roles, bindings)
and its image streams with their tag history, in the same transaction, so `kubectl delete
ns` returns with the namespace gone (kube would finalize asynchronously; kubectl would then
wait, which this server never makes it do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceInfo
from imageregistry.apiserver.store import StoredResource
from imageregistry.apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, created_age
from imageregistry.apiserver.validation import dns1123_label
from imageregistry.metadata.db import Database
from imageregistry.metadata.objects import delete_namespace_objects

NamespaceCleanup = Callable[[Connection, str], None]


class Namespaces(StoredResource):
    info = ResourceInfo("", "namespaces", "namespace", "Namespace", False, short_names=("ns",))
    schema = object_schema(spec={"finalizers": ANY}, status={"phase": ANY, "conditions": ANY})
    columns = (NAME_COLUMN, Column("Status", description="The status of the namespace"), AGE_COLUMN)
    name_check = staticmethod(dns1123_label)

    def __init__(self, db: Database, cleanups: tuple[NamespaceCleanup, ...] = ()) -> None:
        super().__init__(db)
        self._cleanups = cleanups

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        phase = (obj.get("status") or {}).get("phase", "Active")
        return [obj["metadata"]["name"], phase, created_age(obj, now)]

    def prepare(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        labels = dict(obj["metadata"].get("labels") or {})
        labels["kubernetes.io/metadata.name"] = str(obj["metadata"].get("name", ""))
        obj["metadata"]["labels"] = labels

    def on_delete(self, conn: Connection, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        delete_namespace_objects(conn, name)
        for cleanup in self._cleanups:
            cleanup(conn, name)


def ensure_namespace(db: Database, name: str, clock: Callable[[], datetime]) -> None:
    """Create namespace `name` if missing (the `default` namespace kubeconfigs point at)."""
    from sqlalchemy.exc import IntegrityError

    from imageregistry.apiserver.resource import RequestContext
    from imageregistry.apiserver.status import ApiError
    from imageregistry.auth.authorizer import MastersOnlyAuthorizer
    from imageregistry.auth.identity import UserInfo

    ctx = RequestContext(
        UserInfo("system:apiserver", groups=("system:masters",)), MastersOnlyAuthorizer(), clock
    )
    # Already there, possibly created by another worker at the same moment: fine.
    with contextlib.suppress(ApiError, IntegrityError):
        Namespaces(db).create(ctx, "", {"metadata": {"name": name}})


def record_cluster_namespace(db: Database, name: str, clock: Callable[[], datetime]) -> None:
    """Cluster mode: the cluster owns namespaces, and an authorized write into one this
    registry has not seen records it here (the rows of its image streams need one)."""
    from imageregistry.metadata.namespaces import create_namespace, namespace_exists

    with db.read() as conn:
        if namespace_exists(conn, name):
            return
    with db.write() as conn:
        create_namespace(conn, name, clock())
