from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from imageregistry.auth.htpasswd import Htpasswd, HtpasswdError


def entry(user: str, password: str, prefix: bytes = b"$2y$") -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))
    return f"{user}:{(prefix + hashed[4:]).decode()}"


def test_verify_bcrypt_entries(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(
        "# users\n\n" + entry("alice", "s3cret") + "\n" + entry("bob", "pw", b"$2b$") + "\n"
    )
    users = Htpasswd.load(path)
    assert users.verify("alice", "s3cret")
    assert not users.verify("alice", "wrong")
    assert users.verify("bob", "pw")
    assert not users.verify("carol", "s3cret")
    assert not users.verify("bob", "s3cret")


def test_long_passwords_compare_on_first_72_bytes_like_apache() -> None:
    long = "p" * 100
    users = Htpasswd.parse(entry("alice", long[:72]))
    assert users.verify("alice", long)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice:$apr1$abc$defghijklmnopqrstuvwx", "non-bcrypt"),
        ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "non-bcrypt"),
        ("alice:abJnggxhB/yWI", "non-bcrypt"),
        ("alice", "expected 'user:hash'"),
        ("alice:$2y$04$short", "malformed"),
    ],
)
def test_rejects_unsupported_entries_with_line_number(line: str, message: str) -> None:
    with pytest.raises(HtpasswdError, match=message) as info:
        Htpasswd.parse("# header\n" + line, source="users.htpasswd")
    assert "users.htpasswd:2" in str(info.value)


def test_duplicate_user_is_an_error() -> None:
    with pytest.raises(HtpasswdError, match="twice"):
        Htpasswd.parse(entry("alice", "a") + "\n" + entry("alice", "b"))


def test_empty_file_knows_nobody() -> None:
    assert not Htpasswd.parse("").verify("alice", "x")
