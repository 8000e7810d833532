"""Session fixtures: real GnuPG keys in a throwaway GNUPGHOME, and a signing helper."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class GpgSigner:
    """Signs with keys living in a private GNUPGHOME (like `skopeo --sign-by` does)."""

    home: Path
    fingerprint: str
    other_fingerprint: str
    expired_fingerprint: str

    def _gpg(self, *args: str, stdin: bytes = b"") -> bytes:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        return subprocess.run(
            [
                "gpg",
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *args,
            ],
            input=stdin,
            capture_output=True,
            env=env,
            check=True,
            timeout=60,
        ).stdout

    def sign(
        self, payload: bytes, *, key: str | None = None, faked_time: str | None = None
    ) -> bytes:
        """An OpenPGP signed message (not detached), uncompressed so tampering is precise."""
        extra = ["--faked-system-time", faked_time] if faked_time else []
        return self._gpg(
            *extra,
            "--compress-algo",
            "none",
            "--local-user",
            key or self.fingerprint,
            "--sign",
            stdin=payload,
        )

    def public_key(self, key: str | None = None, *, armor: bool = False) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export", key or self.fingerprint)

    def generate(self, uid: str, *, faked_time: str | None = None, expire: str = "never") -> str:
        extra = ["--faked-system-time", faked_time] if faked_time else []
        self._gpg(*extra, "--quick-gen-key", uid, "ed25519", "sign", expire)
        listing = self._gpg("--with-colons", "--list-keys", uid).decode()
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


@pytest.fixture(scope="session")
def gpg_signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgSigner]:
    assert shutil.which("gpg"), "gpg is required (./scripts/test installs gnupg)"
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    signer = GpgSigner(home, "", "", "")
    try:
        signer = GpgSigner(
            home,
            fingerprint=signer.generate("Test <t@example.com>"),
            other_fingerprint=signer.generate("Other <o@example.com>"),
            # Created in 2020 with a one-day lifetime: expired long before "now".
            expired_fingerprint=signer.generate(
                "Expired <e@example.com>", faked_time="20200101T000000", expire="1d"
            ),
        )
        yield signer
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(home)},
            check=False,
            timeout=30,
        )
