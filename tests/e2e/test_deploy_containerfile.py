"""The Containerfile builds the image the manifests run.

No base image can be pulled on these machines (no registry but the package registries is
reachable), so `podman build` cannot run here. What can be checked is checked: the file is
read instruction by instruction; its build stage's commands run on this machine against a
context holding only what its `COPY` lines copy (so a file the package needs but the
Containerfile forgets fails the install); the installed entry points run and carry the
migrations; and the runtime stage agrees with the Deployment (user, command, arguments).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.test_deploy_manifests import one, render

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


@dataclass
class Instruction:
    stage: int
    keyword: str
    value: str


def instructions() -> list[Instruction]:
    """Logical lines (backslash continuations joined, comments dropped), with their stage."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, value = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword.upper(), value.strip()))
    return out


def test_two_stages_on_one_base_and_only_the_environment_carried_over() -> None:
    found = instructions()
    args = {
        i.value.split("=", 1)[0]: i.value.split("=", 1)[1]
        for i in found
        if i.keyword == "ARG" and i.stage == -1
    }
    froms = [i.value for i in found if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    # The venv's interpreter link points into the base image: both stages must share it.
    assert re.fullmatch(r"docker\.io/library/python:3\.11-slim-\w+", args["PYTHON_IMAGE"])
    final = [i for i in found if i.stage == 1]
    copies = [i.value for i in final if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/image-registry /opt/image-registry"]


def test_runtime_stage_matches_the_deployment() -> None:
    final = [i for i in instructions() if i.stage == 1]
    last = {i.keyword: i.value for i in final}
    uid, gid = (int(n) for n in last["USER"].split(":"))
    pod = one(render("single"), "Deployment")["spec"]["template"]["spec"]
    assert uid != 0
    assert (uid, gid) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])
    (container,) = pod["containers"]
    assert json.loads(last["ENTRYPOINT"]) == container["command"]
    assert json.loads(last["CMD"]) == container["args"]
    assert "PYTHONDONTWRITEBYTECODE=1" in last["ENV"]  # the root filesystem is read-only


def test_build_stage_installs_the_package_from_what_it_copies(tmp_path: Path) -> None:
    build = [i for i in instructions() if i.stage == 0]
    context = tmp_path / "image"  # stands for the build stage's root filesystem
    mapping = {"/src": context / "src", "/opt/image-registry": context / "opt/image-registry"}
    for copy in (i.value for i in build if i.keyword == "COPY"):
        source, destination = copy.split()
        target = Path(str(mapping["/src"]) + destination.removeprefix("/src"))
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    (command,) = [i.value for i in build if i.keyword == "RUN"]
    for pod_path in sorted(mapping, key=len, reverse=True):
        command = re.sub(rf"{re.escape(pod_path)}(?=[/\s]|$)", str(mapping[pod_path]), command)
    # `python` is the base image's Python 3.11; here the interpreter running the tests.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["sh", "-ec", command], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]

    venv = mapping["/opt/image-registry"]
    assert not (venv / "bin" / "pip").exists()  # the package and its dependencies only
    for entry in ("image-registry", "ac"):
        ran = subprocess.run(
            [str(venv / "bin" / entry), "--help"], capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr
    serve = subprocess.run(
        [str(venv / "bin" / "image-registry"), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--config" in serve.stdout
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import imageregistry, imageregistry.metadata.engine as e;"
            "print(imageregistry.__file__);"
            "print(len(list((e.MIGRATIONS / 'versions').glob('*.py'))))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    package_file, migrations = probe.stdout.split()
    assert package_file.startswith(str(venv))  # installed, not the source tree
    assert int(migrations) >= 4
    compiled = Path(package_file).parent / "__pycache__"
    assert any(compiled.glob("server.cpython-*.pyc"))  # compiled at build time
