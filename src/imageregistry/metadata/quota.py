"""Namespace quotas and limits: usage computed with SQL, checked inside the writing transaction.

A namespace's usage is never a stored counter: it is computed from the reference tables
(`repositories`, `repository_manifests`, `tag_events`, `manifest_blobs`, `blobs`) by the
transaction that is about to change them, so it cannot drift from what the registry holds
(docs/operations.md, "Quotas and limits").

- `count/imagestreams.image.alauda.io`: the namespace's repositories (image streams).
- `image.alauda.io/images`: distinct images the namespace's streams link or tag.
- `image.alauda.io/storage`: bytes of the distinct blobs those images reference: a layer
  shared by two streams of one namespace counts once, a layer shared with another
  namespace counts in each. Blobs uploaded but referenced by no manifest do not count.

Checks run under a per-namespace lock, so concurrent pushes into one namespace are decided
one after the other against committed usage: on PostgreSQL a transaction-scoped advisory
lock (held until commit, shared by every server process on the database), on SQLite the
write transaction itself (BEGIN IMMEDIATE admits one writer at a time).

Every statement inside SQLite's single writer delays every other push, so the common push
costs one statement: a namespace without ResourceQuota or LimitRange objects one indexed
read (`_survey`), a new image in a namespace whose objects this process knows one UPDATE
of its admission bound (below) that checks and raises it and returns the objects' versions
(`_admit_known`). Everything else (the first push a process sees, changed objects, a bound
that does not fit, LimitRanges per stream) takes the full check: one read (`_survey`),
then what the decision needs. The parsed objects are kept per process (`LimitsCache`) and
used only while a statement of the push finds their (uid, resourceVersion) pairs unchanged.

A push admits against an *admission bound* instead of recomputing the namespace's usage
each time (that cost grows with the namespace): a `quota_bounds` row per namespace holding
images and storage that are never below the true usage. Every path that adds references
either raises the bound by exactly what it adds, under the namespace lock, or deletes it
(a push into a namespace without quotas, an undo); paths that remove references leave it
high. A push whose request fits under the bound is admitted (the truth is at most the
bound); one that does not fit is decided on the usage computed from scratch, which then
becomes the bound. So admission is exact and refusals are never caused by a stale bound.
What `kubectl get quota` shows is always computed from scratch.

Refusals are `QuotaExceeded` (a ResourceQuota) and `LimitExceeded` (a LimitRange); their
messages name the object, the resource, what was requested, what is used and the limit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import CompoundSelect, Select

from imageregistry import apigroups
from imageregistry.metadata.tables import (
    blobs,
    manifest_blobs,
    manifests,
    objects,
    quota_bounds,
    repositories,
    repository_manifests,
    tag_events,
)
from imageregistry.quantity import InvalidQuantity, approx_bytes, parse_quantity

QUOTAS = "resourcequotas"  # `objects.resource` keys (core group: the plural alone)
LIMIT_RANGES = "limitranges"

STREAMS = f"count/imagestreams.{apigroups.IMAGE}"
IMAGES = f"{apigroups.IMAGE}/images"
STORAGE = f"{apigroups.IMAGE}/storage"
QUOTA_RESOURCES = (STREAMS, STORAGE, IMAGES)
BYTE_RESOURCES = frozenset({STORAGE})

IMAGE_LIMIT = f"{apigroups.IMAGE}/Image"
STREAM_LIMIT = f"{apigroups.IMAGE}/ImageStream"
LIMIT_STORAGE = "storage"
LIMIT_TAGS = f"{apigroups.IMAGE}/image-tags"
LIMIT_IMAGES = f"{apigroups.IMAGE}/images"
LIMIT_RESOURCES = {IMAGE_LIMIT: (LIMIT_STORAGE,), STREAM_LIMIT: (LIMIT_TAGS, LIMIT_IMAGES)}

_LOCK_PREFIX = "quota:"


class QuotaRefused(Exception):
    """A change would take a namespace over a ResourceQuota or a LimitRange."""


class QuotaExceeded(QuotaRefused):
    def __init__(self, quota: str, resource: str, requested: int, used: int, hard: int) -> None:
        show = approx_bytes if resource in BYTE_RESOURCES else str
        super().__init__(
            f"exceeded quota {quota}: {resource} requested {show(requested)}, "
            f"used {show(used)}, limited {show(hard)}"
        )
        self.quota, self.resource = quota, resource
        self.requested, self.used, self.hard = requested, used, hard


class LimitExceeded(QuotaRefused):
    pass


@dataclass(frozen=True)
class Quota:
    name: str
    hard: Mapping[str, int]


@dataclass(frozen=True)
class LimitItem:
    limit_range: str
    type: str
    max: Mapping[str, int]


@dataclass(frozen=True)
class NamespaceLimits:
    quotas: tuple[Quota, ...] = ()
    items: tuple[LimitItem, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.quotas or self.items)

    def of_type(self, kind: str) -> list[LimitItem]:
        return [i for i in self.items if i.type == kind]


@dataclass(frozen=True)
class Usage:
    """What a namespace uses, by quota resource name."""

    values: Mapping[str, int] = field(default_factory=dict)

    def get(self, resource: str) -> int:
        return int(self.values.get(resource, 0))


# --- the objects ----------------------------------------------------------------------


def quota_hard(spec: Any) -> dict[str, int]:
    """`spec.hard` of a ResourceQuota as integers; `ValueError` naming what is wrong.
    Only the resources this registry counts are accepted: a limit nothing enforces would
    look like protection and be none."""
    if not isinstance(spec, dict):
        raise ValueError("spec: must be an object")
    hard = spec.get("hard") or {}
    if not isinstance(hard, dict):
        raise ValueError("spec.hard: must be an object")
    out: dict[str, int] = {}
    for name, value in hard.items():
        if name not in QUOTA_RESOURCES:
            raise ValueError(
                f"spec.hard[{name}]: unsupported resource; this registry counts "
                + ", ".join(QUOTA_RESOURCES)
            )
        try:
            out[name] = parse_quantity(value)
        except InvalidQuantity as exc:
            raise ValueError(f"spec.hard[{name}]: {exc}") from None
    for key in ("scopes", "scopeSelector"):
        if spec.get(key):
            raise ValueError(f"spec.{key}: quota scopes do not apply to images")
    return out


def limit_items(name: str, spec: Any) -> list[LimitItem]:
    """`spec.limits` of a LimitRange: the image types with their `max` (other fields and
    types are refused, for the same reason as in `quota_hard`)."""
    if not isinstance(spec, dict):
        raise ValueError("spec: must be an object")
    limits = spec.get("limits") or []
    if not isinstance(limits, list):
        raise ValueError("spec.limits: must be a list")
    out: list[LimitItem] = []
    for i, item in enumerate(limits):
        where = f"spec.limits[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be an object")
        kind = item.get("type")
        if kind not in LIMIT_RESOURCES:
            raise ValueError(
                f"{where}.type: {kind!r} is not supported; use {IMAGE_LIMIT} or {STREAM_LIMIT}"
            )
        for key in ("min", "default", "defaultRequest", "maxLimitRequestRatio"):
            if item.get(key):
                raise ValueError(f"{where}.{key}: only max applies to {kind}")
        maximum = item.get("max") or {}
        if not isinstance(maximum, dict):
            raise ValueError(f"{where}.max: must be an object")
        values: dict[str, int] = {}
        for resource, value in maximum.items():
            if resource not in LIMIT_RESOURCES[kind]:
                raise ValueError(
                    f"{where}.max[{resource}]: {kind} limits " + ", ".join(LIMIT_RESOURCES[kind])
                )
            try:
                values[resource] = parse_quantity(value)
            except InvalidQuantity as exc:
                raise ValueError(f"{where}.max[{resource}]: {exc}") from None
        out.append(LimitItem(name, kind, values))
    return out


def namespace_limits(conn: Connection, namespace: str) -> NamespaceLimits:
    """The ResourceQuotas and LimitRange items of a namespace (one indexed read).
    Objects are validated when written; one that no longer parses is skipped."""
    return _load_limits(conn, namespace)[1]


Fingerprint = frozenset[tuple[str, int]]  # (uid, resourceVersion) of each object


def _load_limits(conn: Connection, namespace: str) -> tuple[Fingerprint, NamespaceLimits]:
    rows = conn.execute(
        select(
            objects.c.resource,
            objects.c.name,
            objects.c.body,
            objects.c.uid,
            objects.c.resource_version,
        ).where(objects.c.resource.in_((QUOTAS, LIMIT_RANGES)), objects.c.namespace == namespace)
    ).all()
    quotas: list[Quota] = []
    items: list[LimitItem] = []
    for resource, name, body, _, _ in sorted(rows, key=lambda r: (r[0], r[1])):
        try:
            if resource == QUOTAS:
                quotas.append(Quota(name, quota_hard((body or {}).get("spec") or {})))
            else:
                items += limit_items(name, (body or {}).get("spec") or {})
        except ValueError:
            continue
    fingerprint = frozenset((str(r.uid), int(r.resource_version)) for r in rows)
    return fingerprint, NamespaceLimits(tuple(quotas), tuple(items))


class LimitsCache:
    """One per process (held by `ManifestMetadata`): the parsed quota and limit objects of
    the namespaces pushed into, and the push check's statements.

    Exact without any invalidation message: every push reads the namespace's objects'
    (uid, resourceVersion) pairs in its check statement and uses the cached objects only
    when that set is the one they were parsed from. Every write of an object gives it a
    resourceVersion never used before (the change log keeps its newest row, so ids are
    not reused), and a new object has a new uid, so any create, change or delete of a
    quota or a LimitRange, by this process or another, changes the set."""

    MAX_NAMESPACES = 4096

    def __init__(self, max_blobs: int = 64, probes: int = 64) -> None:
        """`max_blobs`: blobs of an image asked about in the check statement (the others
        count as new to the namespace in the estimate); `probes`: the most recent
        references of each blob looked at."""
        self.max_blobs, self.probes = max_blobs, probes
        self._lock = threading.Lock()
        self._limits: dict[str, tuple[Fingerprint, NamespaceLimits]] = {}
        self._statements: dict[tuple[bool, int, str], Select[Any]] = {}
        self._fast: dict[tuple[bool, bool, int, str], ReturningUpdate[Any]] = {}

    def known(self, namespace: str) -> tuple[Fingerprint, NamespaceLimits] | None:
        """The namespace's objects when last seen, if it had any."""
        entry = self._limits.get(namespace)
        return entry if entry is not None and entry[0] else None

    def limits(self, conn: Connection, namespace: str, fingerprint: Fingerprint) -> NamespaceLimits:
        entry = self._limits.get(namespace)
        if entry is not None and entry[0] == fingerprint:
            return entry[1]
        loaded = _load_limits(conn, namespace) if fingerprint else (fingerprint, NamespaceLimits())
        with self._lock:
            if namespace not in self._limits and len(self._limits) >= self.MAX_NAMESPACES:
                self._limits.pop(next(iter(self._limits)))
            self._limits[namespace] = loaded
        return loaded[1]

    def statement(self, image: bool, blobs: int, dialect: str) -> Select[Any]:
        key = (image, blobs, dialect)
        found = self._statements.get(key)
        if found is None:
            found = _survey_statement(image, blobs, dialect == "sqlite", self.probes)
            self._statements[key] = found
        return found

    def fast_statement(
        self, images: bool, storage: bool, blobs: int, dialect: str
    ) -> ReturningUpdate[Any]:
        key = (images, storage, blobs, dialect)
        found = self._fast.get(key)
        if found is None:
            found = _fast_statement(images, storage, blobs, dialect == "sqlite", self.probes)
            self._fast[key] = found
        return found


