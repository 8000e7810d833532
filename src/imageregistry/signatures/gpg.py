"""Thin wrapper around the `gpg` binary (GnuPG 2.2) for verifying OpenPGP signed messages.

skopeo/containers/image "atomic" signatures are OpenPGP *signed messages* (the payload is
inside the packet stream, not detached), so verification is `gpg --decrypt`, which emits
the payload on stdout and machine-readable `[GNUPG:]` status lines (GnuPG `doc/DETAILS`,
"Format of the --status-fd output"). Every call runs in a fresh temporary GNUPGHOME holding
only the trusted public keys, with `--no-autostart` so no gpg-agent or dirmngr is spawned
(public-key operations never need one), and the directory is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imageregistry.signatures.errors import SignatureVerificationError

GPG_TIMEOUT_SECONDS = 30.0
# A simple-signing payload is a few hundred bytes; containers/image reads at most 4 MiB of
# signature (`iolimits.MaxSignatureBodySize`). gpg decompresses before it can tell whether
# the signature is good, so without a cap a small compressed message from *any* key could
# make the verifier buffer gigabytes (`--max-output`, GnuPG manual).
MAX_PAYLOAD_BYTES = 4 << 20
_STATUS_PREFIX = "[GNUPG:] "
_BASE_ARGS = ("--batch", "--no-tty", "--no-autostart", "--no-auto-key-retrieve")


@dataclass(frozen=True)
class GpgVerification:
    """A good signature: the signed payload and who made it."""

    payload: bytes
    key_id: str  # long (16 hex) key id of the primary key
    fingerprint: str  # fingerprint of the primary key
    signer_uid: str


@dataclass(frozen=True)
class GpgKey:
    """A public key found in a keyring blob."""

    key_id: str
    fingerprint: str
    uids: tuple[str, ...]


@dataclass(frozen=True)
class _Status:
    keyword: str
    args: tuple[str, ...]


@contextmanager
def _isolated_home(gpg: str) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="regsig-gpg-"))
    os.chmod(home, 0o700)
    try:
        yield home
    finally:
        # Belt and braces: nothing should have started an agent (--no-autostart), but if a
        # gpg.conf default did, do not leave it running against a deleted directory.
        gpgconf = shutil.which("gpgconf", path=str(Path(gpg).parent)) or shutil.which("gpgconf")
        if gpgconf and any(p.name.startswith("S.") for p in home.iterdir()):
            _run([gpgconf, "--kill", "all"], home, b"", check=False)
        shutil.rmtree(home, ignore_errors=True)


def _run(
    argv: Sequence[str], home: Path, stdin: bytes, *, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            env=env,
            timeout=GPG_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SignatureVerificationError(f"cannot run {argv[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SignatureVerificationError(f"{argv[0]} timed out") from exc
    if check and proc.returncode != 0:
        detail = _human_lines(proc.stderr) or f"exit status {proc.returncode}"
        raise SignatureVerificationError(f"gpg failed: {detail}")
    return proc


def _gpg_binary(gpg: str | None) -> str:
    found = gpg or shutil.which("gpg")
    if not found:
        raise SignatureVerificationError("the gpg binary is not installed")
    return found


def _import_keys(gpg: str, home: Path, keyrings: Sequence[bytes]) -> None:
    for blob in keyrings:
        proc = _run([gpg, *_BASE_ARGS, "--status-fd", "2", "--import"], home, blob, check=False)
        if not any(s.keyword == "IMPORT_OK" for s in _statuses(proc.stderr)):
            raise SignatureVerificationError(
                "the trusted key file contains no usable OpenPGP public key"
            )


# The public keyring gpg 2.2 reads in a home directory: the keybox, else the legacy file.
KEYRING_FILES = ("pubring.kbx", "pubring.gpg")


def user_home() -> Path:
    """The caller's own GnuPG home: `$GNUPGHOME`, else `~/.gnupg` (as gpg itself decides)."""
    return Path(os.environ.get("GNUPGHOME") or Path.home() / ".gnupg")


def export_keyring(home: Path, *, gpg: str | None = None) -> bytes:
    """Every public key of the GnuPG home `home` (binary OpenPGP), b"" when it has none.

    The home is only read, never handed to gpg: even a listing may create a trustdb, take
    lock files next to the keyring, migrate a legacy keyring or start an agent there. The
    keyring file gpg would read is copied into a throwaway home and exported from that."""
    source = next((home / name for name in KEYRING_FILES if (home / name).is_file()), None)
    if source is None:
        if (home / "public-keys.d").is_dir():
            raise SignatureVerificationError(
                f"the keyring in {home} is kept by keyboxd, which is not read here; export "
                "the signer's key (gpg --export KEYID > key.gpg) and pass it as a key file"
            )
        return b""
    binary = _gpg_binary(gpg)
    with _isolated_home(binary) as copy:
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise SignatureVerificationError(f"cannot read {source}: {exc.strerror}") from None
        (copy / source.name).write_bytes(data)
        proc = _run([binary, *_BASE_ARGS, "--export"], copy, b"")
    return proc.stdout


def key_ids_in(public_keys: bytes, *, gpg: str | None = None) -> list[GpgKey]:
    """List the primary keys (long id, fingerprint, user ids) in an armored/binary keyring."""
    binary = _gpg_binary(gpg)
    with _isolated_home(binary) as home:
        proc = _run([binary, *_BASE_ARGS, "--with-colons", "--show-keys"], home, public_keys)
    return _parse_colons(proc.stdout.decode("utf-8", "replace"))


