"""Image references that keep images "in use" (docs/behaviour.md#ac-adm-prune-images), and matching
them to images.

This server runs no pods, so in-use references come from outside: a file with one image
reference per line (`--references-file`, `--keep-referenced-from`) and/or the workloads of a
Kubernetes cluster (`--cluster-kubeconfig`): pods and the pod templates of deployments,
statefulsets, daemonsets, replicasets, jobs and cronjobs, read with the official
`kubernetes` client. `gather_references` returns a plain set of reference strings;
`ReferenceIndex` answers which of them name a given image, by `host/ns/stream:tag` (the tag
must point at it now) or by `@digest`. `ac adm top` and `ac adm prune` share both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imageregistry.cli.ac.errors import CliError
from imageregistry.cli.ac.session import yaml_problem

_REFERENCE = re.compile(
    r"^(?:(?P<host>[^/]+\.[^/]*|[^/]+:\d+|localhost)/)?"
    r"(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[a-fA-F0-9]{32,}))?$"
)


@dataclass(frozen=True)
class ParsedReference:
    host: str
    repository: str  # "ns/stream"
    tag: str
    digest: str


def parse_reference(text: str) -> ParsedReference | None:
    match = _REFERENCE.match(text.strip())
    if not match:
        return None
    tag = match.group("tag") or ""
    digest = match.group("digest") or ""
    if not tag and not digest:
        tag = "latest"
    return ParsedReference(match.group("host") or "", match.group("path"), tag, digest)


def read_reference_file(path: Path) -> set[str]:
    """One reference per line; blank lines and `#` comments are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CliError(f"cannot read references file {path}: {exc.strerror}") from None
    return {s for line in lines if (s := line.split("#", 1)[0].strip())}


def pod_spec_images(spec: Mapping[str, Any] | None) -> set[str]:
    """Images of the containers, init containers and ephemeral containers of a pod spec."""
    found: set[str] = set()
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in (spec or {}).get(key) or ():
            image = container.get("image") if isinstance(container, Mapping) else None
            if image:
                found.add(str(image))
    return found


def workload_images(obj: Mapping[str, Any]) -> set[str]:
    """Images of a pod, or of the pod template of a workload (cronjobs nest one deeper)."""
    kind = obj.get("kind", "")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return pod_spec_images(spec)
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return pod_spec_images(((spec.get("template") or {}).get("spec")) or {})


def cluster_workloads(kubeconfig: Path) -> list[dict[str, Any]]:
    """Every pod and workload of the cluster as plain dicts (camelCase like the API)."""
    try:
        from kubernetes import client, config
    except ImportError:  # pragma: no cover - kubernetes is a dependency
        raise CliError("the 'kubernetes' package is needed for --cluster-kubeconfig") from None
    try:
        api_client: Any = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    except Exception as exc:
        reason = yaml_problem(exc) if isinstance(exc, yaml.YAMLError) else str(exc)
        raise CliError(f"cannot load cluster kubeconfig {kubeconfig}: {reason}") from None
    core, apps, batch = (
        client.CoreV1Api(api_client),
        client.AppsV1Api(api_client),
        client.BatchV1Api(api_client),
    )
    listers: list[tuple[str, Any]] = [
        ("Pod", core.list_pod_for_all_namespaces),
        ("Deployment", apps.list_deployment_for_all_namespaces),
        ("StatefulSet", apps.list_stateful_set_for_all_namespaces),
        ("DaemonSet", apps.list_daemon_set_for_all_namespaces),
        ("ReplicaSet", apps.list_replica_set_for_all_namespaces),
        ("Job", batch.list_job_for_all_namespaces),
        ("CronJob", batch.list_cron_job_for_all_namespaces),
    ]
    objects: list[dict[str, Any]] = []
    try:
        for kind, lister in listers:
            for item in lister().items:
                body = api_client.sanitize_for_serialization(item)
                objects.append({**body, "kind": kind})
    except Exception as exc:
        raise CliError(f"cannot list workloads of the cluster: {exc}") from None
    finally:
        api_client.close()
    return objects


def gather_references(
    reference_files: Iterable[Path] = (), cluster_kubeconfig: Path | None = None
) -> set[str]:
    """Every image reference named by the files and the cluster's workloads."""
    refs: set[str] = set()
    for path in reference_files:
        refs |= read_reference_file(path)
    if cluster_kubeconfig is not None:
        for obj in cluster_workloads(cluster_kubeconfig):
            refs |= workload_images(obj)
    return refs


@dataclass(frozen=True)
class ReferenceIndex:
    """References grouped for matching: by digest and by `ns/stream:tag` of this registry."""

    by_digest: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    by_tag: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, references: Iterable[str], registry_hosts: Iterable[str]) -> ReferenceIndex:
        hosts = set(registry_hosts)
        digests: dict[str, list[str]] = {}
        tags: dict[tuple[str, str], list[str]] = {}
        for text in sorted(references):
            ref = parse_reference(text)
            if ref is None:
                continue
            if ref.digest:
                digests.setdefault(ref.digest, []).append(text)
            elif ref.host in hosts and ref.repository.count("/") == 1:
                tags.setdefault((ref.repository, ref.tag), []).append(text)
        return cls(
            {k: tuple(v) for k, v in digests.items()}, {k: tuple(v) for k, v in tags.items()}
        )

    def matches(self, digest: str, current_tags: Iterable[tuple[str, str]]) -> list[str]:
        """References naming this image: by digest, or by a tag that points at it now."""
        found = list(self.by_digest.get(digest, ()))
        for key in current_tags:
            found.extend(self.by_tag.get(key, ()))
        return found

    def __bool__(self) -> bool:
        return bool(self.by_digest or self.by_tag)
