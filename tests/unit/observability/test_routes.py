"""Route templates never carry what a client chose (repository, tag, digest, upload id,
namespace, object name), so hostile paths cannot blow up the number of series."""

from __future__ import annotations

import pytest

from imageregistry.observability.routes import classify

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/", ("oci", "/v2/")),
        ("/v2/token", ("oci", "/v2/token")),
        ("/v2/_catalog", ("oci", "/v2/_catalog")),
        ("/v2/team/app/manifests/v1", ("oci", "/v2/{name}/manifests/{reference}")),
        (f"/v2/a/b/c/manifests/{DIGEST}", ("oci", "/v2/{name}/manifests/{reference}")),
        (f"/v2/team/app/blobs/{DIGEST}", ("oci", "/v2/{name}/blobs/{digest}")),
        ("/v2/team/app/blobs/uploads/", ("oci", "/v2/{name}/blobs/uploads/")),
        ("/v2/team/app/blobs/uploads/3f2a", ("oci", "/v2/{name}/blobs/uploads/{uuid}")),
        ("/v2/team/app/tags/list", ("oci", "/v2/{name}/tags/list")),
        (f"/v2/team/app/referrers/{DIGEST}", ("oci", "/v2/{name}/referrers/{digest}")),
        ("/v2/team/secret-name/whatever", ("oci", "other")),
        (
            f"/extensions/v2/team/app/signatures/{DIGEST}",
            ("extensions", "/extensions/v2/{name}/signatures/{digest}"),
        ),
        ("/api/v1/namespaces", ("api", "/api/v1/namespaces")),
        ("/api/v1/namespaces/team", ("api", "/api/v1/namespaces/{namespace}")),
        (
            "/apis/image.alauda.io/v1/namespaces/team/imagestreams/app",
            ("api", "/apis/{group}/v1/namespaces/{namespace}/{resource}/{name}"),
        ),
        (
            "/api/v1/namespaces/team/serviceaccounts/bot/token",
            ("api", "/api/v1/namespaces/{namespace}/{resource}/{name}/{subresource}"),
        ),
        ("/openapi/v3/apis/image.alauda.io/v1", ("api", "/openapi/v3/apis/{group}/v1")),
        ("/metrics", ("other", "/metrics")),
        ("/healthz", ("other", "/healthz")),
        ("/no/such/thing", ("other", "other")),
    ],
)
def test_templates(path: str, expected: tuple[str, str]) -> None:
    assert classify(path) == expected


def test_hostile_paths_give_a_bounded_set_of_labels() -> None:
    seen = set()
    for i in range(2000):
        name = f"ns{i}/repo{i}"
        for path in (
            f"/v2/{name}/manifests/tag{i}",
            f"/v2/{name}/blobs/uploads/{i}",
            f"/apis/group{i}/v1/namespaces/n{i}/res{i}/obj{i}/sub{i}",
            f"/api/v1/{'x/' * (i % 20)}",
            f"/x{i}",
        ):
            seen.add(classify(path))
    assert len(seen) < 40
    assert not any(str(i) in route for _, route in seen for i in (7, 99, 1999))
