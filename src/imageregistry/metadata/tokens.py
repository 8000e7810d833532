"""Opaque bearer tokens (admin bootstrap, `ac login`) and server-wide secrets.

Only a SHA-256 hash of each opaque token is stored, so a database dump does not hand
out credentials. Server secrets that every replica must share (the JWT signing key) live
in the `settings` table and are created once, race-free, on first start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from imageregistry.metadata.db import Database, as_utc, utcnow
from imageregistry.metadata.tables import objects, settings, tokens


class TokenStore:
    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
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

    def lookup_token(self, token_sha256: str) -> tuple[str, tuple[str, ...]] | None:
        found = self.lookup_token_expiry(token_sha256)
        return None if found is None else (found[0], found[1])

    def lookup_token_expiry(
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
