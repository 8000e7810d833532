"""Opaque bearer tokens (admin bootstrap, `ac login`), refresh tokens and server-wide secrets.

The `tokens` and `refresh_tokens` tables keep only a SHA-256 hash of each token, so
those rows do not hand out credentials. Refresh tokens live in a table of their own: they are
accepted only by the token endpoint, never as a Bearer credential on other requests.
Server secrets that every replica must share (the token-signing key, the blob-link key,
the serving CA, the cluster-admin token: docs/operations.md, "Several replicas") live in
the `settings` table in clear, are created once, race-free, on first start, and replaced
only by `image-registry rotate-secret`. The database (and its backups) is therefore as
secret as those keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import IntegrityError

from imageregistry.clock import Clock, system_clock
from imageregistry.metadata.db import Database, as_utc
from imageregistry.metadata.tables import objects, refresh_tokens, settings, tokens

# The `settings` rows every replica shares (docs/operations.md, "Several replicas").
SIGNING_KEY = "jwt-signing-key"  # PEM, EC P-256: JWTs (service-account, /v2/token)
PREVIOUS_SIGNING_KEYS = "jwt-previous-public-keys"  # PEM public keys still accepted
BLOB_LINK_KEY = "blob-link-key"  # hex HMAC key of the blob port's links
SERVING_CA = "serving-ca"  # PEM key + certificate of the CA signing serving certificates
ADMIN_TOKEN = "admin-token"  # the cluster-admin token every admin.kubeconfig carries


class TokenStore:
    def __init__(self, db: Database, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock

    def add(
        self,
        token_sha256: str,
        username: str,
        groups: tuple[str, ...],
        expires: datetime | None = None,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                insert(tokens).values(
                    token_sha256=token_sha256,
                    username=username,
                    groups=list(groups),
                    created=self._clock(),
                    expires=expires,
                )
            )

    def lookup_token(
        self, token_sha256: str
    ) -> tuple[str, tuple[str, ...], datetime | None] | None:
        """Username, groups and expiry (None: never) of a live token, or None."""
        with self._db.read() as conn:
            row = conn.execute(
                select(tokens.c.username, tokens.c.groups, tokens.c.expires).where(
                    tokens.c.token_sha256 == token_sha256
                )
            ).first()
        if row is None:
            return None
        expires = None if row.expires is None else as_utc(row.expires)
        if expires is not None and expires <= self._clock():
            return None
        return str(row.username), tuple(str(g) for g in row.groups), expires


@dataclass(frozen=True)
class RefreshRecord:
    """What a refresh token stands for; `sa_*` are empty unless it is a service account."""

    username: str
    groups: tuple[str, ...]
    expires: datetime
    idp: str = ""
    sa_namespace: str = ""
    sa_name: str = ""
    sa_uid: str = ""
    client_id: str = ""


class RefreshTokenStore:
    def __init__(self, db: Database, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock

    def add(self, token_sha256: str, record: RefreshRecord) -> None:
        """Store a new refresh token; expired ones are dropped on the way (they are
        refused anyway, and nothing else would ever remove them)."""
        with self._db.write() as conn:
            conn.execute(delete(refresh_tokens).where(refresh_tokens.c.expires <= self._clock()))
            conn.execute(
                insert(refresh_tokens).values(
                    token_sha256=token_sha256,
                    username=record.username,
                    groups=list(record.groups),
                    idp=record.idp,
                    sa_namespace=record.sa_namespace,
                    sa_name=record.sa_name,
                    sa_uid=record.sa_uid,
                    client_id=record.client_id[:253],
                    created=self._clock(),
                    expires=record.expires,
                )
            )

    def lookup(self, token_sha256: str) -> RefreshRecord | None:
        """The record of a live refresh token, or None (unknown, revoked or expired)."""
        with self._db.read() as conn:
            row = conn.execute(
                select(refresh_tokens).where(refresh_tokens.c.token_sha256 == token_sha256)
            ).first()
        if row is None:
            return None
        expires = as_utc(row.expires)
        if expires <= self._clock():
            return None
        return RefreshRecord(
            username=str(row.username),
            groups=tuple(str(g) for g in row.groups),
            expires=expires,
            idp=str(row.idp),
            sa_namespace=str(row.sa_namespace),
            sa_name=str(row.sa_name),
            sa_uid=str(row.sa_uid),
            client_id=str(row.client_id),
        )

    def revoke(self, token_sha256: str) -> bool:
        """Forget one refresh token; True if it existed."""
        with self._db.write() as conn:
            result = conn.execute(
                delete(refresh_tokens).where(refresh_tokens.c.token_sha256 == token_sha256)
            )
        return bool(result.rowcount)


def get_or_create_secret(db: Database, key: str, make: Callable[[], str]) -> str:
    """Return the stored secret `key`, creating it with `make()` if absent (first writer wins)."""
    with db.read() as conn:
        value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    if value is not None:
        return str(value)
    try:
        with db.write() as conn:
            conn.execute(insert(settings).values(key=key, value=make()))
    except IntegrityError:
        pass
    with db.read() as conn:
        return str(conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar_one())


def count_shared_settings(db: Database) -> int:
    """How many shared settings rows there are: `/readyz` runs this as its database probe
    (a table of the schema, not `SELECT 1`: a database that lost, or never got, the migrated
    schema is as unusable as an unreachable one)."""
    with db.read() as conn:
        return int(conn.execute(text("SELECT count(*) FROM settings")).scalar_one())


def get_secret(db: Database, key: str) -> str | None:
    with db.read() as conn:
        value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    return None if value is None else str(value)


def split_pem(text: str) -> list[bytes]:
    """The PEM blocks of `text`, each as bytes (a list of keys kept in one row)."""
    end = "-----\n"
    blocks, current = [], []
    for line in text.splitlines(keepends=True):
        current.append(line)
        if line.startswith("-----END ") and line.endswith(end):
            blocks.append("".join(current).encode())
            current = []
    return blocks


@dataclass(frozen=True)
class NewToken:
    """An opaque token to record with a secret (only its hash is stored)."""

    token_sha256: str
    username: str
    groups: tuple[str, ...]


def set_secret(
    db: Database,
    key: str,
    value: str | None,
    *,
    new_token: NewToken | None = None,
    revoked_token_sha256: str | None = None,
    revoked_username: str | None = None,
) -> None:
    """Replace (or with None, remove) the shared secret `key` in one transaction, with a
    token recorded and others forgotten in the same one (the cluster-admin token): the
    one hashed `revoked_token_sha256`, or every opaque token of `revoked_username`."""
    with db.write() as conn:
        conn.execute(delete(settings).where(settings.c.key == key))
        if value is not None:
            conn.execute(insert(settings).values(key=key, value=value))
        if revoked_token_sha256:
            conn.execute(delete(tokens).where(tokens.c.token_sha256 == revoked_token_sha256))
        if revoked_username:
            conn.execute(delete(tokens).where(tokens.c.username == revoked_username))
        if new_token is not None:
            conn.execute(
                insert(tokens).values(
                    token_sha256=new_token.token_sha256,
                    username=new_token.username,
                    groups=list(new_token.groups),
                    created=system_clock(),
                    expires=None,
                )
            )


class ServiceAccountLookup:
    """Answers whether a token's service account still exists (tokens die with it)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def service_account_exists(self, namespace: str, name: str, uid: str) -> bool:
        with self._db.read() as conn:
            found = conn.execute(
                select(objects.c.uid).where(
                    objects.c.resource == "serviceaccounts",
                    objects.c.namespace == namespace,
                    objects.c.name == name,
                )
            ).scalar()
        return found is not None and (not uid or found == uid)
