"""Kubeconfig handling shared with kubectl, global flags, references and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from imageregistry.cli.ac.login import write_auth_entry
from imageregistry.cli.ac.main import main
from imageregistry.cli.ac.references import (
    ReferenceIndex,
    parse_reference,
    read_reference_file,
    workload_images,
)
from imageregistry.cli.ac.session import GlobalOptions, default_kubeconfig_path, resolve


def kubeconfig(path: Path, server: str = "https://127.0.0.1:1", ns: str = "team-a") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "tok"}}],
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": ns}}
                ],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_kubeconfig_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert default_kubeconfig_path() == tmp_path / "a"
    assert default_kubeconfig_path("/x/y") == Path("/x/y")
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_kubeconfig_path() == tmp_path / ".kube" / "config"


def test_flags_override_the_current_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc")
    sess = resolve(GlobalOptions(kubeconfig=str(path)))
    assert (sess.server, sess.token, sess.namespace) == ("https://127.0.0.1:1", "tok", "team-a")
    sess = resolve(GlobalOptions(kubeconfig=str(path), namespace="b", token="t2", as_user="bob"))
    assert sess.namespace == "b"
    assert sess.headers()["Authorization"] == "Bearer t2"
    assert sess.headers()["Impersonate-User"] == "bob"


def test_project_shows_namespace_with_flags_after_the_command(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc")
    result = CliRunner().invoke(main, ["project", "--kubeconfig", str(path)])
    assert result.output == 'Using project "team-a" on server "https://127.0.0.1:1".\n'


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", server="https://127.0.0.1:9")
    result = CliRunner().invoke(main, ["--kubeconfig", str(path), "get", "images"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to")
    result = CliRunner().invoke(main, ["--kubeconfig", str(path), "get", "widgets"])
    assert result.exit_code == 1 and "doesn't have a resource type" in result.output
    missing = CliRunner().invoke(main, ["--kubeconfig", str(tmp_path / "none"), "whoami"])
    assert missing.exit_code == 1 and "run 'ac login'" in missing.output


def test_registry_auth_entry_keeps_other_registries(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"other": {"auth": "x"}}}))
    write_auth_entry(path, "127.0.0.1:5000", "alice", "tok")
    auths = json.loads(path.read_text())["auths"]
    assert set(auths) == {"other", "127.0.0.1:5000"}
    assert auths["127.0.0.1:5000"]["auth"] == "YWxpY2U6dG9r"


def test_references_from_file_and_workloads(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.write_text("# comment\nreg:5000/team-a/app:v1\n\nquay.io/x/y@sha256:" + "a" * 64 + "\n")
    found = read_reference_file(refs)
    assert found == {"reg:5000/team-a/app:v1", "quay.io/x/y@sha256:" + "a" * 64}
    cron = {
        "kind": "CronJob",
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"image": "i1"}],
                            "initContainers": [{"image": "i2"}],
                        }
                    }
                }
            }
        },
    }
    assert workload_images(cron) == {"i1", "i2"}
    index = ReferenceIndex.build(found | {"reg:5000/team-a/base"}, ["reg:5000"])
    assert index.matches("sha256:" + "a" * 64, []) == ["quay.io/x/y@sha256:" + "a" * 64]
    assert index.matches("sha256:b", [("team-a/app", "v1")]) == ["reg:5000/team-a/app:v1"]
    assert index.matches("sha256:c", [("team-a/base", "latest")]) == ["reg:5000/team-a/base"]
    ref = parse_reference("reg:5000/team-a/app")
    assert ref is not None and (ref.host, ref.repository, ref.tag) == (
        "reg:5000",
        "team-a/app",
        "latest",
    )
