"""The front-proxy contract's decisions: which chains are the front proxy's, and what the
headers say (kube's request-header authenticator: first username value, every non-empty
group, extra keys lower-cased then percent-decoded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from imageregistry.auth.requestheader import (
    CABundleFile,
    HeaderNames,
    RequestHeaderAuthenticator,
    RequestHeaderConfig,
    RequestHeaderConfigError,
    load_ca_bundle,
)
from tests.support.certs import Authority


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in pairs]


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path, "front-proxy-ca")


def authenticator(ca: Authority, allowed: tuple[str, ...] = ()) -> RequestHeaderAuthenticator:
    return RequestHeaderAuthenticator(RequestHeaderConfig((ca.cert,), allowed_names=allowed))


def test_a_chain_of_the_ca_with_an_allowed_name_is_the_proxy(ca: Authority) -> None:
    leaf, _ = ca.issue("front-proxy-client")
    auth = authenticator(ca, ("front-proxy-client",))
    user = auth.authenticate([pem(leaf)], raw(("X-Remote-User", "alice")))
    assert user is not None and user.username == "alice"
    assert user.groups == ("system:authenticated",)


def test_an_empty_allowed_list_accepts_any_name_the_ca_signed(ca: Authority) -> None:
    leaf, _ = ca.issue("anything")
    assert authenticator(ca).proxy_verified([pem(leaf)])


@pytest.mark.parametrize("case", ["other-ca", "name", "expired", "server-usage", "garbage"])
def test_other_chains_are_not_the_proxy(ca: Authority, tmp_path: Path, case: str) -> None:
    other = Authority.create(tmp_path, "other-ca")
    chain = {
        "other-ca": lambda: [pem(other.issue("front-proxy-client")[0])],
        "name": lambda: [pem(ca.issue("someone-else")[0])],
        "expired": lambda: [pem(ca.issue("front-proxy-client", days=-1)[0])],
        "server-usage": lambda: [
            pem(ca.issue("front-proxy-client", usage=ExtendedKeyUsageOID.SERVER_AUTH)[0])
        ],
        "garbage": lambda: ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
    }[case]()
    auth = authenticator(ca, ("front-proxy-client",))
    assert not auth.proxy_verified(chain)
    assert auth.authenticate(chain, raw(("X-Remote-User", "alice"))) is None


def test_no_username_header_means_not_authenticated_by_the_proxy(ca: Authority) -> None:
    leaf, _ = ca.issue("front-proxy-client")
    auth = authenticator(ca)
    assert auth.authenticate([pem(leaf)], raw(("X-Remote-Group", "g"))) is None
    assert auth.authenticate([pem(leaf)], raw(("X-Remote-User", ""))) is None


def test_header_parsing_follows_kube() -> None:
    names = HeaderNames(["X-Remote-User", "X-Other-User"], ["X-Remote-Group"], ["X-Remote-Extra-"])
    user = names.user(
        raw(
            ("X-Remote-User", ""),
            ("X-Other-User", "bob"),
            ("X-Other-User", "mallory"),
            ("X-Remote-Group", "a"),
            ("X-Remote-Group", ""),
            ("X-Remote-Group", "b"),
            ("X-Remote-Extra-Acme.com%2FProject", "p1"),
            ("X-Remote-Extra-acme.com%2fproject", "p2"),
            ("X-Remote-Extra-Bad%zz", "dropped"),
            ("X-Remote-Extra-", "no key"),
        )
    )
    assert user is not None
    assert user.username == "bob"
    assert user.groups == ("a", "b", "system:authenticated")
    assert dict(user.extra) == {"acme.com/project": ("p1", "p2")}


def test_strip_removes_every_contract_header_and_nothing_else() -> None:
    names = HeaderNames(["X-Remote-User"], ["X-Remote-Group"], ["X-Remote-Extra-"])
    headers = raw(
        ("Authorization", "Bearer t"),
        ("X-Remote-User", "alice"),
        ("x-remote-group", "g"),
        ("X-Remote-Extra-Scopes", "s"),
        ("X-Remote-Userx", "kept"),
    )
    assert names.strip(headers) == raw(("Authorization", "Bearer t"), ("X-Remote-Userx", "kept"))
    assert names.strip(raw(("Accept", "*/*"))) is None


def test_bad_ca_bundles_are_refused() -> None:
    with pytest.raises(RequestHeaderConfigError, match=r"ca\.crt: not a PEM certificate bundle"):
        load_ca_bundle(b"", "ca.crt")
    with pytest.raises(RequestHeaderConfigError, match="not a PEM certificate bundle"):
        load_ca_bundle(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "ca.crt")


def test_the_ca_file_is_re_read_when_it_changes(ca: Authority, tmp_path: Path) -> None:
    """A rotated request-header CA (a ConfigMap volume replaces the file) takes effect
    without a restart; a broken replacement leaves the bundle in use."""
    now = [0.0]
    path = tmp_path / "bundle" / "ca.crt"
    path.parent.mkdir()
    path.write_text(pem(ca.cert))
    bundle = CABundleFile(path, interval=10, monotonic=lambda: now[0])
    auth = RequestHeaderAuthenticator(RequestHeaderConfig(bundle.cas), ca_file=bundle)
    old_leaf, _ = ca.issue("front-proxy-client")
    assert auth.proxy_verified([pem(old_leaf)])
    rotated = Authority.create(tmp_path, "rotated-ca")
    new_leaf, _ = rotated.issue("front-proxy-client")
    replacement = tmp_path / "bundle" / "new.crt"
    replacement.write_text(pem(rotated.cert))
    replacement.rename(path)
    now[0] = 5  # not yet looked at again
    assert not auth.proxy_verified([pem(new_leaf)])
    now[0] = 11
    assert auth.proxy_verified([pem(new_leaf)])
    assert not auth.proxy_verified([pem(old_leaf)])  # the old CA is gone, cached or not
    assert bundle.generation == 1
    path.write_text("not a certificate")
    now[0] = 30
    assert auth.proxy_verified([pem(new_leaf)])  # the broken file changed nothing
    assert bundle.generation == 1