@dataclass(frozen=True)
class Survey:
    """What the push check's statement found (`present` and `held` only when asked).
    `held`: blobs of the image found among the namespace's images; a blob not in it may
    still be held (only its most recent references were looked at)."""

    fingerprint: Fingerprint
    bound: dict[str, int] | None
    bound_stored: bool
    present: bool | None = None
    held: frozenset[str] = frozenset()


def _survey_statement(image: bool, blobs: int, sqlite: bool, probes: int) -> Select[Any]:
    """One row per quota or limit object of the namespace (one row if it has none), each
    with the admission bound and, with `image`, whether the namespace holds the image and
    whether one of the `probes` most recent references of each blob is an image of the
    namespace: uncorrelated scalar subqueries, evaluated once. The probes keep the cost of
    a blob that thousands of images of other namespaces share (a common base layer) from
    growing with them; a held blob the probes miss only makes the estimate high."""
    namespace: BindParameter[str] = bindparam("ns")
    columns: list[Any] = [
        objects.c.uid,
        objects.c.resource_version,
        quota_bounds.c.images.label("bound_images"),
        quota_bounds.c.storage.label("bound_storage"),
    ]
    if image:
        columns.append(_in_namespace(namespace, bindparam("digest")).label("present"))
        columns += [_held(namespace, i, sqlite, probes).label(f"held{i}") for i in range(blobs)]
    one = select(literal(1).label("one")).subquery("one")
    joined = one.outerjoin(objects, _limit_objects(namespace)).outerjoin(
        quota_bounds, quota_bounds.c.namespace == namespace
    )
    return select(*columns).select_from(joined)


