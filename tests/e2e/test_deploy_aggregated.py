"""deploy/kubernetes/components/aggregated-api: the APIService and the pod's front-proxy port.

No kube-apiserver can run here, so the component is checked as far as is possible without
one: added to each overlay (a kustomization beside them naming the overlay and the
component, as docs/operations.md tells the reader to), it renders with the real
`kubectl kustomize`, every object validates against the Kubernetes 1.32 schemas offline
(the APIService included), and the chain the aggregator follows is wired end to end
(APIService → Service port 443 → the container port → `front_proxy_listen`, the CA volume →
`requestheader_client_ca_file`, the NetworkPolicy). Then the `single` pod runs locally with
exactly the command, arguments and environment the rendered Deployment gives it (mount
paths mapped to local directories, the CA ConfigMap filled with a request-header CA the test
makes), and the test does what the aggregator does: it verifies the port's certificate for
the Service's DNS name with the CA the docs put into `caBundle`, and asks the availability
check's discovery request and a list as a user named in `X-Remote-User` with the
front-proxy certificate.
"""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.test_deploy_manifests import (
    OVERLAYS,
    LocalPod,
    localize,
    one,
    probe,
    render,
    run_pod,
    stop,
    validate,
)
from tests.support.certs import Authority
from tests.support.postgres import free_port
from tests.support.server import BIN

COMPONENT = OVERLAYS.parent / "components" / "aggregated-api"
SERVICE_NAME = "image-registry.image-registry.svc"  # what the aggregator dials and verifies


@pytest.fixture(params=["single", "ha"])
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_component_renders_validates_and_is_wired(overlay: str) -> None:
    objects = render(overlay, "aggregated-api")
    validate(objects)
    api = one(objects, "APIService")
    assert api["metadata"]["name"] == "v1.image.alauda.io"
    assert (api["spec"]["group"], api["spec"]["version"]) == ("image.alauda.io", "v1")
    target = api["spec"]["service"]
    service = one(objects, "Service")
    assert (target["name"], target["namespace"]) == (
        service["metadata"]["name"],
        service["metadata"]["namespace"],
    )
    assert f"{target['name']}.{target['namespace']}.svc" == SERVICE_NAME
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == target["port"]]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["targetPort"] in ports and ports["registry"] == 5000
    env = {e["name"]: e.get("value") for e in container["env"]}
    listen = env["IMAGE_REGISTRY_FRONT_PROXY_LISTEN"]
    assert int(listen.rpartition(":")[2]) == ports[port["targetPort"]]
    ca_file = env["IMAGE_REGISTRY_REQUESTHEADER_CLIENT_CA_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if ca_file.startswith(m["mountPath"] + "/")]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == "image-registry-front-proxy-ca"
    assert env["IMAGE_REGISTRY_REQUESTHEADER_ALLOWED_NAMES"] == "front-proxy-client"
    policy = one(objects, "NetworkPolicy")["spec"]
    admitted = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert admitted == {"registry", port["targetPort"]}
    if overlay == "single":  # the generated serving certificate must name the Service
        config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
        assert SERVICE_NAME in config["tls_san"]


@pytest.fixture
def request_header_ca(tmp_path: Path) -> Iterator[Authority]:
    directory = tmp_path / "front-proxy-pki"
    directory.mkdir()
    yield Authority.create(directory, "front-proxy-ca")


def test_single_pod_serves_the_aggregated_api(tmp_path: Path, request_header_ca: Authority) -> None:
    objects = render("single", "aggregated-api")
    config_map = one(objects, "ConfigMap")
    pod_spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    port, front_port = free_port(), free_port()
    root = tmp_path / "pod"
    mounts = {m["mountPath"]: root / m["name"] for m in container["volumeMounts"]}
    for mount in container["volumeMounts"]:
        directory = root / mount["name"]
        directory.mkdir(parents=True)
        source = volumes[mount["name"]].get("configMap")
        if source and source["name"] == config_map["metadata"]["name"]:
            for name, data in config_map["data"].items():
                (directory / name).write_text(localize(data, mounts, port))
        elif source:  # the operator's copy of kube-system's extension-apiserver-authentication
            assert source["name"] == "image-registry-front-proxy-ca"
            shutil.copy(request_header_ca.path, directory / "ca.crt")
    env = {"PATH": os.environ["PATH"]}
    for item in container["env"]:
        value = localize(item["value"], mounts, port)
        env[item["name"]] = value.replace("0.0.0.0:6443", f"127.0.0.1:{front_port}")
    argv = [localize(a, mounts, port) for a in container["command"] + container["args"]]
    argv[0] = str(BIN / argv[0])
    probes = {
        kind: (container[kind]["httpGet"]["scheme"].lower(), container[kind]["httpGet"]["path"])
        for kind in ("readinessProbe", "livenessProbe")
    }
    pod = LocalPod(argv, env, port, mounts, probes)
    run_pod(pod, tmp_path)
    try:
        assert probe(pod, "readinessProbe").status_code == 200
        data = pod.local(yaml.safe_load(config_map["data"]["config.yaml"])["data_dir"])
        # What the docs put into the APIService's caBundle, checked as the aggregator does:
        # the port's certificate verified for the Service's DNS name.
        context = ssl.create_default_context(cafile=data / "tls" / "ca.crt")
        context.load_cert_chain(*request_header_ca.client(tmp_path, "front-proxy-client"))
        aggregator = [
            ("X-Remote-User", "system:kube-aggregator"),
            ("X-Remote-Group", "system:masters"),
        ]
        with httpx.Client(
            base_url=f"https://{SERVICE_NAME}:{front_port}",
            transport=_Loopback(context),
            timeout=30,
        ) as client:
            discovery = client.get("/apis/image.alauda.io/v1", headers=aggregator)
            assert discovery.status_code == 200, discovery.text
            reply = client.get(
                "/apis/image.alauda.io/v1/namespaces/default/imagestreams",
                headers=[("X-Remote-User", "alice"), ("X-Remote-Group", "system:masters")],
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["kind"] == "ImageStreamList"
            denied = client.get(
                "/apis/image.alauda.io/v1/namespaces/default/imagestreams",
                headers=[("X-Remote-User", "bob")],
            )
            assert denied.status_code == 403
            assert 'User "bob"' in denied.json()["message"]
    finally:
        assert stop(pod) == 0


class _Loopback(httpx.HTTPTransport):
    """Connects to 127.0.0.1 whatever the URL's host, keeping the host for TLS
    verification and SNI (the Service's DNS name does not resolve here)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(verify=context)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = request.url.host
        request.url = request.url.copy_with(host="127.0.0.1")
        return super().handle_request(request)
