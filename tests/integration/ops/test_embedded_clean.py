"""`python -m ops.embedded.clean DATA_DIR` (what `make clean` runs) on a real private PostgreSQL:
refused while the server runs (nothing deleted), then it deletes the private folder and the
link; a folder that links nowhere is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.embedded import PostgresServer
from ops.embedded import clean as clean_main
from tests.helpers import bridge_env


def clean(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.embedded.clean", *args],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clean_needs_exactly_one_folder_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert clean_main.main([]) == 2
    assert "usage: python -m ops.embedded.clean DATA_DIR" in capsys.readouterr().err


def test_clean_needs_exactly_one_folder() -> None:
    for args in ([], ["a", "b"]):
        done = clean(*args)
        assert done.returncode == 2
        assert "usage: python -m ops.embedded.clean DATA_DIR" in done.stderr


def test_clean_leaves_a_folder_that_links_nowhere_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep").write_text("mine")
    done = clean(str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert (data / "keep").read_text() == "mine"
    assert clean(str(tmp_path / "absent")).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the private folder is made only as root")
def test_clean_refuses_a_running_server_then_removes_its_private_folder(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    server = PostgresServer(data)
    try:
        server.start()
        home = data.resolve().parent
        assert data.is_symlink() and home.name.startswith("bridge-pg-private-")
        refused = clean(str(data))
        assert refused.returncode == 1
        assert f"PostgreSQL still runs on {data}: stop it first" in refused.stderr
        assert data.is_symlink() and (home / "data" / "PG_VERSION").exists(), "nothing deleted"
        server.stop()
        done = clean(str(data))
        assert done.returncode == 0, done.stderr
        assert f"removed {home} (the private PostgreSQL folder of {data})" in done.stdout
        assert not data.is_symlink() and not data.exists()
        assert not home.exists()
    finally:
        server.remove()