def _limit_objects(namespace: BindParameter[str]) -> Any:
    return and_(objects.c.resource.in_((QUOTAS, LIMIT_RANGES)), objects.c.namespace == namespace)


def _held(namespace: BindParameter[str], i: int, sqlite: bool, probes: int) -> Any:
    """SQL: one of the `probes` most recent references of blob `blob{i}` is an image of
    the namespace."""
    recent = select(manifest_blobs.c.manifest_digest).where(
        manifest_blobs.c.blob_digest == bindparam(f"blob{i}")
    )
    if sqlite:  # newest first: the index on blob_digest is in rowid order
        recent = recent.order_by(literal_column("manifest_blobs.rowid").desc())
    refs = recent.limit(probes).subquery(f"refs{i}")
    if sqlite:  # one probe of the digest index per reference
        held = _in_namespace(namespace, refs.c.manifest_digest)
    else:
        # OFFSET 0 keeps PostgreSQL from turning the correlated EXISTS into a hash of every
        # image of the namespace, built on every push (it expects few per namespace).
        held = or_(
            *(
                exists(
                    select(literal(1))
                    .where(
                        table.c.digest == refs.c.manifest_digest,
                        table.c.repository_id == repositories.c.id,
                        repositories.c.namespace == namespace,
                    )
                    .offset(0)
                )
                for table in (repository_manifests, tag_events)
            )
        )
    return exists(select(refs.c.manifest_digest).where(held))


