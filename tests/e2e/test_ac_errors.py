"""Mistaken use of the real `ac` against a real server: one clear line, nothing lost.

Each case checks the user-visible promise: exactly one `error: ...` line on stderr naming
the problem and the next step, a non-zero exit status, no traceback, and — where the
command would change something — that nothing changed. One server serves the module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.ac_support import AC, ac, login_admin
from tests.e2e.oci_support import image_manifest, sha
from tests.support.server import RegistryProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(Path(tmp_path_factory.mktemp("registry")) / "data") as process:
        yield process


@pytest.fixture(scope="module")
def home(server: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = login_admin(server, Path(tmp_path_factory.mktemp("admin")))
    with server.client(server.admin_token) as client:
        for tag in ("v1", "v2", "v3"):
            push(client, "team-a/app", tag)
    return home


def push(client: httpx.Client, repo: str, tag: str) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layer = f"layer of {tag}".encode()
    for data in (config, layer):
        started = client.post(f"/v2/{repo}/blobs/uploads/")
        started.raise_for_status()
        done = client.put(started.headers["location"], params={"digest": sha(data)}, content=data)
        done.raise_for_status()
    client.put(
        f"/v2/{repo}/manifests/{tag}",
        content=image_manifest(config, [layer]),
        headers={"Content-Type": OCI_MANIFEST},
    ).raise_for_status()


def error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single stderr line of a failed command (after any dry-run notice)."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("Dry run")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def tags(home: Path) -> str:
    return ac(home, "get", "istag", "-n", "team-a", "-o", "name").stdout


def test_wrong_ca_and_wrong_scheme_say_what_to_change(server: RegistryProcess, home: Path) -> None:
    other_ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    if not Path(other_ca).is_file():
        pytest.skip("no system CA bundle to mismatch with")
    mismatch = ac(home, "--certificate-authority", other_ca, "get", "is", check=False)
    assert "--certificate-authority" in error_line(mismatch)
    assert "cannot verify the TLS certificate" in error_line(mismatch)
    plain = ac(home, "--server", f"http://{server.host}", "get", "is", check=False)
    assert "use https://" in error_line(plain)
    refused = ac(home, "--server", "https://127.0.0.1:9", "get", "is", check=False)
    assert "cannot connect to https://127.0.0.1:9:" in error_line(refused)


def test_failed_login_keeps_the_existing_session(server: RegistryProcess, home: Path) -> None:
    before = (home / "kubeconfig").read_bytes()
    wrong = ac(home, "login", server.url, "--token", "wrong", check=False)
    assert "login failed" in error_line(wrong) and "rejected the token" in error_line(wrong)
    http = ac(home, "login", f"http://{server.host}", "--token", "x", check=False)
    assert "use https://" in error_line(http)
    assert (home / "kubeconfig").read_bytes() == before
    assert ac(home, "whoami").stdout.strip() == "system:admin"


def test_expired_or_wrong_token_points_to_login(home: Path) -> None:
    result = ac(home, "--token", "not-a-token", "get", "is", "-n", "team-a", check=False)
    assert "run 'ac login'" in error_line(result)


def test_missing_permission_is_403_and_changes_nothing(home: Path) -> None:
    before = tags(home)
    for args in (
        ("adm", "prune", "images", "--confirm", "--keep-tag-revisions=0", "--keep-younger-than=0"),
        ("adm", "registry", "gc", "--confirm", "-o", "json"),
        ("tag", "-n", "team-a", "-d", "app:v1"),
        ("adm", "top", "images", "-o", "json"),
    ):
        result = ac(home, "--as", "nobody", *args, check=False)
        assert "ask an administrator" in error_line(result), args
    assert tags(home) == before


def test_invalid_prune_arguments_with_confirm_prune_nothing(home: Path, tmp_path: Path) -> None:
    aggressive = ("--keep-tag-revisions=0", "--keep-younger-than=0", "--all")
    plan = ac(home, "adm", "prune", "images", *aggressive)
    assert "Deleting" in plan.stdout  # a valid confirm would remove something
    before = tags(home)
    refs = tmp_path / "refs"
    refs.write_text("NOT A REFERENCE\n")
    for bad in (
        ("--whitelist=(",),
        ("--keep-younger-than=abc",),
        ("--keep-tag-revisions=-1",),
        (f"--keep-referenced-from={tmp_path / 'missing'}",),
        (f"--keep-referenced-from={refs}",),
        ("--cluster-kubeconfig", str(refs)),
        ("-o", "yaml"),
    ):
        result = ac(home, "adm", "prune", "images", *aggressive, *bad, "--confirm", check=False)
        assert result.returncode in (1, 2), bad
        error_line(result, result.returncode)
    assert tags(home) == before


def test_tag_with_one_bad_destination_changes_no_tag(home: Path) -> None:
    before = tags(home)
    result = ac(home, "-n", "team-a", "tag", "app:v1", "app:copy", "Bad Ref", check=False)
    assert "invalid reference 'Bad Ref'" in error_line(result)
    deleting = ac(home, "-n", "team-a", "tag", "-d", "app:v1", "app@nope", check=False)
    assert "invalid reference" in error_line(deleting)
    missing = ac(home, "-n", "team-a", "tag", "nosuch:v1", "app:copy", check=False)
    assert "not found" in error_line(missing)
    assert tags(home) == before


def test_missing_things_are_named(home: Path) -> None:
    image = ac(home, "image", "info", "team-a/nosuch:v1", check=False)
    assert "team-a/nosuch" in error_line(image)
    stream = ac(home, "-n", "team-a", "get", "is", "nosuch", "-o", "json", check=False)
    assert '"nosuch" not found' in error_line(stream)
    unknown = "sha256:" + "a" * 64
    signature = ac(
        home, "adm", "verify-image-signature", unknown, "--expected-identity=x", check=False
    )
    assert "not found" in error_line(signature)
    role = ac(home, "adm", "policy", "remove-role-from-user", "nosuch", "bob", check=False)
    assert "no role binding" in error_line(role)
    namespace = ac(home, "project", "nosuch", check=False)
    assert 'namespace "nosuch" not found' in error_line(namespace)


def test_closed_stdout_is_not_a_traceback(home: Path) -> None:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
    for args in (("get", "images", "-o", "yaml"), ("adm", "top", "images"), ("--help",)):
        read, write = os.pipe()
        os.close(read)  # like `| head -1` having exited already
        try:
            result = subprocess.run(
                [AC, *args], stdout=write, stderr=subprocess.PIPE, env=env, text=True, timeout=60
            )
        finally:
            os.close(write)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def _default_sigint() -> None:
    """In the forked child before exec: SIGINT back to its default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("get", "is"), "error: interrupted"),
        # A confirmed prune may already be running on the server: the line says so.
        (
            ("adm", "prune", "images", "--confirm"),
            "error: interrupted — the server may still complete this run; check with a dry run",
        ),
    ],
)
def test_ctrl_c_while_waiting_exits_130(home: Path, args: tuple[str, ...], line: str) -> None:
    """SIGINT once `ac` is waiting on a server that accepted the connection and is silent.

    `ac` starts with SIGINT at its default, as in an interactive terminal: a shell without
    job control starts background commands (`pytest ... &`) with SIGINT ignored, and `ac`
    rightly keeps an inherited "ignore" (a script's background `ac` must survive a Ctrl-C
    meant for the foreground), so the test restores the default in the child itself."""
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [AC, "--server", url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            preexec_fn=_default_sigint,
        )
        conn, _ = silent.accept()
        with conn:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == ""
    assert err.splitlines() == [line]
