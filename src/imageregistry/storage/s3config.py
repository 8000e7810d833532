"""Settings of the ``s3`` storage driver: the ``storage_s3:`` config block and AWS variables.

Kept apart from the driver so ``config.py`` can validate the block at load time without
importing the S3 client. Precedence per value: the ``storage_s3:`` block, then the standard
AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``), then the client
library's own chain (web-identity token file as on Kubernetes, instance metadata).
Credentials are never accepted inside the config block: only the *path* of a credentials
file (``credentials_file``, the AWS shared-credentials INI format) may be named there, and
``S3Settings.__repr__`` hides the secret so it cannot reach a log line.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from imageregistry.storage.errors import ConfigurationError

MIN_PART_SIZE = 5 << 20  # S3's minimum size of every part but the last
MAX_PART_SIZE = 5 << 30
ADDRESSING = ("auto", "path", "virtual")
SSE = ("", "AES256", "aws:kms", "aws:kms:dsse")

# Keys the block accepts (config file spelling, dashes or underscores).
_BLOCK_KEYS = {
    "endpoint",
    "region",
    "addressing",
    "tls_verify",
    "ca_bundle",
    "part_size",
    "storage_class",
    "sse",
    "sse_kms_key_id",
    "create_bucket",
    "credentials_file",
    "credentials_profile",
    "redirect",
    "presign_expiry_seconds",
    "timeout_seconds",
}
_SECRET_KEYS = {"access_key_id", "secret_access_key", "session_token", "aws_secret_access_key"}


@dataclass(frozen=True)
class S3Settings:
    """Everything the driver needs to reach one bucket (secrets hidden from ``repr``)."""

    bucket: str
    prefix: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    addressing: str = "auto"
    tls_verify: bool = True
    ca_bundle: str = ""
    # 32 MiB, as the parts of distribution's committed blobs: Swift serves a multipart
    # object segment by segment, and 8 MiB segments pulled slower than distribution's
    # (docs/benchmarks.md, "Object storage data plane: what sets each number").
    # Memory: up to one part per upload in flight.
    part_size: int = 32 << 20
    storage_class: str = ""
    sse: str = ""
    sse_kms_key_id: str = ""
    create_bucket: bool = False
    redirect: bool = True
    presign_expiry_seconds: int = 300
    # A request to the object store not finished after this long is abandoned (and
    # retried while the retry budget lasts), so a store that accepts connections but
    # does not answer costs a client a 503, not a hung request.
    timeout_seconds: int = 30
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)

    @property
    def path_style(self) -> bool:
        if self.addressing == "auto":
            return bool(self.endpoint)
        return self.addressing == "path"

    @property
    def where(self) -> str:
        """``s3://bucket/prefix`` for messages (never credentials)."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def validate_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize the ``storage_s3:`` block; unknown keys and inline secrets are errors."""
    out: dict[str, Any] = {}
    for key, value in block.items():
        name = str(key).replace("-", "_")
        if name in _SECRET_KEYS:
            raise ConfigurationError(
                f"storage_s3.{key}: credentials do not belong in the config file; use the"
                " AWS environment variables or storage_s3.credentials_file"
            )
        if name not in _BLOCK_KEYS:
            raise ConfigurationError(f"storage_s3: unknown option {key!r}")
        out[name] = _coerce(name, value)
    if out.get("addressing", "auto") not in ADDRESSING:
        raise ConfigurationError(f"storage_s3.addressing: expected one of {', '.join(ADDRESSING)}")
    if out.get("sse", "") not in SSE:
        raise ConfigurationError("storage_s3.sse: expected AES256, aws:kms or aws:kms:dsse")
    part = out.get("part_size", S3Settings.part_size)
    if not MIN_PART_SIZE <= part <= MAX_PART_SIZE:
        raise ConfigurationError(
            f"storage_s3.part_size: expected {MIN_PART_SIZE} to {MAX_PART_SIZE} bytes, got {part}"
        )
    if out.get("presign_expiry_seconds", 300) < 1 or out.get("presign_expiry_seconds", 0) > 604800:
        raise ConfigurationError("storage_s3.presign_expiry_seconds: expected 1 to 604800")
    if not 1 <= out.get("timeout_seconds", 30) <= 3600:
        raise ConfigurationError("storage_s3.timeout_seconds: expected 1 to 3600")
    return out


def _coerce(name: str, value: Any) -> Any:
    kind = (
        next(f.type for f in fields(S3Settings) if f.name == name)
        if name
        not in (
            "credentials_file",
            "credentials_profile",
        )
        else "str"
    )
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"storage_s3.{name}: expected a boolean, got {value!r}")
    if kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"storage_s3.{name}: expected an integer, got {value!r}"
            ) from None
    return str(value)


def _read_credentials_file(path: str, profile: str) -> tuple[str, str, str]:
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigurationError(
            f"storage_s3.credentials_file {path}: cannot read: {exc}"
        ) from None
    if not parser.has_section(profile):
        raise ConfigurationError(f"storage_s3.credentials_file {path}: no [{profile}] section")
    section = parser[profile]
    key, secret = section.get("aws_access_key_id", ""), section.get("aws_secret_access_key", "")
    if not key or not secret:
        raise ConfigurationError(
            f"storage_s3.credentials_file {path}: [{profile}] needs aws_access_key_id and"
            " aws_secret_access_key"
        )
    return key, secret, section.get("aws_session_token", "")


def resolve(
    bucket: str, prefix: str, block: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> S3Settings:
    """Combine the URL's bucket/prefix, the config block and the AWS environment."""
    env = os.environ if env is None else env
    values = validate_block(block)
    creds_file = values.pop("credentials_file", "")
    profile = values.pop("credentials_profile", "") or env.get("AWS_PROFILE", "default")
    values.setdefault("endpoint", env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL", ""))
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        values.setdefault("region", region)
    if creds_file:
        key, secret, token = _read_credentials_file(creds_file, profile)
    else:
        key = env.get("AWS_ACCESS_KEY_ID", "")
        secret = env.get("AWS_SECRET_ACCESS_KEY", "")
        token = env.get("AWS_SESSION_TOKEN", "")
        shared = env.get("AWS_SHARED_CREDENTIALS_FILE", "")
        if not key and shared:
            key, secret, token = _read_credentials_file(shared, profile)
    return S3Settings(
        bucket=bucket,
        prefix=prefix.strip("/"),
        access_key_id=key,
        secret_access_key=secret,
        session_token=token,
        **values,
    )
