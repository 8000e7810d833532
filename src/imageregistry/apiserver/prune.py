"""API resources for cleanup: `imageprunes`, `registrygcs` (create-only) and `imagepruneruns`.

Creating an `ImagePrune` plans and executes a prune on the server in one transaction and answers
with the plan and its outcome in `status`; `?dryRun=All` plans and describes without changing
anything (docs/behaviour.md#ac-adm-prune-images). `spec.undo: RUN` restores a recorded run instead,
refused with 403 unless the caller may pull every image it would put back into a stream
(`resources.image_access`). Creating a `RegistryGC` runs (or with `dryRun=All`, previews) blob
reclamation, plus the storage reconciler when `spec.reconcile` is set. Nothing is stored for either
object; `imagepruneruns` lists the recorded runs an undo can name. The dispatcher
(`api_dispatch.py`) has already authorized `create` on the resource (system:image-pruner); a
confirmed prune with `pruneRegistry` also needs `create registrygcs`, an admission step
(`admission.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.from_thread
from sqlalchemy import Connection

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.imagetagpolicy import refused_as_forbidden
from imageregistry.apiserver.resource import (
    ListOptions,
    ListResult,
    RequestContext,
    ResourceHandler,
    ResourceInfo,
)
from imageregistry.apiserver.resources.image_access import StreamKey, require_image_access
from imageregistry.apiserver.status import ApiError, bad_request, forbidden, not_found
from imageregistry.apiserver.store import current_resource_version
from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.clock import rfc3339
from imageregistry.metadata.db import Database
from imageregistry.metadata.prune_runs import RunNotFound, UndoRefused, get_run, list_runs
from imageregistry.prune.inuse import InvalidReferences
from imageregistry.prune.options import InvalidOptions, PruneOptions
from imageregistry.prune.service import Pruner
from imageregistry.prune.wire import (
    gc_status,
    prune_status,
    reconcile_status,
    run_object,
    undo_status,
)

T = TypeVar("T")


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from a handler, on the server's loop: handlers run in its threadpool."""

    async def call() -> T:
        return await factory()

    return anyio.from_thread.run(call)


def _result_object(
    kind: str, body: dict[str, Any], status: dict[str, Any], ctx: RequestContext
) -> dict[str, Any]:
    meta = dict(body.get("metadata") or {})
    meta["creationTimestamp"] = rfc3339(ctx.clock())
    if status.get("runID"):
        meta["name"] = status["runID"]
    return {
        "apiVersion": f"{IMAGE_GROUP}/v1",
        "kind": kind,
        "metadata": meta,
        "spec": body.get("spec") or {},
        "status": status,
    }


# The JSON type of each spec field. Checked before use because Python's truthiness would
# read `"all": "false"` as true and widen a destructive prune; kube's decoder answers 400.
PRUNE_FIELDS: dict[str, type] = {
    "keepTagRevisions": int,
    "keepYoungerThan": str,
    "whitelist": list,
    "all": bool,
    "pruneRegistry": bool,
    "registryURL": str,
    "ignoreInvalidRefs": bool,
    "keepReferenced": list,
    "catalogPageSize": int,
    "undo": str,
}
GC_FIELDS: dict[str, type] = {"reconcile": bool}
_MAX_INT = 2**31 - 1


def _check_types(spec: dict[str, Any], fields: dict[str, type]) -> None:
    for key, kind in fields.items():
        value = spec.get(key)
        if value is None:
            continue
        # bool is an int in Python but not in JSON
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong or (kind is int and not 0 <= value <= _MAX_INT):
            want = {int: "an integer from 0 to 2147483647", bool: "a boolean"}.get(
                kind, f"a {'list' if kind is list else 'string'}"
            )
            raise bad_request(f"spec.{key} must be {want}, got {value!r}"[:300])


class ImagePrunes(ResourceHandler):
    info = ResourceInfo(
        IMAGE_GROUP, "imageprunes", "imageprune", "ImagePrune", False, verbs=("create",)
    )
    schema = object_schema(spec=dict.fromkeys(PRUNE_FIELDS, ANY), status=ANY)

    def __init__(self, pruner: Pruner) -> None:
        self._pruner = pruner

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise bad_request("spec must be an object")
        _check_types(spec, PRUNE_FIELDS)
        if spec.get("undo"):
            return _result_object("ImagePrune", body, self._undo(ctx, str(spec["undo"])), ctx)
        try:
            options = PruneOptions.from_spec(spec)
        except (InvalidOptions, OverflowError) as exc:
            raise bad_request(f"invalid prune spec: {exc}") from None
        with_gc = options.prune_registry and not ctx.dry_run
        if with_gc and not ctx.admission_allows("create", IMAGE_GROUP, "registrygcs"):
            raise forbidden(
                "registrygcs",
                IMAGE_GROUP,
                "",
                f'User "{ctx.user.username}" cannot create resource "registrygcs"',
            )
        try:
            outcome = self._pruner.prune(options, ctx.user.username, ctx.dry_run)
        except InvalidReferences as exc:
            raise bad_request(f"{exc} (use --ignore-invalid-refs to skip them)") from None
        status = prune_status(outcome)
        if with_gc:
            gc = run_async(lambda: self._pruner.gc(dry_run=False))
            status["registryGC"] = gc_status(gc)
        return _result_object("ImagePrune", body, status, ctx)

    def _undo(self, ctx: RequestContext, run_id: str) -> dict[str, Any]:
        def check(conn: Connection, namespace: str, stream: str, digest: str) -> None:
            # Restoring puts images back into streams; like every other path that makes a
            # stream reference an image, the caller must be able to pull them.
            target = StreamKey(namespace, stream)
            require_image_access(
                ctx, conn, target, digest, [target], resource="imageprunes", name=run_id
            )

        try:
            with refused_as_forbidden("imageprunes", run_id):
                return undo_status(self._pruner.undo(run_id, check, dry_run=ctx.dry_run))
        except RunNotFound:
            raise not_found("imagepruneruns", IMAGE_GROUP, run_id) from None
        except UndoRefused as exc:
            raise ApiError(409, "Conflict", str(exc)) from None


class RegistryGCs(ResourceHandler):
    info = ResourceInfo(
        IMAGE_GROUP, "registrygcs", "registrygc", "RegistryGC", False, verbs=("create",)
    )
    schema = object_schema(spec=dict.fromkeys(GC_FIELDS, ANY), status=ANY)

    def __init__(self, pruner: Pruner) -> None:
        self._pruner = pruner

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise bad_request("spec must be an object")
        _check_types(spec, GC_FIELDS)
        status = gc_status(run_async(lambda: self._pruner.gc(dry_run=ctx.dry_run)))
        if spec.get("reconcile"):
            report = run_async(lambda: self._pruner.reconcile(dry_run=ctx.dry_run))
            status["reconcile"] = reconcile_status(report)
        return _result_object("RegistryGC", body, status, ctx)


class ImagePruneRuns(ResourceHandler):
    info = ResourceInfo(
        IMAGE_GROUP,
        "imagepruneruns",
        "imageprunerun",
        "ImagePruneRun",
        False,
        verbs=("get", "list"),
    )

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        with self._db.read() as conn:
            run = get_run(conn, name)
        if run is None:
            raise not_found(self.info.plural, IMAGE_GROUP, name)
        return run_object(run)

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        with self._db.read() as conn:
            runs = list_runs(conn)
            version = current_resource_version(conn)
        return ListResult([run_object(r) for r in runs], version)
