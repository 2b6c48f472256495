"""`python -m ops.embedded postgres` (what supervisord runs in the demo) stopped while its
first initdb runs: initdb completes, no server is started, exit 0 (a clean stop)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.embedded import free_port, pg_private
from ops.embedded.common import children


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bridge-test-pg-"))
    try:
        yield path
    finally:
        pg_private.remove(path / "pgdata")  # as root the cluster is in a private folder
        shutil.rmtree(path, ignore_errors=True)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_stop_during_the_first_initdb_starts_no_server(folder: Path) -> None:
    data, out = folder / "pgdata", folder / "wrapper.out"
    args = ["postgres", "--data", str(data), "--port", str(free_port())]
    with out.open("wb") as log:
        wrapper = subprocess.Popen(
            [sys.executable, "-m", "ops.embedded", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 60
        while not any("initdb" in cmdline(p) for p in children(wrapper.pid)):
            assert wrapper.poll() is None, out.read_text()
            assert time.monotonic() < end, "initdb never started"
            time.sleep(0.01)
        wrapper.send_signal(signal.SIGTERM)  # what supervisord sends to stop it
        assert wrapper.wait(60) == 0, out.read_text()
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(10)
    cluster = pg_private.linked(data)
    cluster_dir = cluster.data if cluster is not None else data
    assert (cluster_dir / "PG_VERSION").exists()  # initdb was left to finish: no torn cluster
    assert not (cluster_dir / "postmaster.pid").exists()
    assert "listening on" not in out.read_text()  # the server never started