def _fast_statement(
    images: bool, storage: bool, blobs: int, sqlite: bool, probes: int
) -> ReturningUpdate[Any]:
    """The whole check of a new image in a namespace whose objects this process knows, as
    one write: raise the bound by the image's estimate where the raised bound stays within
    the tightest hard limits (`images`/`storage`: whether any quota limits them) and the
    namespace does not hold the image yet; return the objects' (uid, resourceVersion)
    pairs, so the caller can tell whether the limits it passed were still current."""
    namespace: BindParameter[str] = bindparam("ns")
    request: Any = bindparam("unsure", type_=BigInteger())
    for i in range(blobs):
        size = bindparam(f"size{i}", type_=BigInteger())
        request = request + case((_held(namespace, i, sqlite, probes), 0), else_=size)
    where = [
        quota_bounds.c.namespace == namespace,
        ~_in_namespace(namespace, bindparam("digest")),
    ]
    if images:
        where.append(quota_bounds.c.images + 1 <= bindparam("hard_images", type_=BigInteger()))
    if storage:
        where.append(
            quota_bounds.c.storage + request <= bindparam("hard_storage", type_=BigInteger())
        )
    pair = objects.c.uid + ":" + cast(objects.c.resource_version, String)
    fingerprint = (
        select(func.aggregate_strings(pair, ",")).where(_limit_objects(namespace)).scalar_subquery()
    )
    return (
        update(quota_bounds)
        .where(*where)
        .values(images=quota_bounds.c.images + 1, storage=quota_bounds.c.storage + request)
        .returning(fingerprint.label("fingerprint"))
    )


def _survey(
    conn: Connection,
    namespace: str,
    digest: str,
    blob_sizes: Mapping[str, int],
    cache: LimitsCache,
    *,
    image: bool,
) -> Survey:
    digests = sorted(blob_sizes)[: cache.max_blobs] if image else []
    params: dict[str, Any] = {"ns": namespace}
    if image:
        params["digest"] = digest
        params.update((f"blob{i}", d) for i, d in enumerate(digests))
    statement = cache.statement(image, len(digests), conn.dialect.name)
    rows = conn.execute(statement, params).all()
    first = rows[0]._mapping
    fingerprint = frozenset(
        (str(r.uid), int(r.resource_version)) for r in rows if r.uid is not None
    )
    stored = first["bound_images"] is not None
    bound = (
        {IMAGES: int(first["bound_images"]), STORAGE: int(first["bound_storage"])}
        if stored
        else None
    )
    survey = Survey(fingerprint, bound, stored)
    if not image:
        return survey
    held = frozenset(d for i, d in enumerate(digests) if first[f"held{i}"])
    return Survey(
        survey.fingerprint, survey.bound, survey.bound_stored, bool(first["present"]), held
    )


