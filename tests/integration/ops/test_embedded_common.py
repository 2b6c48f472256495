"""What both embedded servers rely on (ops/embedded/common.py), with real processes and sockets:
a server that ignores the stop signal is killed, the wait for a port ends with a clear error
when the server exits or nothing listens in time, a port counts only when the server itself
listens on it, and the unprivileged PostgreSQL user is found or made."""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ops.embedded import common

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.fixture
def stubborn() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # the handler is in place
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()


def test_a_server_ignoring_the_stop_signal_is_killed(stubborn: subprocess.Popen[bytes]) -> None:
    calls: list[str] = []

    def kill() -> None:
        calls.append("kill")
        stubborn.kill()

    common.stop_process(stubborn, signal.SIGTERM, 0.5, lambda: calls.append("thaw"), kill)
    assert calls == ["thaw", "kill"]
    assert stubborn.wait(10) == -signal.SIGKILL


def test_stopping_no_process_or_an_ended_one_does_nothing() -> None:
    calls: list[str] = []
    common.stop_process(None, signal.SIGTERM, 1, lambda: calls.append("thaw"), lambda: None)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(10)
    common.stop_process(ended, signal.SIGTERM, 1, lambda: calls.append("thaw"), lambda: None)
    assert calls == []


def test_waiting_for_a_server_that_exits_reports_its_exit_code() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        with pytest.raises(RuntimeError, match="exited with code 3 while starting"):
            common.wait_port(common.free_port(), 30, proc)
    finally:
        proc.wait(10)


def test_waiting_for_a_port_nobody_listens_on_times_out() -> None:
    port = common.free_port()
    with pytest.raises(TimeoutError, match=f"nothing listening on 127.0.0.1:{port}"):
        common.wait_port(port, 0.3, None)


def test_a_port_counts_only_when_the_server_itself_listens() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        common.wait_port(port, 5, None)  # any listener will do without a process
        assert common.listens(os.getpid(), port)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            assert not common.listens(sleeper.pid, port)
            with pytest.raises(TimeoutError):
                common.wait_port(port, 0.5, sleeper)  # someone else's listener
        finally:
            sleeper.kill()
            sleeper.wait(10)
        assert not common.listens(sleeper.pid, port)  # gone: no /proc entry to read
    assert not common.listens(os.getpid(), port)  # closed


def test_children_lists_the_direct_children_of_a_process() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; c = subprocess.Popen(['sleep', '60']); "
            "print(c.pid, flush=True); sys.stdin.read(); c.kill(); c.wait()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None and parent.stdin is not None
    try:
        child = int(parent.stdout.readline())
        assert common.children(parent.pid) == [child]
        assert common.children(child) == []
    finally:
        parent.stdin.close()
        parent.wait(10)
        parent.stdout.close()


def test_without_pgserver_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip install '\.\[embedded\]'"):
        common.pg_bin_dir()


def test_pg_bin_dir_holds_the_server_binaries() -> None:
    assert (common.pg_bin_dir() / "postgres").is_file()
    assert common.redis_server_bin().is_file()


def test_not_as_root_postgres_runs_as_ourselves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert common.pg_user() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a system user needs root")
def test_as_root_the_server_user_is_made_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bridgetest{secrets.token_hex(3)}"
    monkeypatch.setattr(common, "PG_USER_AS_ROOT", name)
    assert not common.pg_user_exists()
    try:
        made = common.pg_user()
        assert made is not None
        assert made.pw_name == name
        assert made.pw_shell == "/usr/sbin/nologin"
        assert made.pw_uid < 1000  # a system user
        assert not os.path.exists(made.pw_dir)  # no home folder made
        assert common.pg_user_exists()
        assert common.pg_user() == made  # found, not made twice
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
