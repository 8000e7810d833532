"""The server's own CA and serving certificate."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from imageregistry.pki import ensure_tls


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def test_serving_certificate_is_signed_by_the_ca_and_covers_the_names(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, ["127.0.0.1", "localhost", "registry.example"])
    assert {"127.0.0.1", "localhost", "registry.example"} <= _sans(files.cert)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert files.key.stat().st_mode & 0o077 == 0  # private key readable by owner only


def test_new_names_reissue_from_the_same_ca(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path, ["127.0.0.1"])
    ca_before = first.ca_cert.read_bytes()
    leaf_before = first.cert.read_bytes()
    assert ensure_tls(tmp_path, ["127.0.0.1"]).cert.read_bytes() == leaf_before  # reused
    again = ensure_tls(tmp_path, ["127.0.0.1", "other.example"])
    assert again.ca_cert.read_bytes() == ca_before  # kubeconfigs handed out stay valid
    assert "other.example" in _sans(again.cert)
