"""Discovery over HTTP in-process: aggregated v2 when offered (exact content type), legacy
JSON otherwise, both listing the same resources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from imageregistry.apiserver.discovery import AGGREGATED_TYPE
from tests.unit.oci.conftest import build_services, serve

KUBECTL_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    services = build_services(tmp_path)
    with serve(services) as c:
        yield c
    services.db.dispose()


def test_aggregated_discovery_of_named_groups(client: TestClient) -> None:
    r = client.get("/apis", headers={"Accept": KUBECTL_ACCEPT})
    assert r.status_code == 200 and r.headers["content-type"] == AGGREGATED_TYPE
    body = r.json()
    assert body["kind"] == "APIGroupDiscoveryList"
    assert body["apiVersion"] == "apidiscovery.k8s.io/v2"
    groups = {item["metadata"]["name"]: item for item in body["items"]}
    assert {"image.alauda.io", "rbac.authorization.k8s.io", "authorization.k8s.io"} <= set(groups)
    version = groups["image.alauda.io"]["versions"][0]
    assert version["version"] == "v1" and version["freshness"] == "Current"
    streams = next(r for r in version["resources"] if r["resource"] == "imagestreams")
    assert streams["scope"] == "Namespaced" and streams["shortNames"] == ["is"]
    assert streams["responseKind"] == {
        "group": "image.alauda.io",
        "version": "v1",
        "kind": "ImageStream",
    }
    subs = {s["subresource"]: s["verbs"] for s in streams["subresources"]}
    assert subs["layers"] == ["get"] and "update" in subs["status"]
    images = next(r for r in version["resources"] if r["resource"] == "images")
    assert images["scope"] == "Cluster"


def test_aggregated_discovery_of_the_core_group(client: TestClient) -> None:
    r = client.get("/api", headers={"Accept": KUBECTL_ACCEPT})
    assert r.headers["content-type"] == AGGREGATED_TYPE
    (core,) = r.json()["items"]
    accounts = next(
        res for res in core["versions"][0]["resources"] if res["resource"] == "serviceaccounts"
    )
    assert accounts["subresources"][0]["responseKind"]["kind"] == "TokenRequest"


def test_legacy_discovery_without_the_offer(client: TestClient) -> None:
    r = client.get("/apis", headers={"Accept": "application/json"})
    assert r.headers["content-type"] == "application/json"
    assert r.json()["kind"] == "APIGroupList"
    legacy = client.get("/apis/image.alauda.io/v1").json()
    names = {res["name"] for res in legacy["resources"]}
    aggregated = client.get("/apis", headers={"Accept": KUBECTL_ACCEPT}).json()
    image_group = next(i for i in aggregated["items"] if i["metadata"]["name"] == "image.alauda.io")
    flat = set()
    for res in image_group["versions"][0]["resources"]:
        flat.add(res["resource"])
        flat.update(f"{res['resource']}/{s['subresource']}" for s in res.get("subresources", []))
    assert flat == names
