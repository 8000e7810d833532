"""Failed password checks are throttled per source and per user; tokens sent with Basic
never reach bcrypt and are answered from the cache like Bearer tokens."""

from __future__ import annotations

import base64

import pytest

from imageregistry.auth.authn import Authenticator, TooManyFailedLogins, Unauthenticated
from imageregistry.auth.throttle import LoginThrottle
from imageregistry.auth.tokens import TokenSigner, generate_signing_key, hash_token
from tests.unit.auth.test_authn_cache import Clocks, Passwords, Tokens


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _authn(
    clocks: Clocks, passwords: Passwords, tokens: Tokens, failures: int = 3
) -> Authenticator:
    return Authenticator(
        tokens,
        TokenSigner(generate_signing_key(), clock=clocks.now),
        "aud",
        passwords=passwords,
        monotonic=clocks.monotonic,
        clock=clocks.now,
        throttle=LoginThrottle(failures, 60.0, monotonic=clocks.monotonic),
    )


def test_a_source_that_keeps_failing_is_refused_before_bcrypt_runs() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _authn(clocks, passwords, Tokens())
    for n in range(3):  # made-up users from one address: each costs a bcrypt
        with pytest.raises(Unauthenticated) as failed:
            authn.authenticate(_basic(f"nobody{n}", "guess"), source="10.0.0.9")
        assert not isinstance(failed.value, TooManyFailedLogins)
    assert passwords.verifications == 3
    with pytest.raises(TooManyFailedLogins) as throttled:
        authn.authenticate(_basic("nobody9", "guess"), source="10.0.0.9")
    assert throttled.value.retry_after == 20  # one check back per 60 s / 3
    assert passwords.verifications == 3  # refused without running bcrypt
    # Another address is not affected, and the budget comes back with time.
    assert authn.authenticate(_basic("alice", "s3cret"), source="10.0.0.10").username == "alice"
    clocks.advance(20)
    with pytest.raises(Unauthenticated) as failed:
        authn.authenticate(_basic("nobody", "guess"), source="10.0.0.9")
    assert not isinstance(failed.value, TooManyFailedLogins)


def test_a_user_under_attack_from_many_sources_is_throttled_but_keeps_remembered_logins() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _authn(clocks, passwords, Tokens())
    assert authn.authenticate(_basic("alice", "s3cret"), source="10.0.0.1").username == "alice"
    for n in range(3):
        with pytest.raises(Unauthenticated):
            authn.authenticate(_basic("alice", f"guess{n}"), source=f"192.0.2.{n}")
    with pytest.raises(TooManyFailedLogins):
        authn.authenticate(_basic("alice", "guess9"), source="192.0.2.99")
    # The check alice's client made a moment ago is remembered: no bcrypt, no throttle.
    assert authn.authenticate(_basic("alice", "s3cret"), source="10.0.0.1").username == "alice"


def test_successful_checks_do_not_spend_the_budget() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _authn(clocks, passwords, Tokens(), failures=1)
    for _ in range(5):
        clocks.advance(61)  # past the remembered check: bcrypt runs every time
        assert authn.authenticate(_basic("alice", "s3cret"), source="10.0.0.1").username == "alice"
    assert passwords.verifications == 5


def test_zero_disables_the_throttle() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _authn(clocks, passwords, Tokens(), failures=0)
    for _ in range(50):
        with pytest.raises(Unauthenticated) as failed:
            authn.authenticate(_basic("nobody", "guess"), source="10.0.0.9")
        assert not isinstance(failed.value, TooManyFailedLogins)


def test_the_throttle_table_is_bounded() -> None:
    clocks = Clocks()
    throttle = LoginThrottle(1, 60.0, size=8, monotonic=clocks.monotonic)
    for n in range(100):
        assert throttle.acquire(f"10.0.{n}.1", f"user{n}") is None
    assert throttle.acquire("10.0.99.1", "user99") is not None  # the newest are kept
    assert throttle.acquire("10.0.0.1", "user0") is None  # the oldest were evicted


def test_a_token_sent_as_a_basic_password_costs_no_bcrypt_and_is_cached() -> None:
    clocks, passwords, tokens = Clocks(), Passwords(), Tokens()
    tokens.rows[hash_token("opaque-token")] = ("bob", ("devs",), None)
    authn = _authn(clocks, passwords, tokens)
    header = _basic("anything", "opaque-token")  # `docker login -u any -p $(ac whoami -t)`
    assert authn.cached(header) is None  # not seen yet: real work needed
    assert authn.authenticate(header, source="10.0.0.1").username == "bob"
    assert passwords.verifications == 0
    assert tokens.lookups == 1
    cached = authn.cached(header)  # the pull fast path now answers it from memory
    assert cached is not None and cached.username == "bob"
    assert authn.authenticate(header, source="10.0.0.1").username == "bob"
    assert tokens.lookups == 1


def test_a_remembered_password_check_is_answered_by_cached() -> None:
    clocks, passwords = Clocks(), Passwords()
    authn = _authn(clocks, passwords, Tokens())
    assert authn.cached(_basic("alice", "s3cret")) is None
    authn.authenticate(_basic("alice", "s3cret"))
    cached = authn.cached(_basic("alice", "s3cret"))
    assert cached is not None and cached.username == "alice"
    assert authn.cached(_basic("alice", "wrong")) is None
    passwords.users.clear()  # removed from the file: no longer answered from memory
    assert authn.cached(_basic("alice", "s3cret")) is None