# --- usage ----------------------------------------------------------------------------


def lock_namespace(conn: Connection, namespace: str) -> None:
    """Serialize quota decisions of one namespace until this transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK_PREFIX + namespace}
        )


def _stream_ids(namespace: str) -> Any:
    return select(repositories.c.id).where(repositories.c.namespace == namespace).scalar_subquery()


def namespace_images(namespace: str) -> CompoundSelect[Any]:
    """Digests the namespace's streams link or tag (a tag only ever names a linked image,
    but a restore or an older database may differ: both count)."""
    ids = _stream_ids(namespace)
    return union(
        select(repository_manifests.c.digest).where(repository_manifests.c.repository_id.in_(ids)),
        select(tag_events.c.digest).where(tag_events.c.repository_id.in_(ids)),
    )


def namespace_usage(
    conn: Connection, namespace: str, resources: Iterable[str] = QUOTA_RESOURCES
) -> Usage:
    """The namespace's usage of `resources`, computed from scratch."""
    wanted = set(resources)
    values: dict[str, int] = {}
    if STREAMS in wanted:
        values[STREAMS] = int(
            conn.execute(
                select(func.count())
                .select_from(repositories)
                .where(repositories.c.namespace == namespace)
            ).scalar_one()
        )
    if wanted & {IMAGES, STORAGE}:
        # One statement: the namespace's image set is built once (a CTE) for both sums.
        images = namespace_images(namespace).cte("ns_images")
        digests = select(images.c.digest)
        columns = []
        if IMAGES in wanted:
            columns.append(
                select(func.count())
                .select_from(manifests)
                .where(manifests.c.digest.in_(digests))
                .scalar_subquery()
                .label("images")
            )
        if STORAGE in wanted:
            referenced = select(manifest_blobs.c.blob_digest).where(
                manifest_blobs.c.manifest_digest.in_(digests)
            )
            columns.append(
                select(func.coalesce(func.sum(blobs.c.size), 0))
                .where(blobs.c.digest.in_(referenced))
                .scalar_subquery()
                .label("storage")
            )
        row = conn.execute(select(*columns)).one()._mapping
        if IMAGES in wanted:
            values[IMAGES] = int(row["images"])
        if STORAGE in wanted:
            values[STORAGE] = int(row["storage"])
    return Usage(values)


def _in_namespace(namespace: str | BindParameter[str], digest_column: Any) -> Any:
    """SQL: the image named by `digest_column` is linked or tagged in the namespace."""
    return exists().where(
        repository_manifests.c.digest == digest_column,
        repository_manifests.c.repository_id == repositories.c.id,
        repositories.c.namespace == namespace,
    ) | exists().where(
        tag_events.c.digest == digest_column,
        tag_events.c.repository_id == repositories.c.id,
        repositories.c.namespace == namespace,
    )


def image_in_namespace(conn: Connection, namespace: str, digest: str) -> bool:
    return bool(conn.execute(select(_in_namespace(namespace, digest))).scalar())


def _shared_blobs(conn: Connection, namespace: str, sizes: Mapping[str, int]) -> set[str]:
    """Those of the blobs in `sizes` that an image of the namespace references already."""
    if not sizes:
        return set()
    return set(
        conn.execute(
            select(manifest_blobs.c.blob_digest)
            .where(
                manifest_blobs.c.blob_digest.in_(list(sizes)),
                _in_namespace(namespace, manifest_blobs.c.manifest_digest),
            )
            .distinct()
        ).scalars()
    )


def _stream_counts(conn: Connection, repo_id: int) -> tuple[set[str], set[str]]:
    """(images, tags) of one stream."""
    images = set(
        conn.execute(
            union(
                select(repository_manifests.c.digest).where(
                    repository_manifests.c.repository_id == repo_id
                ),
                select(tag_events.c.digest).where(tag_events.c.repository_id == repo_id),
            )
        ).scalars()
    )
    tags = set(
        conn.execute(
            select(tag_events.c.tag).where(tag_events.c.repository_id == repo_id).distinct()
        ).scalars()
    )
    return images, tags


def _repo_id(conn: Connection, namespace: str, name: str) -> int | None:
    row = conn.execute(
        select(repositories.c.id).where(
            and_(repositories.c.namespace == namespace, repositories.c.name == name)
        )
    ).first()
    return None if row is None else int(row.id)


