"""Image API writes over HTTP in-process: `imagestreams/status`, ImageStreamTag create/update,
and watch events on imagestreamtags (the production app, SQLite, in-memory blobs, pushes
over /v2/)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from imageregistry.apiserver.api_routes import api_collaborators
from imageregistry.apiserver.catalog import build_handlers
from imageregistry.apiserver.resource import ListOptions, RequestContext
from imageregistry.apiserver.watch import WatchStream
from imageregistry.auth.identity import authenticated
from imageregistry.services import Services
from tests.unit.oci.conftest import ALICE, make_image, push_image, serve

API = "/apis/image.alauda.io/v1/namespaces/team"


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with serve(services) as c:
        yield c


def history(client: TestClient, stream: str = "app") -> dict[str, list[str]]:
    r = client.get(f"{API}/imagestreams/{stream}")
    assert r.status_code == 200, r.text
    return {t["tag"]: [i["image"] for i in t["items"]] for t in r.json()["status"]["tags"]}


def pushed(client: TestClient) -> tuple[str, str, str]:
    """latest: c, b, a (newest first); stable: a."""
    a = push_image(client, make_image("a"), "latest", "team/app")
    b = push_image(client, make_image("b"), "latest", "team/app")
    c = push_image(client, make_image("c"), "latest", "team/app")
    push_image(client, make_image("a"), "stable", "team/app")
    return a, b, c


# --- imagestreams/status ------------------------------------------------------------------


def test_status_put_drops_history_items_and_tags(client: TestClient) -> None:
    a, _b, c = pushed(client)
    stream = client.get(f"{API}/imagestreams/app/status").json()
    latest = next(t for t in stream["status"]["tags"] if t["tag"] == "latest")
    latest["items"] = [latest["items"][0], latest["items"][2]]  # drop b from the middle
    stream["status"]["tags"] = [latest]  # and the whole stable tag
    r = client.put(f"{API}/imagestreams/app/status", json=stream)
    assert r.status_code == 200, r.text
    assert history(client) == {"latest": [c, a]}
    assert int(r.json()["metadata"]["resourceVersion"]) > int(stream["metadata"]["resourceVersion"])
    # the stale resourceVersion is refused now
    assert client.put(f"{API}/imagestreams/app/status", json=stream).status_code == 409


def test_status_merge_patch_puts_a_new_current_image_on_top(client: TestClient) -> None:
    a, _b, c = pushed(client)
    patch = {"status": {"tags": [{"tag": "latest", "items": [{"image": a}, {"image": c}]}]}}
    r = client.patch(
        f"{API}/imagestreams/app/status",
        content=json.dumps(patch),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert history(client) == {"latest": [a, c]}
    manifest = client.get(
        "/v2/team/app/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.headers["Docker-Content-Digest"] == a  # pulls follow the new current item


@pytest.mark.parametrize(
    "items",
    [
        [{"image": "C"}, {"image": "A"}, {"image": "B"}],  # reorder: b is not after a
        [{"image": "C"}, {"image": "sha256:" + "0" * 64}],  # invented older history
    ],
)
def test_status_refuses_rewriting_history(client: TestClient, items: list[dict[str, str]]) -> None:
    a, b, c = pushed(client)
    names = {"A": a, "B": b, "C": c}
    body = {
        "tags": [
            {
                "tag": "latest",
                "items": [{"image": names.get(i["image"], i["image"])} for i in items],
            }
        ]
    }
    before = history(client)
    r = client.patch(
        f"{API}/imagestreams/app/status",
        content=json.dumps({"status": body}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422, r.text
    assert "status.tags[0].items" in r.text
    assert history(client) == before


def test_status_new_current_image_must_exist(client: TestClient) -> None:
    pushed(client)
    missing = "sha256:" + "1" * 64
    body = {"status": {"tags": [{"tag": "new", "items": [{"image": missing}]}]}}
    r = client.patch(
        f"{API}/imagestreams/app/status",
        content=json.dumps(body),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422 and missing in r.text
    assert "new" not in history(client)


def test_status_update_needs_the_status_permission(client: TestClient) -> None:
    pushed(client)
    stream = client.get(f"{API}/imagestreams/app/status").json()
    r = client.put(
        f"{API}/imagestreams/app/status",
        json=stream,
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert r.status_code == 403 and "imagestreams/status" in r.json()["message"]


# --- ImageStreamTag create / update -------------------------------------------------------


def istag(name: str, kind: str, source: str) -> dict[str, Any]:
    return {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStreamTag",
        "metadata": {"name": name},
        "tag": {"from": {"kind": kind, "name": source}},
    }


def test_create_istag_from_tag_image_and_docker_reference(
    client: TestClient, services: Services
) -> None:
    a, b, c = pushed(client)
    r = client.post(f"{API}/imagestreamtags", json=istag("copy:v1", "ImageStreamTag", "app:stable"))
    assert r.status_code == 201, r.text
    assert r.json()["image"]["metadata"]["name"] == a
    r = client.post(f"{API}/imagestreamtags", json=istag("copy:v2", "ImageStreamImage", f"app@{b}"))
    assert r.status_code == 201 and r.json()["image"]["metadata"]["name"] == b
    host = services.settings.registry_host
    r = client.post(
        f"{API}/imagestreamtags", json=istag("copy:v3", "DockerImage", f"{host}/team/app:latest")
    )
    assert r.status_code == 201 and r.json()["image"]["metadata"]["name"] == c
    assert history(client, "copy") == {"v1": [a], "v2": [b], "v3": [c]}
    again = client.post(
        f"{API}/imagestreamtags", json=istag("copy:v1", "ImageStreamTag", "app:latest")
    )
    assert again.status_code == 409


def test_update_istag_moves_the_tag_and_keeps_history(client: TestClient) -> None:
    a, _b, c = pushed(client)
    current = client.get(f"{API}/imagestreamtags/app:stable").json()
    current["tag"] = {"from": {"kind": "ImageStreamImage", "name": f"app@{c}"}}
    r = client.put(f"{API}/imagestreamtags/app:stable", json=current)
    assert r.status_code == 200, r.text
    assert history(client)["stable"] == [c, a]
    assert client.put(f"{API}/imagestreamtags/app:stable", json=current).status_code == 409


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (istag("copy:v1", "ImageStreamTag", "app:nope"), 404),
        (istag("copy:v1", "DockerImage", "docker.io/library/busybox:latest"), 422),
        (istag("copy:v1", "Image", "sha256:abc"), 422),
        (istag("bad name:v1", "ImageStreamTag", "app:latest"), 422),
        ({"metadata": {"name": "copy:v1"}}, 422),
    ],
)
def test_create_istag_refusals_store_nothing(
    client: TestClient, body: dict[str, Any], code: int
) -> None:
    pushed(client)
    r = client.post(f"{API}/imagestreamtags", json=body)
    assert r.status_code == code, r.text
    assert client.get(f"{API}/imagestreams/copy").status_code == 404


# --- watch on imagestreamtags ------------------------------------------------------------


def watch_events(client: TestClient, rv: str, selector: str = "") -> list[tuple[str, str, str]]:
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}
    if selector:
        params["fieldSelector"] = selector
    r = client.get(f"{API}/imagestreamtags", params=params)
    assert r.status_code == 200, r.text
    return [summary(json.loads(line)) for line in r.text.splitlines()]


def summary(event: dict[str, Any]) -> tuple[str, str, str]:
    obj = event["object"]
    image = obj.get("image", {}).get("metadata", {}).get("name", "")
    return event["type"], obj["metadata"]["name"], image


def live_events(
    services: Services, client: TestClient, during: Callable[[], None]
) -> list[tuple[str, str, str]]:
    """Watch team's imagestreamtags from "0" (replay first) and run `during` right after the
    first replayed event, when the watch has taken its starting state; stop when it ends."""
    handler = next(
        h for h in build_handlers(api_collaborators(services)) if h.info.plural == "imagestreamtags"
    )
    ctx = RequestContext(authenticated("root", ("system:masters",)), services.authz, services.clock)
    stream = WatchStream(
        services.db,
        services.changes,
        handler,
        ctx,
        "team",
        ListOptions(resource_version="0"),
        lambda o, _: o,
    )

    async def consume() -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        async with services.changes.running():
            async for line in stream.events(timeout=1.0):
                event = json.loads(line)
                if not out:
                    during()
                out.append(summary(event))
        return out

    return asyncio.run(consume())


def test_watch_istags_derives_events_from_stream_changes(
    client: TestClient, services: Services
) -> None:
    a, _b, c = pushed(client)
    made: dict[str, str] = {}

    def changes() -> None:
        made["d"] = push_image(client, make_image("d"), "latest", "team/app")  # moves latest
        made["e"] = push_image(client, make_image("e"), "edge", "team/app")  # a new tag
        assert client.delete(f"{API}/imagestreamtags/app:stable").status_code == 200

    events = live_events(services, client, changes)
    assert sorted(events[:2]) == [("ADDED", "app:latest", c), ("ADDED", "app:stable", a)]
    # the three changes may be seen in one poll (coalesced), but each shows exactly once
    assert sorted(events[2:]) == [
        ("ADDED", "app:edge", made["e"]),
        ("DELETED", "app:stable", a),
        ("MODIFIED", "app:latest", made["d"]),
    ]


def test_watch_istags_resumed_from_an_older_version(client: TestClient) -> None:
    pushed(client)
    rv = client.get(f"{API}/imagestreamtags").json()["metadata"]["resourceVersion"]
    d = push_image(client, make_image("d"), "latest", "team/app")
    events = watch_events(client, rv)
    assert ("MODIFIED", "app:latest", d) in events
    other = push_image(client, make_image("x"), "latest", "team/other")
    assert ("MODIFIED", "other:latest", other) in watch_events(client, rv)


def test_watch_istags_replays_and_filters_by_name(client: TestClient) -> None:
    pushed(client)
    events = watch_events(client, "0", "metadata.name=app:stable")
    assert [(t, n) for t, n, _ in events] == [("ADDED", "app:stable")]
