"""Security review regressions: htpasswd hashes bcrypt would choke on or stall with, RBAC
escalation through `*/*`, service-account identities in JWTs without their claim, and the
loopback default listen address."""

from __future__ import annotations

import bcrypt
import pytest

from imageregistry.auth.authn import Authenticator, Unauthenticated
from imageregistry.auth.escalation import covers
from imageregistry.auth.htpasswd import Htpasswd, HtpasswdError
from imageregistry.auth.rbac import PolicyRule
from imageregistry.auth.tokens import ServiceAccountRef, TokenSigner, generate_signing_key
from imageregistry.config import load_settings

GOOD_SALT_END = "$2y$04$" + "a" * 21 + "e"


@pytest.mark.parametrize(
    ("hashed", "message"),
    [
        # Right length, but the salt's last character cannot end a 16-byte salt: bcrypt
        # raises "Invalid salt" at login, which used to be a 500 on every request.
        ("$2y$04$" + "a" * 22 + "a" * 31, "malformed"),
        ("$2y$04$" + "!" * 53, "malformed"),
        ("$2y$03$" + "a" * 21 + "e" + "a" * 31, "cost 3"),
        # Would make the unknown-user dummy check (and every start) take days.
        ("$2y$31$" + "a" * 21 + "e" + "a" * 31, "cost 31"),
    ],
)
def test_unusable_bcrypt_entries_are_refused_at_load(hashed: str, message: str) -> None:
    with pytest.raises(HtpasswdError, match=message) as info:
        Htpasswd.parse(f"alice:{hashed}", source="users")
    assert "users:1" in str(info.value)


def test_well_formed_entries_still_load_and_verify() -> None:
    users = Htpasswd.parse(
        "bob:" + GOOD_SALT_END + "a" * 31 + "\n"
        "carol:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    )
    assert not users.verify("bob", "anything")
    assert users.verify("carol", "pw")


@pytest.mark.parametrize("requested", ["imagestreams/*", "*/status"])
def test_star_slash_star_does_not_cover_wider_subresource_patterns(requested: str) -> None:
    # An owned `*/*` only matches the subresource literally named `*`; granting `res/*`
    # (every subresource of res, our extension) or `*/status` would be an escalation.
    owner = [PolicyRule(verbs=("get",), api_groups=("*",), resources=("*/*",))]
    wanted = [PolicyRule(verbs=("get",), api_groups=("",), resources=(requested,))]
    assert covers(owner, wanted)[0] is False
    assert covers(wanted, wanted)[0] is True


class _NoTokens:
    def lookup_token(self, token_sha256: str) -> tuple[str, tuple[str, ...], None] | None:
        return None


class _NoAccounts:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def service_account_exists(self, namespace: str, name: str, uid: str) -> bool:
        self.asked.append((namespace, name))
        return False


def _authn() -> tuple[Authenticator, TokenSigner, _NoAccounts]:
    signer = TokenSigner(generate_signing_key())
    accounts = _NoAccounts()
    authn = Authenticator(_NoTokens(), signer, "aud", service_accounts=accounts)
    return authn, signer, accounts


def test_service_account_subject_without_claim_is_checked_against_the_store() -> None:
    authn, signer, accounts = _authn()
    token, _ = signer.issue("system:serviceaccount:gone:bot", audiences=["aud"])
    with pytest.raises(Unauthenticated):
        authn.authenticate_token(token)
    assert accounts.asked == [("gone", "bot")]


def test_subject_must_match_the_service_account_claim() -> None:
    authn, signer, _ = _authn()
    token, _ = signer.issue(
        "system:admin",
        groups=["system:masters"],
        audiences=["aud"],
        service_account=ServiceAccountRef("team", "bot"),
    )
    with pytest.raises(Unauthenticated, match="does not match"):
        authn.authenticate_token(token)


def test_server_listens_on_loopback_by_default() -> None:
    settings = load_settings({}, env={})
    assert settings.listen.rsplit(":", 1)[0] == "127.0.0.1"
