"""Certificates for tests, made with `cryptography`: a CA and the client certificates it
signs (like kubeadm's front-proxy CA and `front-proxy-client`), or a server certificate
for a loopback address (an object store behind TLS)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path

    @classmethod
    def create(cls, directory: Path, cn: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{cn}.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, path)

    def issue(
        self,
        cn: str,
        *,
        usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
        days: float = 1,
        ip: str | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate for `cn` with one extended key usage, valid for `days`
        (negative: expired that long ago), naming the address `ip` when given."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start = min(now, now + datetime.timedelta(days=days)) - datetime.timedelta(days=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if ip is not None:
            names = [x509.IPAddress(ipaddress.ip_address(ip))]
            cert = cert.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return cert.sign(self.key, hashes.SHA256()), key

    def server(self, directory: Path, ip: str = "127.0.0.1") -> tuple[str, str]:
        """A server certificate (cert file, key file) for the address `ip`."""
        cert, key = self.issue(ip, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip=ip)
        return self._write(directory / f"server-{ip}-by-{self.path.stem}", cert, key)

    def client(self, directory: Path, cn: str) -> tuple[str, str]:
        """A client certificate (cert file, key file) for `cn`, client auth only."""
        cert, key = self.issue(cn)
        return self._write(directory / f"{cn}-by-{self.path.stem}", cert, key)

    @staticmethod
    def _write(
        stem: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> tuple[str, str]:
        crt, pem = stem.with_suffix(".crt"), stem.with_suffix(".key")
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pem, key)
        return str(crt), str(pem)
