from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from imageregistry.auth.htpasswd import Htpasswd, HtpasswdError, HtpasswdFile


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


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_file_is_reread_when_it_changes_and_fails_closed_when_broken(tmp_path: Path) -> None:
    path, ticks = tmp_path / "htpasswd", Ticks()
    path.write_text(entry("alice", "s3cret") + "\n")
    users = HtpasswdFile(path, check_interval=1.0, monotonic=ticks)
    assert users.verify("alice", "s3cret") and not users.has_user("bob")
    path.write_text(entry("bob", "pw") + "\n")  # alice removed, bob added (new inode/size)
    assert users.has_user("alice")  # not looked at again within the interval
    ticks.now = 1.0
    assert users.verify("bob", "pw") and not users.has_user("alice")
    path.write_text("bob:{SHA}weak\n")
    ticks.now = 2.0
    assert not users.has_user("bob") and not users.verify("bob", "pw")  # broken: nobody
    path.unlink()
    ticks.now = 3.0
    assert not users.has_user("bob")
    path.write_text(entry("carol", "c") + "\n")
    ticks.now = 4.0
    assert users.verify("carol", "c")


def test_an_unusable_file_at_start_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_text("alice:plain\n")
    with pytest.raises(HtpasswdError):
        HtpasswdFile(tmp_path / "htpasswd")


def test_a_refused_login_costs_one_bcrypt_check_not_a_new_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode() + "\n")
    users = HtpasswdFile(path, check_interval=0.0)
    path.write_text("alice:{SHA}not-bcrypt\n")  # broken on a running server: fails closed
    made: list[bytes] = []
    real_hashpw = bcrypt.hashpw

    def counting_hashpw(password: bytes, salt: bytes) -> bytes:
        made.append(salt)
        return real_hashpw(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", counting_hashpw)
    for _ in range(3):
        assert not users.verify("alice", "secret")
        assert not users.verify("mallory", "secret")
    assert len(made) <= 1  # at most the first dummy hash ever made for this cost
