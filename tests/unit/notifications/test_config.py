"""The `notifications:` block: distribution's endpoint fields, validated at load time, with
header values (credentials) kept out of reprs and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imageregistry.config import ConfigurationError, load_settings, settings_to_env
from imageregistry.notifications.config import (
    Endpoint,
    NotificationConfigError,
    endpoints,
    parse_duration,
)

BLOCK = """
notifications:
  endpoints:
    - name: alistener
      url: https://listener.example/event
      headers:
        Authorization: [Bearer s3cret-token]
      timeout: 500ms
      threshold: 5
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
      ignore:
        mediatypes: [application/vnd.oci.image.index.v1+json]
        actions: [pull]
    - name: backup
      disabled: true
      url: http://other.example/
"""


def test_distribution_block_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BLOCK)
    settings = load_settings({}, str(path), env={})
    (endpoint,) = endpoints(settings.notifications)
    assert endpoint.name == "alistener"
    assert endpoint.headers == (("Authorization", "Bearer s3cret-token"),)
    assert (endpoint.timeout, endpoint.threshold, endpoint.backoff) == (0.5, 5, 1.0)
    assert endpoint.ignored_media_types == {
        "application/octet-stream",
        "application/vnd.oci.image.index.v1+json",
    }
    assert not endpoint.wants("push", "application/octet-stream")
    assert not endpoint.wants("pull", "application/vnd.oci.image.manifest.v1+json")
    assert endpoint.wants("push", "application/vnd.oci.image.manifest.v1+json")
    assert endpoint.wants("delete", None)
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(endpoint)
    # Workers rebuild the settings from the environment the supervisor exports.
    again = load_settings({}, env=settings_to_env(settings))
    assert endpoints(again.notifications) == endpoints(settings.notifications)


def test_block_from_the_environment() -> None:
    block = {"endpoints": [{"name": "hook", "url": "http://127.0.0.1:9/e"}]}
    settings = load_settings({}, env={"IMAGE_REGISTRY_NOTIFICATIONS": json.dumps(block)})
    assert endpoints(settings.notifications) == (Endpoint("hook", "http://127.0.0.1:9/e"),)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"endpoints": [{"name": "a", "url": "ftp://x"}]}, "url"),
        ({"endpoints": [{"name": "a", "url": "http://x", "timeout": "soon"}]}, "timeout"),
        ({"endpoints": [{"name": "a", "url": "http://x", "ignore": {"actions": ["x"]}}]}, "x"),
        ({"endpoints": [{"name": "a", "url": "http://x", "retries": 3}]}, "retries"),
        ({"endpoints": [{"name": "a", "url": "http://x"}] * 2}, "named twice"),
        ({"endpoint": []}, "endpoint"),
    ],
)
def test_malformed_blocks_are_refused(block: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings({}, env={"IMAGE_REGISTRY_NOTIFICATIONS": json.dumps(block)})


def test_errors_never_quote_header_values() -> None:
    block = {
        "endpoints": [{"name": "a", "url": "http://x", "headers": {"X-Key": ["s3cret\nInjected"]}}]
    }
    with pytest.raises(NotificationConfigError) as caught:
        endpoints(block)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigurationError) as bad_yaml:
        load_settings({}, env={"IMAGE_REGISTRY_NOTIFICATIONS": "endpoints: [s3cret: {"})
    assert "s3cret" not in str(bad_yaml.value)


def test_go_durations() -> None:
    assert parse_duration("1h30m", "t") == 5400
    assert parse_duration("250ms", "t") == 0.25
    assert parse_duration(2, "t") == 2.0
    with pytest.raises(NotificationConfigError):
        parse_duration("0s", "t")


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    endpoint = Endpoint("a", "http://x", threshold=2, backoff=1.0, max_backoff=10.0)
    assert [endpoint.retry_delay(n) for n in range(1, 8)] == [0, 1, 2, 4, 8, 10, 10]
