"""Reading the front-proxy contract's settings from the ConfigMap
`kube-system/extension-apiserver-authentication` (auth/cluster/requestheader.py): the keys
and JSON-list values kube-apiserver writes there, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imageregistry.auth.cluster.requestheader import parse
from imageregistry.auth.requestheader import RequestHeaderConfigError
from tests.support.certs import Authority


def configmap(ca_pem: str, **extra: str) -> dict[str, Any]:
    data = {"requestheader-client-ca-file": ca_pem, **extra}
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": data}


def test_the_keys_kube_apiserver_writes_are_read(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path, "front-proxy-ca")
    parsed = parse(
        configmap(
            ca.path.read_text(),
            **{
                "requestheader-allowed-names": json.dumps(["front-proxy-client"]),
                "requestheader-username-headers": json.dumps(["X-Remote-User"]),
                "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
                "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
            },
        )
    )
    assert len(parsed.cas) == 1
    assert parsed.allowed_names == ("front-proxy-client",)
    assert parsed.username_headers == ("X-Remote-User",)
    assert parsed.group_headers == ("X-Remote-Group",)
    assert parsed.extra_headers_prefix == ("X-Remote-Extra-",)


def test_absent_or_null_lists_are_empty(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path, "front-proxy-ca")
    parsed = parse(configmap(ca.path.read_text(), **{"requestheader-allowed-names": "null"}))
    assert parsed.allowed_names == ()
    assert parsed.username_headers == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "ConfigMap"}, "has no data"),
        ({"kind": "ConfigMap", "data": {"client-ca-file": "x"}}, "no requestheader-client-ca-file"),
        (configmap("hello"), "not a PEM certificate bundle"),
    ],
)
def test_a_configmap_without_a_usable_ca_is_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestHeaderConfigError, match=message):
        parse(body)


def test_a_list_that_is_not_a_json_list_of_strings_is_refused(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path, "front-proxy-ca")
    for bad in ("front-proxy-client", '{"a": 1}', "[1]"):
        body = configmap(ca.path.read_text(), **{"requestheader-allowed-names": bad})
        with pytest.raises(RequestHeaderConfigError, match="requestheader-allowed-names"):
            parse(body)
