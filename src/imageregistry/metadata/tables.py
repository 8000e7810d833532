"""The metadata schema: typed tables for registry content, one generic table for other objects.

Registry content (repositories, blobs, manifests and the edges between them, tag history,
uploads) lives in typed tables so that `ac adm top`, prune and GC are SQL queries over
indexed columns rather than scans of serialized objects. The `image.alauda.io` objects are
rendered from these rows on read. Everything else the API server stores (namespaces,
service accounts, RBAC objects, ImagePruner) goes into `objects`: a JSON body plus the
indexed columns a list or a watch filters on.

Every write appends a row to `changes`; its autoincrement id is the database-wide
`resourceVersion` (optimistic concurrency) and the watch log, so several replicas sharing
one database agree on ordering without an in-process counter.

The schema is created by Alembic migrations (`metadata/migrations`); this module is the
single description both the migrations and the queries use.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

DIGEST = 140  # "sha512:" + 128 hex fits

changes = Table(
    "changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("resource", String(64), nullable=False),
    Column("namespace", String(253), nullable=False, default=""),
    Column("name", String(512), nullable=False),
    Column("event", String(16), nullable=False),  # ADDED, MODIFIED, DELETED
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_changes_resource", "resource", "id"),
)

objects = Table(
    "objects",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("resource", String(64), nullable=False),  # e.g. "rolebindings.rbac.authorization.k8s.io"
    Column("namespace", String(253), nullable=False, default=""),
    Column("name", String(253), nullable=False),
    Column("uid", String(36), nullable=False, unique=True),
    Column("resource_version", BigInteger, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("labels", JSON, nullable=False, default=dict),
    Column("body", JSON, nullable=False),
    UniqueConstraint("resource", "namespace", "name", name="uq_objects_key"),
    Index("ix_objects_list", "resource", "namespace", "name"),
)

repositories = Table(
    "repositories",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("uid", String(36), nullable=False, unique=True),
    Column("resource_version", BigInteger, nullable=False),
    Column("generation", BigInteger, nullable=False, default=1),
    Column("created", DateTime(timezone=True), nullable=False),
    # What users may edit: labels, annotations, spec (tags, lookupPolicy).
    Column("user_data", JSON, nullable=False, default=dict),
    UniqueConstraint("namespace", "name", name="uq_repositories_name"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(DIGEST), primary_key=True),
    Column("size", BigInteger, nullable=False),
    # "present" or "deleting" (GC flipped it; reference-creating paths refuse it).
    Column("state", String(16), nullable=False, default="present"),
    # Last time an upload, mount, link or manifest push referenced the blob; GC leaves it
    # alone until `referenced + gc_grace_seconds` (the current setting) has passed.
    Column("referenced", DateTime(timezone=True), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_blobs_state_referenced", "state", "referenced"),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column(
        "repository_id",
        BigId,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("digest", String(DIGEST), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_repository_blobs_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("digest", String(DIGEST), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),  # exact bytes as pushed
    Column("config_digest", String(DIGEST), nullable=True),
    Column("artifact_type", String(255), nullable=True),
    Column("subject_digest", String(DIGEST), nullable=True),
    Column("uid", String(36), nullable=False, unique=True),
    Column("resource_version", BigInteger, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),  # image creation (config) or push
    Column("pushed", DateTime(timezone=True), nullable=False),
    Column("last_pulled", DateTime(timezone=True), nullable=True),
    # Summary of the image config (dockerImageMetadata) computed once on push.
    Column("image_metadata", JSON, nullable=False, default=dict),
    # Unique layer bytes + config bytes (STORAGE in `ac adm top images`).
    Column("storage_size", BigInteger, nullable=False, default=0),
    Column("layer_count", Integer, nullable=False, default=0),
    Column("top_layer", String(DIGEST), nullable=True),  # top non-empty layer, for PARENTS
    # Labels, annotations and other user-editable fields of the Image object.
    Column("user_data", JSON, nullable=False, default=dict),
    Index("ix_manifests_subject", "subject_digest"),
    Index("ix_manifests_config", "config_digest"),
    Index("ix_manifests_top_layer", "top_layer"),
)

manifest_blobs = Table(
    "manifest_blobs",
    metadata,
    Column(
        "manifest_digest",
        String(DIGEST),
        ForeignKey("manifests.digest", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),  # -1 = config, 0.. = layers
    Column("blob_digest", String(DIGEST), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(255), nullable=False),
    Index("ix_manifest_blobs_blob", "blob_digest"),
)

manifest_children = Table(
    "manifest_children",
    metadata,
    Column(
        "parent_digest",
        String(DIGEST),
        ForeignKey("manifests.digest", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("child_digest", String(DIGEST), nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("os", String(64), nullable=True),
    Column("architecture", String(64), nullable=True),
    Column("variant", String(64), nullable=True),
    Index("ix_manifest_children_child", "child_digest"),
)

repository_manifests = Table(
    "repository_manifests",
    metadata,
    Column(
        "repository_id",
        BigId,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("digest", String(DIGEST), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_repository_manifests_digest", "digest"),
)

# Tag history: newest first = highest id first. items[0] of a tag is its max(id) row.
tag_events = Table(
    "tag_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "repository_id",
        BigId,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tag", String(128), nullable=False),
    Column("digest", String(DIGEST), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("generation", BigInteger, nullable=False),
    Index("ix_tag_events_repo_tag", "repository_id", "tag", "id"),
    Index("ix_tag_events_digest", "digest"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "repository_id",
        BigId,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    # Who started the session, and its staged bytes (plus the room reserved for a chunk
    # while one streams): the per-identity upload caps count these.
    Column("owner", String(253), nullable=False, server_default=""),
    Column("staged", BigInteger, nullable=False, server_default="0"),
    Index("ix_uploads_owner", "owner"),
)

signatures = Table(
    "signatures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "image_digest",
        String(DIGEST),
        ForeignKey("manifests.digest", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(512), nullable=False),  # <image>@<sig>
    Column("type", String(64), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    # conditions, imageIdentity, signedClaims, issuedBy, issuedTo
    Column("status", JSON, nullable=False, default=dict),
    # A cosign signature recorded from a pushed signature manifest lives as long as that
    # manifest stays in the repository it was pushed to (NULL: added through the API).
    Column("source_repository_id", BigId, nullable=True),
    Column("source_manifest", String(DIGEST), nullable=True),
    UniqueConstraint("name", name="uq_signatures_name"),
    UniqueConstraint("image_digest", "content_sha256", name="uq_signatures_content"),
    ForeignKeyConstraint(
        ["source_repository_id", "source_manifest"],
        ["repository_manifests.repository_id", "repository_manifests.digest"],
        ondelete="CASCADE",
        name="fk_signatures_source",
    ),
    Index("ix_signatures_source", "source_repository_id", "source_manifest"),
)

prune_runs = Table(
    "prune_runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("user", String(253), nullable=False),
    Column("options", JSON, nullable=False),
    # What was removed, enough to restore it: tag events and image rows.
    Column("removed", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # done | undone | irreversible
    Column("summary", JSON, nullable=False, default=dict),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("username", String(253), nullable=False),
    Column("groups", JSON, nullable=False, default=list),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=True),
)

# Refresh tokens of the registry token endpoint (`access_type=offline`): only the SHA-256
# is kept. What the identity came from is recorded so a refresh stops working with it:
# `idp` "htpasswd" (the user must still be in the file) and the service account
# (namespace, name, uid) of a service-account identity. `client_id` is for auditing.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("username", String(253), nullable=False),
    Column("groups", JSON, nullable=False, default=list),
    Column("idp", String(32), nullable=False, default=""),
    Column("sa_namespace", String(253), nullable=False, default=""),
    Column("sa_name", String(253), nullable=False, default=""),
    Column("sa_uid", String(64), nullable=False, default=""),
    Column("client_id", String(253), nullable=False, default=""),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Index("ix_refresh_tokens_username", "username"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
)

# Event notifications waiting for delivery, one row per (event, endpoint), written in the
# transaction of the change they report (metadata/outbox.py). `seq` orders the events of one
# repository; the sender delivers only the lowest `seq` of each (endpoint, repository).
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("endpoint", String(128), nullable=False),
    Column("repository", String(512), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # the event as JSON
    Column("created", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("endpoint", "repository", "seq", name="uq_notification_outbox_order"),
)

# The last event sequence number given out per repository; its row lock orders the
# transactions that report events of one repository (metadata/outbox.py).
notification_sequences = Table(
    "notification_sequences",
    metadata,
    Column("repository", String(512), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

# A namespace's quota admission bound (metadata/quota.py): images and bytes never below
# what the namespace uses. A cache of a derived value: deleting a row is always safe.
quota_bounds = Table(
    "quota_bounds",
    metadata,
    Column("namespace", String(253), primary_key=True),
    Column("images", BigInteger, nullable=False),
    Column("storage", BigInteger, nullable=False),
)

__all__ = [
    "blobs",
    "changes",
    "leases",
    "manifest_blobs",
    "manifest_children",
    "manifests",
    "metadata",
    "notification_outbox",
    "notification_sequences",
    "objects",
    "prune_runs",
    "quota_bounds",
    "refresh_tokens",
    "repositories",
    "repository_blobs",
    "repository_manifests",
    "settings",
    "signatures",
    "tag_events",
    "tokens",
    "uploads",
]
