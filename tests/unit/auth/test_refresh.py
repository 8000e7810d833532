"""Refresh tokens never outlive what they were made from, nor `refresh_token_ttl_seconds`,
and the access tokens made from them never outlive the refresh token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imageregistry.auth.authn import Unauthenticated
from imageregistry.auth.identity import authenticated, service_account
from imageregistry.auth.refresh import RefreshTokens
from imageregistry.auth.tokens import (
    ServiceAccountRef,
    TokenSigner,
    generate_signing_key,
    hash_token,
)
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.tokens import RefreshTokenStore

AUDIENCE = "test-audience"
DAY = 86400


@dataclass
class Clock:
    now: datetime = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Identities:
    """htpasswd users, service accounts and opaque tokens, all in memory."""

    users: set[str] = field(default_factory=set)
    accounts: set[tuple[str, str, str]] = field(default_factory=set)
    opaque: dict[str, tuple[str, tuple[str, ...], datetime | None]] = field(default_factory=dict)

    def verify(self, username: str, password: str) -> bool:
        return username in self.users

    def has_user(self, username: str) -> bool:
        return username in self.users

    def generation(self) -> int:
        return len(self.users)

    def service_account_exists(self, namespace: str, name: str, uid: str) -> bool:
        return (namespace, name, uid) in self.accounts

    def lookup_token(
        self, token_sha256: str
    ) -> tuple[str, tuple[str, ...], datetime | None] | None:
        return self.opaque.get(token_sha256)


@dataclass
class Setup:
    refresh: RefreshTokens
    signer: TokenSigner
    clock: Clock
    ids: Identities


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    db = Database(open_engine(f"sqlite:///{tmp_path / 'registry.db'}"))
    clock, ids = Clock(), Identities()
    signer = TokenSigner(generate_signing_key(), clock=clock)
    refresh = RefreshTokens(
        RefreshTokenStore(db, clock),
        signer,
        AUDIENCE,
        tokens=ids,
        passwords=ids,
        service_accounts=ids,
        ttl_seconds=30 * DAY,
        clock=clock,
    )
    yield Setup(refresh, signer, clock, ids)
    db.dispose()


def test_an_htpasswd_refresh_token_lives_the_ttl_and_dies_with_the_user(setup: Setup) -> None:
    setup.ids.users.add("alice")
    token = setup.refresh.issue(authenticated("alice"), None, "tests")
    refreshed = setup.refresh.redeem(token)
    assert refreshed.user.username == "alice"
    access, lifetime = setup.refresh.access_token(refreshed, DAY)
    assert lifetime == DAY
    claims = setup.signer.verify(access, AUDIENCE)
    assert claims.subject == "alice" and claims.get("idp") == "htpasswd"
    setup.ids.users.discard("alice")
    with pytest.raises(Unauthenticated):
        setup.refresh.redeem(token)
    setup.ids.users.add("alice")
    setup.clock.advance(30 * DAY)
    with pytest.raises(Unauthenticated):
        setup.refresh.redeem(token)  # expired


def test_access_tokens_never_outlive_the_refresh_token(setup: Setup) -> None:
    setup.ids.users.add("alice")
    token = setup.refresh.issue(authenticated("alice"), None, "tests")
    setup.clock.advance(30 * DAY - 3600)
    access, lifetime = setup.refresh.access_token(setup.refresh.redeem(token), DAY)
    assert lifetime == 3600
    assert setup.signer.verify(access, AUDIENCE).expires_at == setup.clock.now + timedelta(
        seconds=3600
    )
    setup.clock.advance(3600 - 30)
    # Less than the 60 s distribution's spec promises any token: refused, log in again.
    with pytest.raises(Unauthenticated):
        setup.refresh.access_token(setup.refresh.redeem(token), DAY)


def test_a_refresh_token_from_a_token_expires_with_it(setup: Setup) -> None:
    opaque = "ir_login-token"
    setup.ids.opaque[hash_token(opaque)] = ("bob", ("team",), setup.clock.now + timedelta(hours=2))
    token = setup.refresh.issue(authenticated("bob", ("team",)), opaque, "tests")
    refreshed = setup.refresh.redeem(token)
    assert refreshed.user.in_group("team")
    assert setup.refresh.access_token(refreshed, DAY)[1] == 7200
    setup.clock.advance(7200)
    with pytest.raises(Unauthenticated):
        setup.refresh.redeem(token)


def test_a_service_account_refresh_token_dies_with_the_account(setup: Setup) -> None:
    setup.ids.accounts.add(("ns", "bot", "uid-1"))
    sa_token, _ = setup.signer.issue(
        "system:serviceaccount:ns:bot",
        audiences=[AUDIENCE],
        expires_in_seconds=DAY,
        service_account=ServiceAccountRef("ns", "bot", "uid-1"),
    )
    token = setup.refresh.issue(service_account("ns", "bot"), sa_token, "kubelet")
    access, _ = setup.refresh.access_token(setup.refresh.redeem(token), DAY)
    claims = setup.signer.verify(access, AUDIENCE)
    assert claims.service_account == ServiceAccountRef("ns", "bot", "uid-1")
    setup.ids.accounts = {("ns", "bot", "uid-2")}  # deleted and re-created
    with pytest.raises(Unauthenticated):
        setup.refresh.redeem(token)


def test_unknown_refresh_tokens_are_refused(setup: Setup) -> None:
    for token in ("irr_never-issued", ""):
        with pytest.raises(Unauthenticated):
            setup.refresh.redeem(token)
