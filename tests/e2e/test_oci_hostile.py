"""Hostile and mistaken input against the `/v2/` data plane of a real server: every answer
is a spec status with the OCI error envelope (never a 5xx, a plain-text body or a broken
connection), and nothing a refused request carried becomes visible."""

from __future__ import annotations

import json
import random
import string
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.oci_support import image_manifest, sha
from tests.support.bigbody import MIB, body_headers, memory_mib, stream
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REPO = "hostile/app"
CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"hostile layer\n" * 64
TAILS: tuple[str, ...] = (
    "/tags/list",
    "/manifests/{a}",
    "/blobs/{a}",
    "/blobs/uploads/",
    "/blobs/uploads/{a}",
)
TAILS += ("/referrers/{a}", "", "/")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    with RegistryProcess(data_dir=data, plain_http=True) as process:
        with process.client(process.admin_token) as client:
            for blob in (CONFIG, LAYER):
                r = client.post(
                    f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(blob)}, content=blob
                )
                assert r.status_code == 201, r.text
            r = client.put(
                f"/v2/{REPO}/manifests/v1",
                content=image_manifest(CONFIG, [LAYER]),
                headers={"Content-Type": OCI_MANIFEST},
            )
            assert r.status_code == 201, r.text
        yield process


@pytest.fixture()
def client(server: RegistryProcess) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as c:
        yield c


def _code(r: httpx.Response) -> str:
    """The first OCI error code; fails unless the body is the spec's error envelope."""
    assert r.headers["content-type"].startswith("application/json"), r.text
    assert int(r.headers["content-length"]) == len(r.content)
    return str(r.json()["errors"][0]["code"])


def _manifest(**changes: object) -> bytes:
    doc = json.loads(image_manifest(CONFIG, [LAYER]))
    doc.update(changes)
    return json.dumps(doc).encode()


