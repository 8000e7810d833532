"""The server's own certificate authority and serving certificate.

kubectl never sends a bearer token over plain HTTP, so the server speaks TLS by default.
On first start it creates a CA (kept in the data dir) and a serving certificate signed by
it whose SANs cover 127.0.0.1, localhost, the host name and any operator-supplied names.
The CA is embedded in every kubeconfig the server writes, so clients verify it without
turning verification off. A serving certificate whose SANs no longer match the requested
set is re-issued from the same CA, so kubeconfigs already handed out stay valid.

Replicas of one registry share one CA (`CertificateAuthority`, kept in the shared
database by `bootstrap.shared_ca`): each replica has a serving certificate of its own
(its own names), all signed by that CA, so one kubeconfig verifies every replica. A
serving certificate not signed by the CA in use (the CA was rotated or adopted) is
re-issued.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imageregistry.clock import system_clock


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_entries(names: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def wanted_sans(extra: tuple[str, ...], listen_host: str) -> list[str]:
    names = ["127.0.0.1", "localhost", socket.gethostname(), *extra]
    if listen_host not in ("0.0.0.0", "::", ""):
        names.append(listen_host)
    return sorted(set(names))


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's key and certificate; `to_pem` holds the private key: a secret."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def to_pem(self) -> str:
        return (_key_pem(self.key) + self.cert_pem).decode()

    @classmethod
    def from_pem(cls, text: str) -> CertificateAuthority:
        """Parse what `to_pem` wrote (the private key, then the certificate)."""
        data = text.encode()
        key = serialization.load_pem_private_key(data, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        start = data.index(b"-----BEGIN CERTIFICATE-----")
        return cls(key, x509.load_pem_x509_certificate(data[start:]))


def new_ca() -> CertificateAuthority:
    """A fresh CA (ten years), nothing written."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imageregistry-ca")])
    now = system_clock()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


def local_ca(directory: Path) -> CertificateAuthority | None:
    """The CA kept in `directory` by a single server (or an older version), if any."""
    if not (directory / "ca.key").exists():
        return None
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key is not an EC key")
    cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    return CertificateAuthority(key, cert)


def _signed_by(path: Path, ca: CertificateAuthority) -> bool:
    try:
        x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(ca.cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def _current_sans(path: Path) -> set[str]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def ensure_tls(
    directory: Path, sans: list[str], ca: CertificateAuthority | None = None
) -> TlsFiles:
    """A serving certificate covering `sans`, signed by `ca` (by default the CA kept in
    `directory`, created there when missing); `directory/ca.crt` is `ca`'s certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "serving.crt", directory / "serving.key")
    if ca is None:
        ca = local_ca(directory)
        if ca is None:
            ca = new_ca()
            _write_private(directory / "ca.key", _key_pem(ca.key))
    if not files.ca_cert.exists() or files.ca_cert.read_bytes() != ca.cert_pem:
        files.ca_cert.write_bytes(ca.cert_pem)
    ca_key, ca_cert = ca.key, ca.cert
    if files.key.exists() and _current_sans(files.cert) >= set(sans) and _signed_by(files.cert, ca):
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    now = system_clock()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imageregistry")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(_san_entries(sans)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    files.cert.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return files