# --- the admission bound --------------------------------------------------------------


def _write_bound(
    conn: Connection, namespace: str, values: Mapping[str, int], *, stored: bool
) -> None:
    """Under the namespace lock, so nobody else writes this row meanwhile and `stored`
    (whether the row existed when the check read it) still holds."""
    row = {"images": int(values[IMAGES]), "storage": int(values[STORAGE])}
    if stored:
        conn.execute(
            update(quota_bounds).where(quota_bounds.c.namespace == namespace).values(**row)
        )
    else:
        conn.execute(insert(quota_bounds).values(namespace=namespace, **row))


def forget_usage(conn: Connection, namespaces: Iterable[str]) -> None:
    """Drop the admission bounds of namespaces whose usage grew outside `check_push`."""
    wanted = sorted(set(namespaces))
    if wanted:
        conn.execute(delete(quota_bounds).where(quota_bounds.c.namespace.in_(wanted)))


# --- checks ---------------------------------------------------------------------------


def _check_quotas(
    conn: Connection, namespace: str, quotas: Iterable[Quota], requested: Mapping[str, int]
) -> None:
    relevant = [(q, r) for q in quotas for r in sorted(q.hard) if requested.get(r, 0) > 0]
    if not relevant:
        return
    usage = namespace_usage(conn, namespace, {r for _, r in relevant})
    for quota, resource in relevant:
        used, want = usage.get(resource), requested[resource]
        if used + want > quota.hard[resource]:
            raise QuotaExceeded(quota.name, resource, want, used, quota.hard[resource])


def check_new_stream(conn: Connection, namespace: str, *, lock: bool = True) -> None:
    """Before a stream is created: refuse it when the namespace is at a quota of
    `count/imagestreams.image.alauda.io`. `lock=False` answers from a read (the early
    check at the start of an upload, so a client is refused before it sends a layer)."""
    quotas = [q for q in namespace_limits(conn, namespace).quotas if STREAMS in q.hard]
    if not quotas:
        return
    if lock:
        lock_namespace(conn, namespace)
    _check_quotas(conn, namespace, quotas, {STREAMS: 1})