def _put_manifest(client: httpx.Client, body: bytes, ref: str = "t") -> httpx.Response:
    return client.put(
        f"/v2/{REPO}/manifests/{ref}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )


def test_out_of_order_chunk_416_is_framed_and_the_connection_stays_usable(
    client: httpx.Client,
) -> None:
    # The 416 carries the session headers; their "Content-Length: 0" used to frame the
    # JSON body wrongly, so the next answer on this kept-alive connection was garbage.
    location = client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
    r = client.patch(location, content=b"abcd", headers={"Content-Range": "0-3"})
    assert r.status_code == 202
    for bad in ("2-5", "9-0", "bogus"):
        r = client.patch(location, content=b"wxyz", headers={"Content-Range": bad})
        assert r.status_code == 416, bad
        assert _code(r) == "BLOB_UPLOAD_INVALID"
        assert r.headers["range"] == "0-3"
        status = client.get(location)  # same connection
        assert status.status_code == 204 and status.headers["range"] == "0-3"
    r = client.put(location, params={"digest": sha(b"abcd")})
    assert r.status_code == 201


def test_tag_with_a_trailing_newline_is_refused(client: httpx.Client) -> None:
    # `$` in a regex also matches before a final "\n": "v2\n" used to become a tag.
    r = _put_manifest(client, image_manifest(CONFIG, [LAYER]), ref="v2%0A")
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID"
    tags = client.get(f"/v2/{REPO}/tags/list").json()["tags"]
    assert all("\n" not in tag for tag in tags)


def test_unknown_methods_answer_405_with_the_envelope(client: httpx.Client) -> None:
    digest = sha(LAYER)
    for method, path in (
        ("OPTIONS", f"/v2/{REPO}/manifests/v1"),
        ("PROPFIND", f"/v2/{REPO}/blobs/{digest}"),
        ("TRACE", f"/v2/{REPO}/tags/list"),
        ("DELETE", "/v2/"),
        ("PUT", "/v2/"),
        ("POST", f"/extensions/v2/{REPO}/signatures/{digest}"),
        ("OPTIONS", f"/extensions/v2/{REPO}/signatures/{digest}"),
    ):
        r = client.request(method, path)
        assert r.status_code == 405, (method, path)
        assert _code(r) == "UNSUPPORTED"
        assert "allow" in r.headers


def test_encoded_newline_in_the_name_is_name_invalid(client: httpx.Client) -> None:
    for path in (
        "/v2/hostile%0a/app/tags/list",
        "/v2/hostile/app%0A/manifests/v1",
        f"/extensions/v2/hostile%0a/app/signatures/{sha(LAYER)}",
    ):
        r = client.get(path)
        assert r.status_code == 400, path
        assert _code(r) == "NAME_INVALID"


def test_deeply_nested_manifest_is_manifest_invalid(client: httpx.Client) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        r = _put_manifest(client, body)
        assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID"


def test_deeply_nested_signature_entry_is_refused(client: httpx.Client) -> None:
    digest = sha(image_manifest(CONFIG, [LAYER]))
    r = client.put(
        f"/extensions/v2/{REPO}/signatures/{digest}", content=b"[" * 100_000 + b"]" * 100_000
    )
    assert r.status_code == 400 and _code(r) == "SIGNATURE_INVALID"


def test_deeply_nested_config_blob_still_pushes(client: httpx.Client) -> None:
    config = b"[" * 100_000 + b"]" * 100_000  # not summarised, but no reason to refuse
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(config)}, content=config)
    assert r.status_code == 201
    body = _manifest(config={"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)})
    r = _put_manifest(client, body, ref="deep-config")
    assert r.status_code == 201, r.text


def test_descriptor_size_beyond_int64_is_manifest_invalid(client: httpx.Client) -> None:
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(LAYER)}
    for size in (1 << 63, 10**30):
        r = _put_manifest(client, _manifest(layers=[{**layer, "size": size}]), ref="huge")
        assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID", size
    assert client.get(f"/v2/{REPO}/manifests/huge").status_code == 404


def test_schema_version_true_is_not_taken_for_schema1(client: httpx.Client) -> None:
    r = _put_manifest(client, _manifest(schemaVersion=True))
    assert r.status_code == 400
    assert r.json()["errors"][0]["message"] == "schemaVersion must be 2"


def _random_request(rng: random.Random, uploads: list[str]) -> tuple[str, str, dict[str, str]]:
    junk = "".join(rng.choice(string.ascii_letters + string.digits + ":.-_%") for _ in range(12))
    arg = rng.choice(
        [sha(LAYER), sha(CONFIG), "v1", "sha256:" + "0" * 64, "sha512:" + "a" * 64, junk, *uploads]
    )
    tail = rng.choice(TAILS).format(a=arg)
    name = rng.choice([REPO, "hostile/other", "Hostile/app", "a/b/c", "a%2fb/c", "ns/a..b"])
    method = rng.choice(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    if method == "DELETE" and name == REPO:
        name = "hostile/other"  # keep the image the final check pulls
    headers = {}
    if rng.random() < 0.3:
        headers["Content-Range"] = f"{rng.randint(-3, 40)}-{rng.randint(-3, 40)}"
    if rng.random() < 0.3:
        headers["Range"] = rng.choice(["bytes=0-5", "bytes=-0", "bytes=9-2", f"bytes={junk}"])
    if rng.random() < 0.3:
        headers["Content-Type"] = rng.choice([OCI_MANIFEST, "application/json", junk])
    return method, f"/v2/{name}{tail}", headers


def test_seeded_random_requests_get_spec_answers(client: httpx.Client) -> None:
    rng = random.Random(20261128)
    uploads = [client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"].rsplit("/", 1)[1]]
    bodies = [b"", b"{", b"x" * 700, _manifest(), b"[" * 5000]
    for _ in range(300):
        method, path, headers = _random_request(rng, uploads)
        params = {"digest": rng.choice([sha(b"x"), "sha256:zz", sha(LAYER)])}
        if rng.random() < 0.2:
            params["n"] = rng.choice(["0", "-1", "x", "99999999999999999999"])
        body = rng.choice(bodies) if method in ("POST", "PUT", "PATCH") else None
        r = client.request(method, path, headers=headers, params=params, content=body)
        assert r.status_code < 500, (method, path, headers, r.text)
        if r.status_code >= 400 and method != "HEAD":
            _code(r)
    # The storm left the original image intact.
    r = client.get(f"/v2/{REPO}/manifests/v1")
    assert r.status_code == 200 and r.content == image_manifest(CONFIG, [LAYER])


def test_non_string_annotations_are_refused_and_referrers_stay_decodable(
    client: httpx.Client,
) -> None:
    subject = image_manifest(CONFIG, [LAYER])
    descriptor = {"mediaType": OCI_MANIFEST, "digest": sha(subject), "size": len(subject)}
    for odd in ({"n": 1}, {"nested": {"a": "b"}}, ["x"], "x"):
        r = _put_manifest(client, _manifest(subject=descriptor, annotations=odd), ref="odd")
        assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID", odd
    r = _put_manifest(client, _manifest(subject=descriptor, annotations={"org.example": "yes"}))
    assert r.status_code == 201
    index = client.get(f"/v2/{REPO}/referrers/{sha(subject)}").json()
    annotations = [m.get("annotations", {}) for m in index["manifests"]]
    assert {"org.example": "yes"} in annotations
    assert all(isinstance(v, str) for a in annotations for v in a.values())


def test_a_junk_host_header_does_not_break_the_challenge(server: RegistryProcess) -> None:
    with server.client() as anonymous:
        for host in ('a"b', "x y", "evil/path"):
            r = anonymous.get("/v2/", headers={"Host": host})
            assert r.status_code == 401 and _code(r) == "UNAUTHORIZED"
            challenge = r.headers["www-authenticate"]
            assert challenge == (
                f'Bearer realm="http://{server.host}/v2/token",service="imageregistry"'
            ), host
        r = anonymous.get("/v2/", headers={"Host": "registry.example:5000"})
        assert 'realm="http://registry.example:5000/v2/token"' in r.headers["www-authenticate"]


def test_a_patch_cancelled_while_streaming_answers_upload_unknown(
    server: RegistryProcess, client: httpx.Client
) -> None:
    r = client.post(f"/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    first_sent, cancelled = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield b"x" * 65536
        first_sent.set()
        cancelled.wait(30)
        yield b"y" * 65536

    answers: list[httpx.Response] = []

    def stream() -> None:
        with server.client(server.admin_token) as own:
            answers.append(own.patch(location, content=body()))

    patcher = threading.Thread(target=stream)
    patcher.start()
    try:
        assert first_sent.wait(30)
        assert client.delete(location).status_code == 204
    finally:
        cancelled.set()
        patcher.join(60)
    # The client is told its data went nowhere instead of getting a 202 for it.
    assert answers[0].status_code == 404 and _code(answers[0]) == "BLOB_UPLOAD_UNKNOWN"
    assert client.get(location).status_code == 404


def test_a_descriptor_size_that_lies_about_the_blob_is_manifest_invalid(
    client: httpx.Client,
) -> None:
    manifest = json.loads(image_manifest(CONFIG, [LAYER]))
    manifest["layers"][0]["size"] = len(LAYER) * 1000
    r = client.put(
        f"/v2/{REPO}/manifests/lying-size",
        content=json.dumps(manifest).encode(),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID"
    assert str(len(LAYER)) in r.json()["errors"][0]["message"]
    assert client.get(f"/v2/{REPO}/manifests/lying-size").status_code == 404


def test_a_layer_typed_as_a_cosign_payload_must_be_one(client: httpx.Client) -> None:
    """Signature-required namespaces let cosign signature artifacts through unsigned, so a
    runnable layer must not be pushed under that media type."""
    payload = json.dumps({"critical": {"type": "cosign container image signature"}}).encode()
    r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(payload)}, content=payload)
    assert r.status_code == 201, r.text
    cosign_type = "application/vnd.dev.cosign.simplesigning.v1+json"

    def signature_manifest(layer: bytes) -> bytes:
        doc = json.loads(image_manifest(CONFIG, [layer]))
        doc["layers"][0]["mediaType"] = cosign_type
        return json.dumps(doc).encode()

    r = _put_manifest(client, signature_manifest(LAYER), "disguised")  # a tar, not JSON
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID"
    assert "simple-signing" in r.json()["errors"][0]["message"]
    assert client.get(f"/v2/{REPO}/manifests/disguised").status_code == 404
    for number in (b"NaN", b"1e999", b"9" * 5000):  # JSON that `ac verify` cannot read
        odd = b'{"critical": {"type": "cosign container image signature"}, "n": ' + number + b"}"
        r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(odd)}, content=odd)
        assert r.status_code == 201, r.text
        r = _put_manifest(client, signature_manifest(odd), "odd-sig")
        assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID", number[:10]
        assert client.get(f"/v2/{REPO}/manifests/odd-sig").status_code == 404
    assert _put_manifest(client, signature_manifest(payload), "real-sig").status_code == 201


def test_an_index_whose_child_size_lies_is_manifest_invalid(client: httpx.Client) -> None:
    """A child descriptor must state the child manifest's size (clients refuse content of
    another length); a lying index is refused and nothing of it is stored."""
    child = image_manifest(CONFIG, [LAYER])
    assert _put_manifest(client, child, sha(child)).status_code == 201

    def index(size: int) -> bytes:
        entry = {"mediaType": OCI_MANIFEST, "digest": sha(child), "size": size}
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
        return json.dumps(doc).encode()

    for size in (len(child) + 1, len(child) - 1, 0):
        r = client.put(
            f"/v2/{REPO}/manifests/lying-index",
            content=index(size),
            headers={"Content-Type": OCI_INDEX},
        )
        assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID", (size, r.text)
        assert str(len(child)) in r.json()["errors"][0]["message"]
        assert client.get(f"/v2/{REPO}/manifests/lying-index").status_code == 404
    r = client.put(
        f"/v2/{REPO}/manifests/true-index",
        content=index(len(child)),
        headers={"Content-Type": OCI_INDEX},
    )
    assert r.status_code == 201, r.text


# --- large bodies ---------------------------------------------------

BIG = 400 * MIB
BIG_BLOB = b"blob-port layer\n" * 65536  # 1 MiB: fetched through the blob port


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A server of its own (peak memory measured is this section's alone) with the blob
    port on, holding `BIG_BLOB` in REPO."""
    root = tmp_path_factory.mktemp("hostile-own")
    blob_listen = f"127.0.0.1:{free_port()}"
    process = RegistryProcess(
        data_dir=root / "data", plain_http=True, extra_args=["--blob-listen", blob_listen]
    )
    with process, process.client(process.admin_token) as client:
        r = client.post(
            f"/v2/{REPO}/blobs/uploads/", params={"digest": sha(BIG_BLOB)}, content=BIG_BLOB
        )
        assert r.status_code == 201, r.text
        yield process


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("target", ["manifest", "signature"])
def test_a_huge_body_is_refused_while_it_streams(
    own_server: RegistryProcess, target: str, declared: bool
) -> None:
    """400 MiB to a manifest PUT or the signature extension answers 413 `SIZE_INVALID`
    without the worker holding the body: a Content-Length over the limit is refused before
    reading, a chunked body as soon as it passes the limit."""
    digest = sha(b"no such image")
    path, content_type = {
        "manifest": (f"/v2/{REPO}/manifests/big", OCI_MANIFEST),
        "signature": (f"/extensions/v2/{REPO}/signatures/{digest}", "application/json"),
    }[target]
    (worker,) = own_server.worker_pids()
    before = memory_mib(worker)
    with own_server.client(own_server.admin_token, timeout=300) as client:
        r = client.put(path, content=stream(BIG), headers=body_headers(BIG, declared, content_type))
        assert r.status_code == 413 and _code(r) == "SIZE_INVALID", r.text
        assert client.get(f"/v2/{REPO}/blobs/{sha(BIG_BLOB)}").status_code == 307  # still served
        assert client.get(f"/v2/{REPO}/manifests/big").status_code == 404  # nothing stored
    grown = memory_mib(worker, "VmHWM") - before
    assert grown < 100, f"the worker's peak memory grew by {grown:.0f} MiB"


# --- numbers beyond Python's 4300-digit int() limit -------------------

HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("method", "tail", "params", "headers", "body", "status", "code"),
    [
        pytest.param(
            "GET", "/tags/list", {"n": HUGE}, {}, "", 400, "PAGINATION_NUMBER_INVALID", id="n"
        ),
        pytest.param(
            "GET", "/tags/list", {"n": "-" + HUGE}, {}, "", 400, "PAGINATION_NUMBER_INVALID",
            id="negative-n",
        ),
        pytest.param(
            "GET", "/blobs/LAYER", {}, {"Range": f"bytes={HUGE}-"}, "", 416, "RANGE_INVALID",
            id="range-start",
        ),
        pytest.param(
            "GET", "/blobs/LAYER", {}, {"Range": f"bytes=0-{HUGE}"}, "", 416, "RANGE_INVALID",
            id="range-end",
        ),
        pytest.param(
            "GET", "/blobs/LAYER", {}, {"Range": f"bytes=-{HUGE}"}, "", 416, "RANGE_INVALID",
            id="range-suffix",
        ),
        pytest.param(
            "PUT", "/manifests/huge", {}, {"Content-Type": OCI_MANIFEST},
            'MANIFEST,"x":HUGE}', 400, "MANIFEST_INVALID", id="manifest",
        ),
        pytest.param(
            "PUT", "/manifests/huge", {}, {"Content-Type": OCI_MANIFEST},
            'MANIFEST,"x":NaN}', 400, "MANIFEST_INVALID", id="manifest-NaN",
        ),
        pytest.param(
            "PUT", "/manifests/huge", {}, {"Content-Type": OCI_MANIFEST},
            'MANIFEST,"x":1e999}', 400, "MANIFEST_INVALID", id="manifest-1e999",
        ),
        pytest.param(
            "PUT", "SIGNATURES", {}, {}, '{"schemaVersion":HUGE}', 400, "SIGNATURE_INVALID",
            id="signature",
        ),
    ],
)  # fmt: skip
def test_a_5000_digit_number_gets_the_envelope(
    client: httpx.Client,
    method: str,
    tail: str,
    params: dict[str, str],
    headers: dict[str, str],
    body: str,
    status: int,
    code: str,
) -> None:
    """Every number a `/v2/` request carries is parsed within bounds: the spec's status with
    the error envelope (416 for a range, as Go's net/http answers a position beyond 64
    bits), never a 500 or a dropped connection, and nothing stored."""
    path = f"/v2/{REPO}{tail.replace('LAYER', sha(LAYER))}"
    if tail == "SIGNATURES":
        path = f"/extensions/v2/{REPO}/signatures/{sha(image_manifest(CONFIG, [LAYER]))}"
    # MANIFEST: a manifest that is valid but for the extra field that follows
    valid = image_manifest(CONFIG, [LAYER]).decode().rstrip().removesuffix("}")
    content = body.replace("MANIFEST", valid).replace("HUGE", HUGE).encode()
    r = client.request(method, path, params=params, headers=headers, content=content)
    assert r.status_code == status and _code(r) == code, r.text
    assert len(r.text) < 1000  # the number is cut, not echoed
    if code == "RANGE_INVALID":
        assert r.headers["content-range"] == f"bytes */{len(LAYER)}"
    assert client.get(f"/v2/{REPO}/manifests/huge").status_code == 404


@pytest.mark.parametrize("content_range", [f"0-{HUGE}", f"{HUGE}-{HUGE}", f"-{HUGE}-0"])
def test_a_5000_digit_content_range_is_416_and_the_session_survives(
    client: httpx.Client, content_range: str
) -> None:
    location = client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
    assert client.patch(location, content=b"abcd").status_code == 202
    r = client.patch(location, content=b"wxyz", headers={"Content-Range": content_range})
    assert r.status_code == 416 and _code(r) == "BLOB_UPLOAD_INVALID", r.text
    assert r.headers["range"] == "0-3" and len(r.text) < 1000
    assert client.put(location, params={"digest": sha(b"abcd")}).status_code == 201


@pytest.mark.parametrize("spec", [f"bytes={HUGE}-", f"bytes=0-{HUGE}", f"bytes=-{HUGE}"])
def test_a_5000_digit_range_on_the_blob_port_is_416(own_server: RegistryProcess, spec: str) -> None:
    """The blob port used to drop the connection without an answer."""
    with own_server.client(own_server.admin_token) as client:
        location = client.get(f"/v2/{REPO}/blobs/{sha(BIG_BLOB)}").headers["location"]
    with httpx.Client() as blob_port:
        r = blob_port.get(location, headers={"Range": spec})
        assert r.status_code == 416 and _code(r) == "RANGE_INVALID", r.text
        assert r.headers["content-range"] == f"bytes */{len(BIG_BLOB)}"
        whole = blob_port.get(location, headers={"Range": "bytes=-4"})  # the port still serves
        assert whole.status_code == 206 and whole.content == BIG_BLOB[-4:]
