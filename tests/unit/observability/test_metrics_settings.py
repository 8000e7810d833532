"""`metrics_listen` follows the settings conventions and refuses unusable addresses."""

from __future__ import annotations

import pytest

from imageregistry.config import ConfigurationError, load_settings


def test_from_the_environment_and_flags() -> None:
    env = {"IMAGE_REGISTRY_METRICS_LISTEN": "127.0.0.1:9100"}
    assert load_settings({}, env=env).metrics_listen == "127.0.0.1:9100"
    flags = {"metrics_listen": "0.0.0.0:9200"}
    assert load_settings(flags, env=env).metrics_listen == "0.0.0.0:9200"
    assert load_settings({}, env={}).metrics_listen == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9100", "expected HOST:PORT"),
        ("127.0.0.1:0", "expected HOST:PORT"),
        ("127.0.0.1:5000", "the port is listen's"),
        ("127.0.0.1:5001", "the port is blob_listen's"),
    ],
)
def test_bad_addresses_are_refused(value: str, message: str) -> None:
    flags = {"metrics_listen": value, "plain_http": True, "blob_listen": "127.0.0.1:5001"}
    with pytest.raises(ConfigurationError, match=message):
        load_settings(flags, env={})
