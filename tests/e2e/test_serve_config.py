"""`serve` validates what every setting points at before any worker starts.

A setting that used to fail only inside a Granian worker — a missing or malformed htpasswd
file, a storage location that cannot hold files, an unknown storage scheme, unreadable TLS
files — made the worker crash in a loop with a traceback, or (a storage path under a
regular file) let the server start and fail every push. Now the start is refused with one
line naming the setting and exit status 2, and nothing is prepared (docs/architecture.md,
"Configuration").
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.postgres import free_port
from tests.support.server import BIN

CASES = {
    "htpasswd file missing": (
        ["--plain-http", "--htpasswd-file", "{tmp}/no-such-htpasswd"],
        "Error: htpasswd_file {tmp}/no-such-htpasswd: No such file or directory",
    ),
    "htpasswd file malformed": (
        ["--plain-http", "--htpasswd-file", "{tmp}/a-file"],
        "Error: htpasswd_file {tmp}/a-file:1: expected 'user:hash'",
    ),
    "storage under a regular file": (
        ["--plain-http", "--storage", "{tmp}/a-file/blobs"],
        "Error: storage {tmp}/a-file/blobs: Not a directory",
    ),
    "data dir under a regular file": (
        ["--plain-http", "--data-dir", "{tmp}/a-file/data", "--storage", "memory://"],
        "Error: data_dir {tmp}/a-file/data: Not a directory",
    ),
    "config file not YAML": (
        ["--plain-http", "--config", "{tmp}/a-file.yaml"],
        "Error: config file {tmp}/a-file.yaml is not valid YAML: expected the node content,"
        " but found '<stream end>' (line 2, column 1)",
    ),
    "storage scheme unknown": (
        ["--plain-http", "--storage", "ftp://host/images"],
        "Error: unknown blob storage scheme 'ftp' in 'ftp://host/images' (supported:"
        " file:///path, a plain path, memory://, s3://bucket/prefix)",
    ),
    "TLS certificate missing": (
        ["--tls-cert-file", "{tmp}/no.crt", "--tls-private-key-file", "{tmp}/no.key"],
        "Error: tls_cert_file {tmp}/no.crt: No such file or directory",
    ),
    "TLS certificate not PEM": (
        ["--tls-cert-file", "{tmp}/a-file", "--tls-private-key-file", "{tmp}/a-file"],
        "Error: tls_cert_file {tmp}/a-file: not a PEM certificate",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_setting_stops_serve_with_one_line_before_any_worker(
    case: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not what the setting needs\n")
    (tmp_path / "a-file.yaml").write_text("listen: [\n")
    args, expected = CASES[case]
    data = tmp_path / "data"
    argv = [str(BIN / "image-registry"), "serve", "--data-dir", str(data)]  # the last one wins
    argv += ["--listen", f"127.0.0.1:{free_port()}"]
    argv += [arg.format(tmp=tmp_path) for arg in args]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"serve started despite the bad setting:\n{err}") from None
    assert err.strip().splitlines() == [expected.format(tmp=tmp_path)], err
    assert process.returncode == 2
    assert out == ""  # no worker, no Granian banner
    assert not (data / "registry.db").exists()  # refused before preparing
