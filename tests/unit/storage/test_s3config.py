"""Settings of the s3 driver: the storage_s3 block, the AWS environment, a credentials file,
and secrets that never reach a message or a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageregistry.storage.errors import ConfigurationError
from imageregistry.storage.s3config import resolve


def test_environment_fills_what_the_block_leaves_out() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-north-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
    }
    settings = resolve("images", "/team/", {"region": "us-west-2"}, env)
    assert (settings.bucket, settings.prefix, settings.where) == (
        "images",
        "team",
        "s3://images/team",
    )
    assert (settings.endpoint, settings.region) == ("http://127.0.0.1:9000", "us-west-2")
    assert (settings.access_key_id, settings.secret_access_key) == (
        "AKIAEXAMPLE",
        "very-secret-value",
    )
    assert settings.path_style  # an endpoint of its own: path-style unless told otherwise
    assert "very-secret-value" not in repr(settings)
    assert "AKIAEXAMPLE" not in repr(settings)


def test_credentials_file_wins_over_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "s3-credentials"
    secret.write_text(
        "[default]\naws_access_key_id = FROMFILE\naws_secret_access_key = file-secret\n"
        "[other]\naws_access_key_id = OTHER\naws_secret_access_key = other-secret\n"
    )
    env = {"AWS_ACCESS_KEY_ID": "FROMENV", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    settings = resolve("b", "", {"credentials_file": str(secret)}, env)
    assert (settings.access_key_id, settings.secret_access_key) == ("FROMFILE", "file-secret")
    other = resolve("b", "", {"credentials_file": str(secret), "credentials_profile": "other"}, {})
    assert other.access_key_id == "OTHER"
    assert not resolve("b", "", {}, {}).path_style  # AWS itself: virtual-hosted


def test_a_bad_credentials_file_is_refused_without_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "s3-credentials"
    secret.write_text("[default]\naws_access_key_id = ONLYKEY\n")
    with pytest.raises(ConfigurationError, match="needs aws_access_key_id and") as caught:
        resolve("b", "", {"credentials_file": str(secret)}, {})
    assert "ONLYKEY" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="cannot read"):
        resolve("b", "", {"credentials_file": str(tmp_path / "missing")}, {})