def check_push(
    conn: Connection,
    namespace: str,
    stream: str,
    digest: str,
    blob_sizes: Mapping[str, int],
    image_storage: int,
    tag: str | None,
    cache: LimitsCache | None = None,
) -> None:
    """Before a manifest is recorded in `namespace/stream` (tagged `tag`): refuse it when
    it would pass a LimitRange or a ResourceQuota. Called first in the push transaction,
    so the namespace lock is taken before any blob row lock (no lock-order inversion with
    other pushes). Pushing an image the namespace already has requests no quota and is
    not measured against `image.alauda.io/Image` again (a retry must not fail).

    After the lock, a new image in a namespace whose quotas `cache` (one per process)
    knows is admitted by one UPDATE of the bound (`_admit_known`). Otherwise one read
    (`_survey`: which quota and limit objects the namespace has, its bound, whether it
    holds the image and which of the image's blobs it holds) and what the decision needs;
    the parsed objects are read again only when they changed. A request that does not fit
    under the bound is measured exactly before it is refused or admitted."""
    cache = cache if cache is not None else LimitsCache()
    lock_namespace(conn, namespace)  # also without limits: the bound must not miss this push
    known = cache.known(namespace)
    if known is not None and _admit_known(
        conn, namespace, digest, blob_sizes, image_storage, known, cache
    ):
        return
    # Ask about the image only where the objects were last seen: a namespace without them
    # pays for one cheap statement, not for the blob lookups.
    seen = _survey(conn, namespace, digest, blob_sizes, cache, image=known is not None)
    limits = cache.limits(conn, namespace, seen.fingerprint)
    if not limits:
        if seen.bound_stored:
            forget_usage(conn, [namespace])
        return
    if seen.present is None:  # the objects are new to this process: ask again, in full
        seen = _survey(conn, namespace, digest, blob_sizes, cache, image=True)
        limits = cache.limits(conn, namespace, seen.fingerprint)
    new_here = not seen.present
    for item in limits.of_type(IMAGE_LIMIT) if new_here else ():
        maximum = item.max.get(LIMIT_STORAGE)
        if maximum is not None and image_storage > maximum:
            raise LimitExceeded(
                f"refused by LimitRange {item.limit_range}: {IMAGE_LIMIT} max {LIMIT_STORAGE} "
                f"is {approx_bytes(maximum)}, image {digest} is {approx_bytes(image_storage)}"
            )
    stream_items = limits.of_type(STREAM_LIMIT)
    if stream_items:
        repo_id = _repo_id(conn, namespace, stream)
        images, tags = _stream_counts(conn, repo_id) if repo_id is not None else (set(), set())
        after = {
            LIMIT_IMAGES: len(images | {digest}),
            LIMIT_TAGS: len(tags | ({tag} if tag else set())),
        }
        before = {LIMIT_IMAGES: len(images), LIMIT_TAGS: len(tags)}
        for item in stream_items:
            for resource, maximum in sorted(item.max.items()):
                if after[resource] > before[resource] and after[resource] > maximum:
                    raise LimitExceeded(
                        f"refused by LimitRange {item.limit_range}: {STREAM_LIMIT} max "
                        f"{resource} is {maximum}, image stream {namespace}/{stream} has "
                        f"{before[resource]} and this push would make {after[resource]}"
                    )
    if not new_here:
        return  # a new tag or a re-push of an image the namespace holds adds no usage
    if not limits.quotas:
        if seen.bound_stored:
            forget_usage(conn, [namespace])
        return
    # At most what the image adds (a held blob the survey missed counts as new): admitting
    # on it under the bound is safe, and raising the bound by it keeps the bound high.
    unsure = {d: size for d, size in blob_sizes.items() if d not in seen.held}
    requested = {IMAGES: 1, STORAGE: sum(unsure.values())}
    bound = seen.bound
    if bound is None or not _fits(limits.quotas, bound, requested):
        # Decided exactly: what the image adds and what the namespace uses, from scratch.
        shared = _shared_blobs(conn, namespace, unsure)
        requested[STORAGE] = sum(size for d, size in unsure.items() if d not in shared)
        usage = namespace_usage(conn, namespace, (IMAGES, STORAGE))
        for quota in limits.quotas:
            for resource, hard in sorted(quota.hard.items()):
                want, used = requested.get(resource, 0), usage.get(resource)
                if want > 0 and used + want > hard:
                    raise QuotaExceeded(quota.name, resource, want, used, hard)
        bound = dict(usage.values)
    _write_bound(
        conn,
        namespace,
        {r: bound[r] + requested[r] for r in (IMAGES, STORAGE)},
        stored=seen.bound_stored,
    )


def _admit_known(
    conn: Connection,
    namespace: str,
    digest: str,
    blob_sizes: Mapping[str, int],
    image_storage: int,
    known: tuple[Fingerprint, NamespaceLimits],
    cache: LimitsCache,
) -> bool:
    """The common push into a namespace with quotas, in one statement (`_fast_statement`):
    True when it admitted the image under the bound with the limits this process knows
    and those are still the namespace's. False leaves the decision to the full check;
    the statement may then have raised the bound already (the limits had changed), which
    only makes the bound higher, and a refusal rolls it back with the push."""
    fingerprint, limits = known
    if not limits.quotas or limits.of_type(STREAM_LIMIT):
        return False
    image_max = [
        i.max[LIMIT_STORAGE] for i in limits.of_type(IMAGE_LIMIT) if LIMIT_STORAGE in i.max
    ]
    if image_max and image_storage > min(image_max):
        return False  # refused unless the namespace holds the image: the full check decides
    hard_images = [q.hard[IMAGES] for q in limits.quotas if IMAGES in q.hard]
    hard_storage = [q.hard[STORAGE] for q in limits.quotas if STORAGE in q.hard]
    digests = sorted(blob_sizes)
    asked = digests[: cache.max_blobs]
    params: dict[str, Any] = {
        "ns": namespace,
        "digest": digest,
        "unsure": sum(blob_sizes[d] for d in digests[cache.max_blobs :]),
        "hard_images": min(hard_images, default=0),
        "hard_storage": min(hard_storage, default=0),
    }
    for i, d in enumerate(asked):
        params[f"blob{i}"], params[f"size{i}"] = d, blob_sizes[d]
    statement = cache.fast_statement(
        bool(hard_images), bool(hard_storage), len(asked), conn.dialect.name
    )
    row = conn.execute(statement, params).first()
    return row is not None and _parse_fingerprint(row.fingerprint) == fingerprint


