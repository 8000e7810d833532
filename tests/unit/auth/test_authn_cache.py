"""The per-process authentication cache: deleted tokens and accounts stop working within
the TTL (at once where the deletion was served), tokens never outlive their own expiry,
and failures are never remembered."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imageregistry.auth.authn import AUTH_CACHE_SECONDS, Authenticator, Unauthenticated
from imageregistry.auth.epoch import IdentityEpoch
from imageregistry.auth.tokens import (
    ServiceAccountRef,
    TokenSigner,
    generate_signing_key,
    hash_token,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


class Clocks:
    """One fake time source for the monotonic clock and the wall clock."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return START + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


class Tokens:
    """In-memory opaque tokens with expiry; counts lookups."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, tuple[str, ...], datetime | None]] = {}
        self.lookups = 0

    def lookup_token(
        self, token_sha256: str
    ) -> tuple[str, tuple[str, ...], datetime | None] | None:
        self.lookups += 1
        return self.rows.get(token_sha256)


class Accounts:
    def __init__(self) -> None:
        self.existing = {("team", "bot")}
        self.checks = 0

    def service_account_exists(self, namespace: str, name: str, uid: str) -> bool:
        self.checks += 1
        return (namespace, name) in self.existing


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def _authn(
    clocks: Clocks, tokens: Tokens, accounts: Accounts, signer: TokenSigner
) -> Authenticator:
    return Authenticator(
        tokens,
        signer,
        "aud",
        service_accounts=accounts,
        monotonic=clocks.monotonic,
        clock=clocks.now,
    )


def _signer(clocks: Clocks) -> TokenSigner:
    return TokenSigner(generate_signing_key(), clock=clocks.now)


def test_deleted_opaque_token_stops_working_after_the_ttl(clocks: Clocks) -> None:
    tokens = Tokens()
    tokens.rows[hash_token("t1")] = ("alice", ("devs",), None)
    authn = _authn(clocks, tokens, Accounts(), _signer(clocks))
    assert authn.authenticate("Bearer t1").username == "alice"
    assert authn.authenticate("Bearer t1").username == "alice"
    assert tokens.lookups == 1  # the second request was served from the cache
    del tokens.rows[hash_token("t1")]
    clocks.advance(AUTH_CACHE_SECONDS)
    with pytest.raises(Unauthenticated):
        authn.authenticate("Bearer t1")


def test_cached_opaque_token_never_outlives_its_expiry(clocks: Clocks) -> None:
    tokens = Tokens()
    tokens.rows[hash_token("t1")] = ("alice", (), START + timedelta(seconds=1))
    authn = _authn(clocks, tokens, Accounts(), _signer(clocks))
    assert authn.authenticate("Bearer t1").username == "alice"
    tokens.rows.clear()  # the store would no longer return it once expired
    clocks.advance(1)
    with pytest.raises(Unauthenticated):
        authn.authenticate("Bearer t1")


def test_failures_are_not_cached(clocks: Clocks) -> None:
    tokens = Tokens()
    authn = _authn(clocks, tokens, Accounts(), _signer(clocks))
    with pytest.raises(Unauthenticated):
        authn.authenticate("Bearer late")
    tokens.rows[hash_token("late")] = ("bob", (), None)
    assert authn.authenticate("Bearer late").username == "bob"


def _bot_token(signer: TokenSigner) -> str:
    token, _ = signer.issue(
        "system:serviceaccount:team:bot",
        audiences=["aud"],
        service_account=ServiceAccountRef("team", "bot", "uid-1"),
    )
    return token


def test_deleted_service_account_token_stops_working_after_the_ttl(clocks: Clocks) -> None:
    signer, accounts = _signer(clocks), Accounts()
    authn = _authn(clocks, Tokens(), accounts, signer)
    token = _bot_token(signer)
    assert authn.authenticate_token(token).username == "system:serviceaccount:team:bot"
    assert authn.authenticate_token(token).username == "system:serviceaccount:team:bot"
    assert accounts.checks == 1
    accounts.existing.clear()
    clocks.advance(AUTH_CACHE_SECONDS / 2)
    authn.authenticate_token(token)  # still inside the documented window
    clocks.advance(AUTH_CACHE_SECONDS / 2)
    with pytest.raises(Unauthenticated, match="no longer exists"):
        authn.authenticate_token(token)


def test_forgetting_cached_identities_rechecks_at_once(clocks: Clocks) -> None:
    signer, accounts = _signer(clocks), Accounts()
    authn = _authn(clocks, Tokens(), accounts, signer)
    token = _bot_token(signer)
    assert authn.authenticate_token(token).username == "system:serviceaccount:team:bot"
    accounts.existing.clear()
    authn.forget_cached_identities()  # what the API does after deleting an account
    with pytest.raises(Unauthenticated):
        authn.authenticate_token(token)


def test_a_deletion_in_one_worker_empties_every_workers_cache(
    clocks: Clocks, tmp_path: Path
) -> None:
    signer, accounts = _signer(clocks), Accounts()
    epoch_file = tmp_path / "run" / "identity-epoch"

    def worker() -> Authenticator:  # what each worker process builds for one data dir
        return Authenticator(
            Tokens(),
            signer,
            "aud",
            service_accounts=accounts,
            monotonic=clocks.monotonic,
            clock=clocks.now,
            epoch=IdentityEpoch(epoch_file),
        )

    deleting, other = worker(), worker()
    token = _bot_token(signer)
    for authn in (deleting, other):
        assert authn.authenticate_token(token).username == "system:serviceaccount:team:bot"
    checks = accounts.checks
    assert other.authenticate_token(token)  # remembered: no new existence check
    assert accounts.checks == checks
    accounts.existing.clear()
    deleting.forget_cached_identities()
    with pytest.raises(Unauthenticated, match="no longer exists"):
        other.authenticate_token(token)  # long before the cache's TTL
    assert other.cached(f"Bearer {token}") is None
    accounts.existing.add(("team", "bot"))  # re-created; remembered again by the other
    assert other.authenticate_token(token)
    accounts.existing.clear()
    deleting.forget_cached_identities()  # a second bump moments later is seen too
    with pytest.raises(Unauthenticated):
        other.authenticate_token(token)


def test_cached_jwt_never_outlives_its_expiry(clocks: Clocks) -> None:
    signer = _signer(clocks)
    authn = _authn(clocks, Tokens(), Accounts(), signer)
    token, _ = signer.issue("carol", audiences=["aud"], expires_in_seconds=2)
    assert authn.authenticate_token(token).username == "carol"
    clocks.advance(2)
    with pytest.raises(Unauthenticated):
        authn.authenticate_token(token)


def test_cache_is_bounded(clocks: Clocks) -> None:
    tokens = Tokens()
    authn = Authenticator(
        tokens, _signer(clocks), "aud", monotonic=clocks.monotonic, clock=clocks.now
    )
    authn._cache.size = 2
    for name in ("a", "b", "c"):
        tokens.rows[hash_token(name)] = (name, (), None)
        authn.authenticate(f"Bearer {name}")
    tokens.rows.clear()
    assert authn.authenticate("Bearer c").username == "c"
    with pytest.raises(Unauthenticated):
        authn.authenticate("Bearer a")  # evicted, so the (now empty) store is asked


class Passwords:
    """An htpasswd stand-in that counts (slow, bcrypt) verifications."""

    def __init__(self) -> None:
        self.verifications = 0
        self.users = {"alice"}

    def verify(self, username: str, password: str) -> bool:
        self.verifications += 1
        return username in self.users and (username, password) == ("alice", "s3cret")

    def has_user(self, username: str) -> bool:
        return username in self.users

    def generation(self) -> int:
        return hash(frozenset(self.users))


def _password_authn(
    clocks: Clocks, passwords: Passwords, cache_seconds: float = AUTH_CACHE_SECONDS
) -> Authenticator:
    return Authenticator(
        Tokens(),
        TokenSigner(generate_signing_key(), clock=clocks.now),
        "aud",
        passwords=passwords,
        monotonic=clocks.monotonic,
        clock=clocks.now,
        cache_seconds=cache_seconds,
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_verified_password_is_not_rechecked_for_a_minute() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _password_authn(clocks, passwords)
    assert authn.authenticate(_basic("alice", "s3cret")).username == "alice"
    assert authn.authenticate(_basic("alice", "s3cret")).username == "alice"
    assert passwords.verifications == 1
    with pytest.raises(Unauthenticated):  # a wrong password is neither cached nor accepted
        authn.authenticate(_basic("alice", "wrong"))
    with pytest.raises(Unauthenticated):
        authn.authenticate(_basic("alice", "wrong"))
    assert passwords.verifications == 3
    clocks.advance(61)
    authn.authenticate(_basic("alice", "s3cret"))
    assert passwords.verifications == 4


def test_a_user_removed_from_the_file_loses_password_and_tokens_at_once() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _password_authn(clocks, passwords, cache_seconds=0)
    user = authn.authenticate(_basic("alice", "s3cret"))
    token, _ = authn.issue_token(user, 3600)  # what the registry token endpoint hands out
    assert authn.authenticate_token(token).username == "alice"
    passwords.users.clear()  # `htpasswd -D FILE alice`
    with pytest.raises(Unauthenticated, match="no longer in the htpasswd file"):
        authn.authenticate_token(token)
    with pytest.raises(Unauthenticated):  # the remembered password check is not trusted
        authn.authenticate(_basic("alice", "s3cret"))


def test_a_cached_token_of_a_removed_htpasswd_user_stops_at_once() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _password_authn(clocks, passwords)
    token, _ = authn.issue_token(authn.authenticate(_basic("alice", "s3cret")), 3600)
    assert authn.authenticate_token(token).username == "alice"  # now remembered
    assert authn.cached(f"Bearer {token}") is not None
    passwords.users.clear()  # the file was re-read without alice
    assert authn.cached(f"Bearer {token}") is None
    with pytest.raises(Unauthenticated, match="no longer in the htpasswd file"):
        authn.authenticate_token(token)


def test_an_epoch_that_cannot_be_written_does_not_fail_the_deletion(tmp_path: Path) -> None:
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run directory should be")
    epoch = IdentityEpoch(blocker / "identity-epoch")
    epoch.bump()  # logged, not raised
    assert not epoch.changed()


def test_a_bump_in_another_process_is_seen_without_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "identity-epoch"
    epoch = IdentityEpoch(path)
    assert not epoch.changed()
    bump = (
        "import sys; from pathlib import Path; from imageregistry.auth.epoch import IdentityEpoch;"
        " IdentityEpoch(Path(sys.argv[1])).bump()"
    )
    for _ in range(2):  # each bump is seen once
        subprocess.run([sys.executable, "-c", bump, str(path)], check=True)
        assert epoch.changed()
        assert not epoch.changed()