def _parse_colons(text: str) -> list[GpgKey]:
    # Colon listing per GnuPG doc/DETAILS: "pub" record field 5 is the key id, the "fpr"
    # record that follows carries the fingerprint in field 10, "uid" field 10 the user id.
    keys: list[GpgKey] = []
    key_id = fpr = ""
    uids: list[str] = []
    in_primary = False
    for line in text.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            if key_id:
                keys.append(GpgKey(key_id, fpr, tuple(uids)))
            key_id, fpr, uids, in_primary = fields[4], "", [], True
        elif fields[0] == "sub":
            in_primary = False
        elif fields[0] == "fpr" and in_primary and not fpr:
            fpr = fields[9]
        elif fields[0] == "uid" and len(fields) > 9:
            uids.append(fields[9])
    if key_id:
        keys.append(GpgKey(key_id, fpr, tuple(uids)))
    return keys


def verify_signed_message(
    message: bytes, trusted_keyrings: Sequence[bytes], *, gpg: str | None = None
) -> GpgVerification:
    """Verify an OpenPGP signed message against *trusted_keyrings* and return its payload."""
    binary = _gpg_binary(gpg)
    if not trusted_keyrings:
        raise SignatureVerificationError("no trusted OpenPGP public keys were given")
    with _isolated_home(binary) as home:
        _import_keys(binary, home, trusted_keyrings)
        proc = _run(
            [
                binary,
                *_BASE_ARGS,
                "--status-fd",
                "2",
                "--max-output",
                str(MAX_PAYLOAD_BYTES),
                "--trust-model",
                "always",
                "--decrypt",
            ],
            home,
            message,
            check=False,
        )
    if b"--max-output" in proc.stderr or len(proc.stdout) > MAX_PAYLOAD_BYTES:
        raise SignatureVerificationError(
            f"signed payload is larger than {MAX_PAYLOAD_BYTES} bytes; refusing to verify it"
        )
    return _interpret(_statuses(proc.stderr), proc.returncode, proc.stdout, proc.stderr)


def _interpret(
    statuses: list[_Status], returncode: int, stdout: bytes, stderr: bytes
) -> GpgVerification:
    by_kw: dict[str, _Status] = {}
    for status in statuses:
        by_kw.setdefault(status.keyword, status)
    _reject_failures(by_kw, sum(1 for s in statuses if s.keyword == "NEWSIG"))
    good, valid = by_kw.get("GOODSIG"), by_kw.get("VALIDSIG")
    if good is None or valid is None or returncode != 0:
        detail = _human_lines(stderr) or f"gpg exit status {returncode}"
        raise SignatureVerificationError(f"signature could not be verified: {detail}")
    # VALIDSIG: <sig-key-fpr> ... <primary-key-fpr> (last field, GnuPG doc/DETAILS).
    primary = valid.args[-1] if len(valid.args) >= 10 else valid.args[0]
    return GpgVerification(
        payload=stdout,
        key_id=primary[-16:],
        fingerprint=primary,
        signer_uid=" ".join(good.args[1:]),
    )


def _reject_failures(by_kw: dict[str, _Status], signature_count: int) -> None:
    if "NODATA" in by_kw or (signature_count == 0 and "GOODSIG" not in by_kw):
        if "BEGIN_DECRYPTION" in by_kw or "ENC_TO" in by_kw:
            raise SignatureVerificationError("content is encrypted, not an OpenPGP signed message")
        raise SignatureVerificationError("content is not an OpenPGP signed message")
    if signature_count > 1:
        # containers/image accepts exactly one signature per message; so do we.
        raise SignatureVerificationError(
            f"signed message carries {signature_count} signatures, expected exactly one"
        )
    if "ENC_TO" in by_kw or "BEGIN_DECRYPTION" in by_kw:
        raise SignatureVerificationError("content is encrypted, not an OpenPGP signed message")
    if (s := by_kw.get("NO_PUBKEY")) or (s := by_kw.get("ERRSIG")):
        key = s.args[0] if s.args else "unknown"
        if s.keyword == "NO_PUBKEY" or (len(s.args) > 5 and s.args[5] == "9"):
            raise SignatureVerificationError(
                f"signed by key {key} which is not in the trusted keyring"
            )
        raise SignatureVerificationError(f"signature by key {key} could not be checked")
    messages = {
        "BADSIG": "bad signature from key {0}: the signed content was altered",
        "EXPKEYSIG": "signature made by expired key {0}",
        "REVKEYSIG": "signature made by revoked key {0}",
        "EXPSIG": "signature by key {0} has expired",
    }
    for keyword, template in messages.items():
        if (s := by_kw.get(keyword)) is not None:
            raise SignatureVerificationError(template.format(s.args[0] if s.args else "?"))


def _statuses(stderr: bytes) -> list[_Status]:
    result = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.startswith(_STATUS_PREFIX):
            parts = line[len(_STATUS_PREFIX) :].split(" ")
            result.append(_Status(parts[0], tuple(parts[1:])))
    return result


def _human_lines(stderr: bytes) -> str:
    lines = [
        line.removeprefix("gpg: ").strip()
        for line in stderr.decode("utf-8", "replace").splitlines()
        if line and not line.startswith(_STATUS_PREFIX)
    ]
    return "; ".join(lines[-3:])
