"""Which processes are a demo folder's (ops/demo_owned.py), proven from /proc with real
processes, and their end: a pid file of an ended supervisord proves nothing, a process that
merely runs in the folder is not the demo's, what outlives its grace is killed, and a stale
`postmaster.pid` is removed only when no PostgreSQL runs under that pid."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.demo_owned import (
    Owned,
    end_in_order,
    programs,
    remove_stale_postmaster_pid,
    supervisord_pid,
)
from ops.embedded import PostgresServer, free_port

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)

Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a process (argv, cwd); every one is killed by its pid afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(argv: list[str], cwd: Path, ready: bool = False) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(proc)
        if ready:  # its first line says its signal handling is set
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_pid_file_of_an_ended_supervisord_proves_nothing(tmp_path: Path, start: Start) -> None:
    conf = tmp_path / "supervisord.conf"
    ended = start([sys.executable, "-c", "pass", "supervisord", "-c", str(conf)], tmp_path)
    ended.wait(10)
    (tmp_path / "supervisord.pid").write_text(f"{ended.pid}\n")
    assert supervisord_pid(tmp_path) is None


def test_only_the_demos_modules_count_among_the_processes_in_its_folder(
    tmp_path: Path, start: Start
) -> None:
    waiting = [sys.executable, "-m", "ops.waitfor", f"127.0.0.1:{free_port()}", "--timeout"]
    bridge = start([*waiting, "60", "--", "true"], tmp_path)
    other = start([sys.executable, "-c", IGNORES_SIGTERM], tmp_path, ready=True)
    (tmp_path / "redis").mkdir()  # Redis's folder, but no redis-server: an operator's shell
    in_redis = start([sys.executable, "-c", IGNORES_SIGTERM], tmp_path / "redis", ready=True)
    elsewhere = start([*waiting, "60", "--", "true"], tmp_path.parent)
    found = {p.pid: p for p in programs(tmp_path)}
    assert found == {bridge.pid: Owned(bridge.pid, "ops.waitfor", signal.SIGTERM, bridge=True)}
    assert all(p.poll() is None for p in (other, in_redis, elsewhere))  # none is touched


def test_what_outlives_its_grace_is_killed(tmp_path: Path, start: Start) -> None:
    stubborn = start([sys.executable, "-c", IGNORES_SIGTERM], tmp_path, ready=True)
    owned = [Owned(stubborn.pid, "writer", signal.SIGTERM, bridge=True)]
    assert end_in_order(owned, bridge_s=0.3, services_s=0.3) == []
    assert stubborn.wait(10) == -signal.SIGKILL


def test_a_stale_postmaster_pid_is_removed_a_live_one_kept(
    tmp_path: Path, start: Start, private_pg: PostgresServer
) -> None:
    pid_file = tmp_path / "postmaster.pid"
    ended = start([sys.executable, "-c", "pass"], tmp_path)
    ended.wait(10)
    reused = start([sys.executable, "-c", IGNORES_SIGTERM], tmp_path, ready=True)
    for stale in (ended.pid, reused.pid):  # gone, or a pid now of another program
        pid_file.write_text(f"{stale}\n{tmp_path}\n")
        assert remove_stale_postmaster_pid(tmp_path) is True
        assert not pid_file.exists()
    live = (private_pg.data_dir / "postmaster.pid").read_text()
    pid_file.write_text(live)  # the pid of a running postmaster
    assert remove_stale_postmaster_pid(tmp_path) is False
    assert pid_file.read_text() == live
    pid_file.write_text("not a pid\n")
    assert remove_stale_postmaster_pid(tmp_path) is False
    assert pid_file.exists()
