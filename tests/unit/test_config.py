"""Settings precedence (defaults < file < environment < flags) and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageregistry.config import ConfigurationError, load_settings, settings_to_env


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings({}, env={})
    assert settings.listen == "127.0.0.1:5000"
    assert settings.data_dir == Path("data")
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith(
        "data/registry.db"
    )
    assert settings.server_url == "https://127.0.0.1:5000"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "registry.yaml"
    config.write_text("listen: 127.0.0.1:6000\nworkers: 3\nplain-http: true\ntls_san: [a, b]\n")
    from_file = load_settings({}, str(config), env={})
    assert (from_file.listen, from_file.workers, from_file.plain_http) == (
        "127.0.0.1:6000",
        3,
        True,
    )
    assert from_file.tls_san == ("a", "b")
    env = {"IMAGE_REGISTRY_WORKERS": "4", "IMAGE_REGISTRY_CONFIG": str(config)}
    from_env = load_settings({}, env=env)
    assert (from_env.listen, from_env.workers) == ("127.0.0.1:6000", 4)
    flagged = load_settings({"workers": 2, "listen": None}, env=env)
    assert (flagged.listen, flagged.workers) == ("127.0.0.1:6000", 2)


def test_settings_round_trip_through_the_environment() -> None:
    settings = load_settings({"tls_san": ("x", "y"), "plain_http": True}, env={})
    assert load_settings({}, env=settings_to_env(settings)) == settings


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("listn: 1\n", "unknown option 'listn'"),
        ("workers: many\n", "workers: expected an integer"),
        ("plain-http: maybe\n", "plain_http: expected a boolean"),
        ("- a\n- b\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_settings({}, str(config), env={})


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="HOST:PORT"):
        load_settings({"listen": "localhost"}, env={})
    with pytest.raises(ConfigurationError, match="at least 1"):
        load_settings({"workers": 0}, env={})
    with pytest.raises(ConfigurationError, match="cpu_affinity: expected one of auto, on, off"):
        load_settings({}, env={"IMAGE_REGISTRY_CPU_AFFINITY": "always"})
    with pytest.raises(ConfigurationError, match="log_level: expected one of critical, "):
        load_settings({"log_level": "verbose"}, env={})
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_settings({}, str(tmp_path / "missing.yaml"), env={})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"blob_listen": "127.0.0.1:5001"}, "blob_listen needs plain_http"),
        ({"blob_listen": "5001", "plain_http": True}, "blob_listen: expected HOST:PORT"),
        ({"blob_listen": "h:0", "plain_http": True}, "blob_listen: expected HOST:PORT"),
        ({"blob_listen": "h:99999", "plain_http": True}, "blob_listen: expected HOST:PORT"),
        ({"blob_listen": "0.0.0.0:5000", "plain_http": True}, "a port other than the API's"),
        ({"blob_listen": "10.1.2.3:5000", "plain_http": True}, "a port other than the API's"),
        ({"blob_public_url": "http://blobs"}, "blob_listen is not"),
        (
            {"blob_listen": ":5001", "plain_http": True, "blob_public_url": "blobs.example"},
            "blob_public_url: expected an http:// or https:// URL",
        ),
    ],
)
def test_bad_blob_port_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(values, env={})


def test_blob_port_settings_from_the_environment() -> None:
    env = {
        "IMAGE_REGISTRY_PLAIN_HTTP": "true",
        "IMAGE_REGISTRY_BLOB_LISTEN": "0.0.0.0:5001",
        "IMAGE_REGISTRY_BLOB_PUBLIC_URL": "https://blobs.example",
    }
    settings = load_settings({}, env=env)
    assert (settings.blob_listen, settings.blob_public_url) == (
        "0.0.0.0:5001",
        "https://blobs.example",
    )
    assert load_settings({}, env={}).blob_listen == ""


def test_watch_settings_from_file_and_environment(tmp_path: Path) -> None:
    defaults = load_settings({}, env={})
    assert (
        defaults.watch_max_per_user,
        defaults.watch_max_total,
        defaults.watch_history_seconds,
    ) == (100, 1000, 3600)
    config = tmp_path / "registry.yaml"
    config.write_text("watch-max-per-user: 5\nwatch_history_seconds: 0\n")
    env = {"IMAGE_REGISTRY_WATCH_MAX_TOTAL": "50"}
    settings = load_settings({}, str(config), env=env)
    assert (
        settings.watch_max_per_user,
        settings.watch_max_total,
        settings.watch_history_seconds,
    ) == (5, 50, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("watch_max_per_user", "0"), ("watch_max_total", "-1"), ("watch_history_seconds", "-5")],
)
def test_bad_watch_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        load_settings({}, env={f"IMAGE_REGISTRY_{name.upper()}": value})


def test_pull_times_flush_interval(tmp_path: Path) -> None:
    assert load_settings({}, env={}).pull_times_flush_seconds == 2
    config = tmp_path / "c.yaml"
    config.write_text("pull_times_flush_seconds: 10\n")
    assert load_settings({}, str(config), env={}).pull_times_flush_seconds == 10
    env = {"IMAGE_REGISTRY_PULL_TIMES_FLUSH_SECONDS": "30"}
    assert load_settings({}, str(config), env=env).pull_times_flush_seconds == 30
    with pytest.raises(ConfigurationError, match="pull_times_flush_seconds must be at least 1"):
        load_settings({}, env={"IMAGE_REGISTRY_PULL_TIMES_FLUSH_SECONDS": "0"})


def test_storage_s3_block_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "registry.yaml"
    config.write_text(
        "storage: s3://images/registry\n"
        "storage_s3:\n  endpoint: https://s3.example\n  part-size: 16777216\n"
        "  addressing: virtual\n  create_bucket: yes\n  credentials_file: /run/secrets/s3\n"
    )
    settings = load_settings({}, str(config), env={})
    assert settings.storage == "s3://images/registry"
    assert settings.storage_s3 == {
        "endpoint": "https://s3.example",
        "part_size": 16 << 20,
        "addressing": "virtual",
        "create_bucket": True,
        "credentials_file": "/run/secrets/s3",
    }
    # Workers receive the block through the environment and parse it back unchanged.
    again = load_settings({}, env=settings_to_env(settings))
    assert again.storage_s3 == settings.storage_s3
    from_env = load_settings({}, env={"IMAGE_REGISTRY_STORAGE_S3": '{"region": "eu-west-1"}'})
    assert from_env.storage_s3 == {"region": "eu-west-1"}


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("storage_s3:\n  secret_access_key: hunter2\n", "credentials do not belong"),
        ("storage_s3:\n  access-key-id: AKIA\n", "credentials do not belong"),
        ("storage_s3:\n  endpont: http://x\n", "unknown option 'endpont'"),
        ("storage_s3:\n  part_size: 1024\n", "part_size"),
        ("storage_s3:\n  addressing: sideways\n", "addressing"),
        ("storage_s3: [1, 2]\n", "expected a mapping"),
    ],
)
def test_bad_storage_s3_blocks_are_refused(tmp_path: Path, block: str, message: str) -> None:
    config = tmp_path / "registry.yaml"
    config.write_text(block)
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_settings({}, str(config), env={})
    assert "hunter2" not in str(caught.value)


def test_request_header_settings_from_file_environment_and_flags(tmp_path: Path) -> None:
    defaults = load_settings({}, env={})
    assert defaults.front_proxy_listen == ""
    assert defaults.requestheader_allowed_names == ()
    # kube's defaults for extension API servers
    assert defaults.requestheader_username_headers == ("X-Remote-User",)
    assert defaults.requestheader_group_headers == ("X-Remote-Group",)
    assert defaults.requestheader_extra_headers_prefix == ("X-Remote-Extra-",)
    config = tmp_path / "registry.yaml"
    config.write_text(
        "front-proxy-listen: 0.0.0.0:6443\n"
        "requestheader-client-ca-file: /etc/front-proxy/ca.crt\n"
        "requestheader-allowed-names: [front-proxy-client]\n"
        "requestheader-group-headers: [X-Remote-Group, X-Groups]\n"
    )
    from_file = load_settings({}, str(config), env={})
    assert from_file.front_proxy_listen == "0.0.0.0:6443"
    assert from_file.requestheader_client_ca_file == "/etc/front-proxy/ca.crt"
    assert from_file.requestheader_allowed_names == ("front-proxy-client",)
    assert from_file.requestheader_group_headers == ("X-Remote-Group", "X-Groups")
    env = {
        "IMAGE_REGISTRY_REQUESTHEADER_ALLOWED_NAMES": "a,b",
        "IMAGE_REGISTRY_REQUESTHEADER_USERNAME_HEADERS": "X-User",
    }
    from_env = load_settings({}, str(config), env=env)
    assert from_env.requestheader_allowed_names == ("a", "b")
    assert from_env.requestheader_username_headers == ("X-User",)
    from_flags = load_settings(
        {"requestheader_allowed_names": "c", "requestheader_extra_headers_prefix": "X-E-"},
        str(config),
        env=env,
    )
    assert from_flags.requestheader_allowed_names == ("c",)
    assert from_flags.requestheader_extra_headers_prefix == ("X-E-",)
    assert load_settings({}, env=settings_to_env(from_flags)) == from_flags


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"front_proxy_listen": "6443"}, "front_proxy_listen: expected HOST:PORT"),
        (
            {
                "front_proxy_listen": ":6443",
                "plain_http": True,
                "requestheader_client_ca_file": "x",
            },
            "front_proxy_listen needs TLS",
        ),
        ({"front_proxy_listen": ":6443"}, "needs requestheader_client_ca_file"),
        (
            {"front_proxy_listen": ":5000", "requestheader_client_ca_file": "x"},
            "the port is listen's",
        ),
        (
            {
                "front_proxy_listen": ":6443",
                "requestheader_client_ca_file": "x",
                "requestheader_username_headers": "",
            },
            "requestheader_username_headers must name at least one header",
        ),
    ],
)
def test_bad_front_proxy_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(values, env={})
