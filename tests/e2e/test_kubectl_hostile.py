"""Hostile request bodies get a Status 400/413/415/422, never a 500, and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import RegistryProcess

RB_PATH = "/apis/rbac.authorization.k8s.io/v1/namespaces/hostile/rolebindings"
IS_PATH = "/apis/image.alauda.io/v1/namespaces/hostile/imagestreams"
PROTOBUF = "application/vnd.kubernetes.protobuf"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = RegistryProcess(data_dir=tmp_path_factory.mktemp("hostile") / "data").start()
    try:
        with server.client(server.admin_token) as client:
            created = client.post("/api/v1/namespaces", json={"metadata": {"name": "hostile"}})
            assert created.status_code == 201
            yield client
    finally:
        server.stop()


def _status(response: httpx.Response, code: int) -> dict[str, object]:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["code"] == code
    return dict(body)


def _nothing_stored(api: httpx.Client) -> None:
    assert api.get(RB_PATH).json()["items"] == []
    assert api.get(IS_PATH).json()["items"] == []


def _binding(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    "content",
    [
        b"k8s\x00\xff\xff\xff",
        b"k8s\x00",
        b"not protobuf at all",
        b"k8s\x00\x0a\x05\x0a\x03abc\x12\xff",
    ],
)
def test_malformed_protobuf_is_bad_request(api: httpx.Client, content: bytes) -> None:
    response = api.post(RB_PATH, content=content, headers={"Content-Type": PROTOBUF})
    _status(response, 400)
    _nothing_stored(api)


@pytest.mark.parametrize("content", [b"{", b"[1,2", b"\xff\xfe", b'"just a string"', b"[]"])
def test_malformed_json_is_bad_request(api: httpx.Client, content: bytes) -> None:
    response = api.post(RB_PATH, content=content, headers={"Content-Type": "application/json"})
    _status(response, 400)
    _nothing_stored(api)


def test_wrong_kind_is_bad_request(api: httpx.Client) -> None:
    _status(api.post(RB_PATH, json=_binding(kind="ClusterRole")), 400)
    _status(
        api.post(
            IS_PATH, json={"apiVersion": "v1", "kind": "ImageStream", "metadata": {"name": "x"}}
        ),
        400,
    )
    _nothing_stored(api)


def test_unknown_and_duplicate_fields_are_rejected_under_strict(api: httpx.Client) -> None:
    body = _status(api.post(RB_PATH + "?fieldValidation=Strict", json=_binding(bogus=1)), 400)
    assert 'unknown field "bogus"' in str(body["message"])
    raw = json.dumps(_binding())[:-1] + ', "kind": "RoleBinding"}'
    body = _status(
        api.post(RB_PATH, content=raw.encode(), headers={"Content-Type": "application/json"}), 400
    )
    assert 'duplicate field "kind"' in str(body["message"])
    _nothing_stored(api)


def test_unknown_field_warns_under_warn(api: httpx.Client) -> None:
    response = api.post(RB_PATH + "?fieldValidation=Warn&dryRun=All", json=_binding(bogus=1))
    assert response.status_code == 201
    assert response.headers["warning"] == '299 - "unknown field \\"bogus\\""'
    _nothing_stored(api)


@pytest.mark.parametrize("name", ["Bad_Name", "", "a/b", "-x"])
def test_bad_names_are_invalid(api: httpx.Client, name: str) -> None:
    code = 422
    response = api.post(
        IS_PATH,
        json={
            "apiVersion": "image.alauda.io/v1",
            "kind": "ImageStream",
            "metadata": {"name": name},
        },
    )
    _status(response, code)
    ns = api.post("/api/v1/namespaces", json={"metadata": {"name": name or "UPPER"}})
    _status(ns, 422)
    _nothing_stored(api)


def test_invalid_binding_is_unprocessable(api: httpx.Client) -> None:
    body = _status(api.post(RB_PATH, json=_binding(roleRef={"kind": "Nope", "name": ""})), 422)
    assert body["reason"] == "Invalid"
    _status(api.post(RB_PATH, json=_binding(subjects=[{"kind": "Robot", "name": "x"}])), 422)
    _status(api.post(RB_PATH, json=_binding(subjects="alice")), 422)
    _nothing_stored(api)


def test_oversized_body_is_too_large(api: httpx.Client) -> None:
    big = json.dumps(_binding(metadata={"name": "rb", "annotations": {"a": "x" * (4 << 20)}}))
    _status(
        api.post(RB_PATH, content=big.encode(), headers={"Content-Type": "application/json"}), 413
    )
    _nothing_stored(api)


def test_stale_resource_version_conflicts(api: httpx.Client) -> None:
    created = api.post(RB_PATH, json=_binding(metadata={"name": "rv"})).json()
    stale = dict(created, metadata={**created["metadata"], "resourceVersion": "1"})
    _status(api.put(f"{RB_PATH}/rv", json=stale), 409)
    fresh = api.put(f"{RB_PATH}/rv", json=dict(created, subjects=[]))
    assert fresh.status_code == 200
    assert api.delete(f"{RB_PATH}/rv").status_code == 200
    _status(api.get(f"{RB_PATH}/rv"), 404)