def _parse_fingerprint(value: str | None) -> Fingerprint:
    pairs = (item.rpartition(":") for item in (value or "").split(",") if item)
    return frozenset((uid, int(version)) for uid, _, version in pairs)


def _fits(quotas: Iterable[Quota], bound: Mapping[str, int], requested: Mapping[str, int]) -> bool:
    return all(
        requested.get(r, 0) == 0 or bound.get(r, 0) + requested[r] <= hard
        for quota in quotas
        for r, hard in quota.hard.items()
    )


def check_reference(conn: Connection, namespace: str, stream: str, digest: str, tag: str) -> None:
    """`check_push` for an image already in the registry that an API write (an
    ImageStreamTag's `tag.from`, an ImageStreamMapping, an import) adds to a stream: its
    blobs and size come from its rows."""
    sizes = {
        str(d): int(n)
        for d, n in conn.execute(
            select(manifest_blobs.c.blob_digest, manifest_blobs.c.size).where(
                manifest_blobs.c.manifest_digest == digest
            )
        )
    }
    storage = conn.execute(
        select(manifests.c.storage_size).where(manifests.c.digest == digest)
    ).scalar()
    check_push(conn, namespace, stream, digest, sizes, int(storage or 0), tag)


class UsageGuard:
    """For changes whose effect on usage is easiest to see afterwards (an undo restoring
    many images): lock the namespaces and note their usage first, then `check` refuses
    when any quota's resource grew past its limit. Usage that only shrinks, or that was
    already over a limit lowered since, is never refused."""

    def __init__(self, conn: Connection, namespaces: Iterable[str]) -> None:
        self._before: dict[str, tuple[tuple[Quota, ...], Usage]] = {}
        self._namespaces = sorted(set(namespaces))
        for namespace in self._namespaces:
            lock_namespace(conn, namespace)
            quotas = namespace_limits(conn, namespace).quotas
            if not quotas:
                continue
            self._before[namespace] = (quotas, namespace_usage(conn, namespace))

    def check(self, conn: Connection) -> None:
        forget_usage(conn, self._namespaces)  # usage grew outside `check_push`
        for namespace, (quotas, before) in self._before.items():
            after = namespace_usage(conn, namespace)
            for quota in quotas:
                for resource, hard in sorted(quota.hard.items()):
                    grown = after.get(resource) - before.get(resource)
                    if grown > 0 and after.get(resource) > hard:
                        raise QuotaExceeded(quota.name, resource, grown, before.get(resource), hard)


def usage_of(conn: Connection, namespaces: Iterable[str]) -> dict[str, Usage]:
    """Usage of several namespaces (prune reports what a run released)."""
    return {ns: namespace_usage(conn, ns) for ns in sorted(set(namespaces))}


def namespaces_with_quotas(conn: Connection, namespaces: Iterable[str]) -> set[str]:
    """Those of `namespaces` that have a ResourceQuota (one read)."""
    wanted = sorted(set(namespaces))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        query = select(objects.c.namespace).where(
            objects.c.resource == QUOTAS, objects.c.namespace.in_(wanted[start : start + 500])
        )
        found.update(conn.execute(query.distinct()).scalars())
    return found


def namespaces_holding(conn: Connection, digests: Iterable[str]) -> set[str]:
    """The namespaces whose streams link or tag any of these images."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for table in (repository_manifests, tag_events):
            query = (
                select(repositories.c.namespace)
                .join(table, table.c.repository_id == repositories.c.id)
                .where(table.c.digest.in_(chunk))
                .distinct()
            )
            found.update(conn.execute(query).scalars())
    return found


def released(before: Mapping[str, Usage], after: Mapping[str, Usage]) -> dict[str, dict[str, int]]:
    """Per namespace, the usage that went away between two measurements (nothing for a
    namespace that lost none)."""
    out: dict[str, dict[str, int]] = {}
    for namespace, old in before.items():
        new = after.get(namespace, Usage())
        freed = {r: old.get(r) - new.get(r) for r in QUOTA_RESOURCES if old.get(r) > new.get(r)}
        if freed:
            out[namespace] = freed
    return out


def run_namespaces(removed: Mapping[str, Any]) -> set[str]:
    """The namespaces a prune run's record touches (its tag events and image links)."""
    found = {str(e["namespace"]) for e in removed.get("tagEvents") or []}
    for image in removed.get("images") or []:
        found |= {str(r["namespace"]) for r in image.get("repositories") or []}
    return found
