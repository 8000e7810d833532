"""Events in distribution's shapes: what each kind of target holds, the request record from
the ASGI scope, the actor, and the timestamp as Go writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from imageregistry.auth.identity import UserInfo, anonymous
from imageregistry.notifications.events import EventFactory, Source, envelope

SCOPE = {
    "type": "http",
    "method": "PUT",
    "scheme": "https",
    "client": ("10.0.0.7", 41234),
    "headers": [(b"host", b"registry.example:5000"), (b"user-agent", b"skopeo/1.9.3")],
}
NOW = datetime(2026, 12, 4, 23, 34, 34, 301576, tzinfo=UTC)
SOURCE = Source("registry-0:5000", "8aed96ae-9bca-4ea3-b385-1bafa00cc949")
DIGEST = "sha256:" + "a" * 64


def factory(user: UserInfo | None, public_url: str = "") -> EventFactory:
    return EventFactory.create(SCOPE, "req-1", user, SOURCE, public_url, NOW)


def test_a_tagged_manifest_push() -> None:
    event = factory(UserInfo("alice")).manifest(
        "push", "team/app", DIGEST, "application/vnd.oci.image.manifest.v1+json", 738, "v1"
    )
    assert json.loads(event.payload()) == {
        "id": event.id,
        "timestamp": "2026-12-04T23:34:34.301576000Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 738,
            "digest": DIGEST,
            "length": 738,
            "repository": "team/app",
            "url": f"https://registry.example:5000/v2/team/app/manifests/{DIGEST}",
            "tag": "v1",
        },
        "request": {
            "id": "req-1",
            "addr": "10.0.0.7:41234",
            "host": "registry.example:5000",
            "method": "PUT",
            "useragent": "skopeo/1.9.3",
        },
        "actor": {"name": "alice"},
        "source": {"addr": "registry-0:5000", "instanceID": SOURCE.instance_id},
    }


def test_blob_mount_and_deletes_and_the_public_url() -> None:
    events = factory(anonymous(), "https://public.example/")
    mount = events.blob("mount", "team/app", DIGEST, 10, "team/base")
    assert mount.target == {
        "mediaType": "application/octet-stream",
        "size": 10,
        "digest": DIGEST,
        "length": 10,
        "repository": "team/app",
        "fromRepository": "team/base",
        "url": f"https://public.example/v2/team/app/blobs/{DIGEST}",
    }
    assert mount.body["actor"] == {}  # anonymous, as distribution writes it
    assert events.deleted("team/app", digest=DIGEST).target == {
        "digest": DIGEST,
        "repository": "team/app",
    }
    tag = events.deleted("team/app", tag="v1")
    assert tag.target == {"repository": "team/app", "tag": "v1"} and tag.media_type is None
    assert mount.id != tag.id


def test_envelope_holds_the_events_as_given() -> None:
    one = factory(None).deleted("team/app", tag="v1")
    assert json.loads(envelope([one.payload()])) == {"events": [one.body]}
