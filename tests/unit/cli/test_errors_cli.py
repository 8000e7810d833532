"""Mistaken use of `ac` without a server: one `error:` line, a non-zero exit, nothing sent.

The kubeconfigs here point at a closed port, so an error naming the bad input (rather
than "cannot connect") also proves the command stopped before its first request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from imageregistry.cli.ac.main import main
from tests.unit.cli.test_session import kubeconfig

CLOSED = "https://127.0.0.1:9"


def run(*args: str, obj: object = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), obj=obj, input=stdin)


def assert_error(result: Result, code: int, *fragments: str) -> str:
    """Exactly one stderr line `error: ...` holding every fragment; nothing on stdout."""
    assert result.exit_code == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def kc(tmp_path: Path) -> str:
    return str(kubeconfig(tmp_path / "kc", server=CLOSED))


def test_malformed_kubeconfig_is_one_line_with_the_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text(": : [\n")
    line = assert_error(run("--kubeconfig", str(bad), "get", "is"), 1, "not valid YAML")
    assert "line 1, column 1" in line


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n", "is not a mapping"),
        ("contexts: [{name: x, context: 7}]\ncurrent-context: x\n", "has no context mapping"),
        (
            "clusters: [{name: c, cluster: [1]}]\n"
            "contexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x\n",
            "has no cluster mapping",
        ),
    ],
)
def test_kubeconfig_of_the_wrong_shape(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "kc"
    path.write_text(text)
    assert_error(run("--kubeconfig", str(path), "get", "is"), 1, fragment)


def test_kubeconfig_that_is_a_directory_or_names_no_server(tmp_path: Path) -> None:
    assert_error(run("--kubeconfig", str(tmp_path), "whoami"), 1, "cannot read kubeconfig")
    missing = run("--kubeconfig", str(tmp_path / "none"), "get", "is")
    assert_error(missing, 1, "no server found", "run 'ac login'", "https://HOST:PORT")


def test_unknown_context(kc: str) -> None:
    assert_error(run("--kubeconfig", kc, "--context", "nope", "get", "is"), 1, '"nope" does not')


def test_server_urls(kc: str) -> None:
    invalid = run("--kubeconfig", kc, "--server", "https://[::1", "get", "is")
    assert_error(invalid, 1, "invalid server URL", "https://HOST:PORT")
    # A bare HOST:PORT means https, as with kubectl and `ac login`.
    bare = run("--kubeconfig", kc, "--server", "127.0.0.1:9", "whoami", "--show-server")
    assert bare.exit_code == 0 and bare.stdout == "https://127.0.0.1:9\n"


@pytest.mark.parametrize("kind", ["missing", "directory", "not-pem"])
def test_unusable_certificate_authority(kc: str, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ca"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-pem":
        path.write_text("hello\n")
    result = run("--kubeconfig", kc, "--certificate-authority", str(path), "get", "is")
    line = assert_error(result, 1, "certificate authority file")
    assert "cannot connect" not in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-v", "abc", "get", "is"], "'abc' is not a number"),
        (["nosuch"], "No such command"),
        (["adm", "top", "images", "-o", "yaml"], "'yaml' is not 'json'"),
        (["adm", "registry", "gc", "--confirm", "-o", "yaml"], "'yaml' is not 'json'"),
        (["adm", "prune", "images", "--confirm", "--keep-younger-than=abc"], "invalid duration"),
        (["adm", "prune", "images", "--confirm", "--keep-younger-than=-1h"], "negative"),
        (["adm", "prune", "images", "--confirm", "--keep-tag-revisions=-1"], "-1 is not in"),
        (["adm", "prune", "images", "--confirm", "--whitelist=("], "regular expression"),
        (["adm", "prune", "images", "--confirm", "--catalog-page-size=-3"], "-3 is not in"),
        (["adm", "prune", "images", "--confirm", "--dry-run"], "cannot be used together"),
        (["adm", "prune", "images", "--keep-referenced-from=/nonexistent"], "does not exist"),
    ],
)
def test_bad_flags_are_one_line_usage_errors_before_any_request(
    kc: str, args: list[str], fragment: str
) -> None:
    line = assert_error(run("--kubeconfig", kc, *args), 2, fragment)
    assert "cannot connect" not in line


def test_invalid_in_use_references_stop_prune_and_are_shortened(kc: str, tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    secret = "token: " + "s" * 60
    refs.write_text(f"reg.io/team-a/app:v1\n{secret}\nNOT A REF\n")
    result = run(
        "--kubeconfig", kc, "adm", "prune", "images", "--confirm", f"--keep-referenced-from={refs}"
    )
    line = assert_error(result, 2, "2 in-use image reference(s)", "--ignore-invalid-refs")
    assert "s" * 20 not in line
    # Skipping them goes on to the server (here: none), so the check really was the stop.
    skipped = run(
        "--kubeconfig",
        kc,
        "adm",
        "prune",
        "images",
        "--ignore-invalid-refs",
        f"--keep-referenced-from={refs}",
    )
    assert "cannot connect" in skipped.stderr


def test_bad_get_arguments_stop_before_any_request(kc: str) -> None:
    bogus = run("--kubeconfig", kc, "get", "is", "-o", "bogus")
    assert "cannot connect" not in assert_error(bogus, 1, "output format 'bogus'")
    slash = run("--kubeconfig", kc, "get", "istag", "team-a/app:v1")
    assert "cannot connect" not in assert_error(slash, 1, "invalid resource name", "-n")


@pytest.mark.parametrize(
    "args",
    [
        ["tag", "team-a/app:v1", "team-a/app:v2", "Bad Ref"],
        ["tag", "team-a/app:v1", "reg.io:5000/team-a/app:v2"],
        ["tag", "team-a/app:v1", "team-a/app@sha256:" + "a" * 64],
        ["tag", "-d", "team-a/app:v1", "x@y"],
        ["tag", "-d", "team-a/app@sha256:" + "a" * 64],
    ],
)
def test_tag_checks_every_reference_before_the_first_change(kc: str, args: list[str]) -> None:
    line = assert_error(run("--kubeconfig", kc, *args), 1)
    assert "cannot connect" not in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["image", "info", "https://reg.io/team-a/app:v1"], "no https:// in front"),
        (["image", "info", "Team-A/App"], "invalid image reference"),
        (["image", "info", "team-a/app:v1", "--filter-by-os=linux"], "OS/ARCH"),
        (["adm", "verify-image-signature", "abc"], "sha256:<64 hex>"),
    ],
)
def test_malformed_image_references(kc: str, args: list[str], fragment: str) -> None:
    assert_error(run("--kubeconfig", kc, *args), 1, fragment)


def test_login_without_a_password_on_closed_stdin(tmp_path: Path) -> None:
    result = run("--kubeconfig", str(tmp_path / "kc"), "login", CLOSED, "-u", "alice", stdin="")
    assert_error(result, 1, "no password given", "-p PASSWORD")
    assert not (tmp_path / "kc").exists()


def test_ctrl_c_exits_130_with_one_line() -> None:
    def interrupt(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    path_free = ["--server", "https://reg.io:5000", "--kubeconfig", "/nonexistent/kc"]
    result = run(
        *path_free, "image", "info", "reg.io:5000/team-a/app:v1", obj=httpx.MockTransport(interrupt)
    )
    assert_error(result, 130, "interrupted")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["get", "images", "-o", "jsonpath="], "no template given"),
        (["get", "images", "-o", "jsonpath={.items[0"], "unclosed action"),
        (["adm", "verify-image-signature", "sha256:" + "a" * 64], "--expected-identity"),
        (
            [
                "adm",
                "verify-image-signature",
                "sha256:" + "a" * 64,
                "--expected-identity=x",
                "--public-key=/nonexistent",
            ],
            "cannot read public key /nonexistent",
        ),
        (
            [
                "adm",
                "verify-image-signature",
                "sha256:" + "a" * 64,
                "--expected-identity=x",
                "--registry-url=https://[::1",
            ],
            "invalid server URL",
        ),
        (["logout", "--context", "nope"], '"nope" does not exist'),
    ],
)
def test_checked_before_any_request(kc: str, args: list[str], fragment: str) -> None:
    line = assert_error(run("--kubeconfig", kc, *args), 1, fragment)
    assert "cannot connect" not in line


def test_registry_login_into_an_unwritable_place(kc: str, tmp_path: Path) -> None:
    result = run("--kubeconfig", kc, "registry", "login", "--to", str(tmp_path))
    assert_error(result, 1, "cannot write auth file", "--to")


class _QuietPages(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # its log would land in ac's stderr
        pass


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """A plain-HTTP web server that is not a registry (every path: an HTML 404)."""
    handler = partial(_QuietPages, directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_a_server_url_that_is_not_the_registry(kc: str, web_server: str) -> None:
    tls = run("--kubeconfig", kc, "--server", f"https://{web_server}", "get", "is")
    assert_error(tls, 1, "TLS handshake", "use an http:// URL")
    page = run("--kubeconfig", kc, "--server", f"http://{web_server}", "get", "is")
    assert_error(page, 1, "with a web page", "check the server URL")


def test_a_body_that_is_not_json(tmp_path: Path) -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>hello</html>")

    args = ["--server", "https://reg.io:5000", "--kubeconfig", str(tmp_path / "kc")]
    result = run(*args, "image", "info", "reg.io:5000/a/b:v1", obj=httpx.MockTransport(garbage))
    assert_error(result, 1, "not JSON", "check the server URL")


def test_undo_refuses_pruning_flags_it_would_ignore(kc: str) -> None:
    result = run(
        "--kubeconfig",
        kc,
        "adm",
        "prune",
        "images",
        "--undo",
        "prune-1",
        "--confirm",
        "--keep-tag-revisions=0",
        "--all",
    )
    line = assert_error(result, 2, "--undo takes no pruning flags", "--keep-tag-revisions", "--all")
    assert "cannot connect" not in line


def test_an_unexpected_failure_is_one_line_unless_asked_for_the_traceback(tmp_path: Path) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")

    args = ["--server", "https://reg.io:5000", "--kubeconfig", str(tmp_path / "kc")]
    ref = "reg.io:5000/a/b:v1"
    quiet = run(*args, "image", "info", ref, obj=httpx.MockTransport(broken))
    assert_error(quiet, 1, "unexpected RuntimeError: boom", "-v=9")
    loud = run(*args, "-v", "9", "image", "info", ref, obj=httpx.MockTransport(broken))
    assert loud.exit_code == 1 and "Traceback" in loud.stderr
