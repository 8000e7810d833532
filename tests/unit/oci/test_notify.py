"""Deleting a tag or a blob sends one `delete` event naming just that tag or blob, as
distribution does (docs/operations.md#event-notifications): the production app with one
endpoint, a receiver on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from imageregistry.notifications.config import endpoints
from imageregistry.notifications.events import Source
from imageregistry.notifications.notifier import Notifier
from imageregistry.services import Services
from tests.support.receiver import Receiver
from tests.unit.oci.conftest import REPO, make_image, push_image, serve, sha

PATH = "/events"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def deletes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["target"] for e in events if e["action"] == "delete"]


def test_a_deleted_tag_and_a_deleted_blob_each_send_one_delete_event(
    services: Services, receiver: Receiver
) -> None:
    block = {"endpoints": [{"name": "test", "url": receiver.url(PATH)}]}
    notifier = Notifier(
        services.db, endpoints(block), Source.for_port(5000), "http://testserver", services.clock
    )
    image = make_image()
    layer = sha(image.layers[0])
    with serve(dataclasses.replace(services, notifier=notifier)) as client:
        push_image(client, image, "v1")
        assert client.delete(f"/v2/{REPO}/manifests/v1").status_code == 202
        assert client.delete(f"/v2/{REPO}/blobs/{layer}").status_code == 202
        events = receiver.wait_for(PATH, lambda found: len(deletes(found)) >= 2)
    assert deletes(events) == [
        {"repository": REPO, "tag": "v1"},
        {"digest": layer, "repository": REPO},
    ]
