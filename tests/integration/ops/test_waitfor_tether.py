"""`python -m ops.waitfor` and `python -m ops.tether` as supervisord runs them, real processes:
waitfor times out with its message and exit code 1, and once every port accepts it execs the
command in its own PID; tether execs its command in its own PID and refuses bad arguments.

The code after os.execvp (and every line of a process that did exec) is not measured: exec
replaces the process before coverage can save its data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import tether
from ops.embedded import free_port
from tests.helpers import bridge_env

PRINT_PID = [sys.executable, "-c", "import os; print('pid', os.getpid())"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    """A loopback port reserved (bound) but not yet listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


# ---- waitfor -----------------------------------------------------------------------------------
def test_waitfor_times_out_with_its_message_and_exit_code_1() -> None:
    port = free_port()
    done = run("ops.waitfor", f"127.0.0.1:{port}", "--timeout", "0.5", "--", *PRINT_PID)
    assert done.returncode == 1
    assert f"waitfor_timeout nothing listening on 127.0.0.1:{port} after 0.5 s" in done.stderr
    assert "pid" not in done.stdout, "the command never ran"


def test_waitfor_names_only_the_ports_still_closed(bound: socket.socket) -> None:
    bound.listen()
    open_port = bound.getsockname()[1]
    closed = free_port()
    done = run(
        "ops.waitfor", f"127.0.0.1:{open_port}", f":{closed}", "--timeout", "0.5", "--", "true"
    )
    assert done.returncode == 1
    assert f"nothing listening on 127.0.0.1:{closed} after" in done.stderr
    assert str(open_port) not in done.stderr


def test_waitfor_execs_the_command_in_its_own_pid_once_the_port_opens(
    bound: socket.socket,
) -> None:
    port = bound.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.waitfor",
            f"127.0.0.1:{port}",
            "--timeout",
            "60",
            "--",
            *PRINT_PID,
        ],
        env=bridge_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let it find the port closed at least once (not asserted)
        assert proc.poll() is None, "still waiting while the port is closed"
        bound.listen()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert out.split() == ["pid", str(proc.pid)], "exec'd: the same PID supervisord knows"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1:1", "true"], "usage: python -m ops.waitfor"),
        (["127.0.0.1:1", "--"], "waitfor: no command after --"),
        (["nohost", "--", "true"], "'nohost' is not HOST:PORT"),
        (["127.0.0.1:http", "--", "true"], "is not HOST:PORT"),
    ],
)
def test_waitfor_refuses_bad_arguments_with_exit_code_2(args: list[str], message: str) -> None:
    done = run("ops.waitfor", *args)
    assert done.returncode == 2
    assert message in done.stderr


# ---- tether ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "usage: python -m ops.tether"),
        (["true"], "usage: python -m ops.tether"),
        (["--"], "usage: python -m ops.tether"),
        (["--signal"], "usage: python -m ops.tether"),
        (["--signal", "KILL", "true"], "usage: python -m ops.tether"),
        (["--signal", "NOPE", "--", "true"], "tether: unknown signal 'NOPE'"),
    ],
)
def test_tether_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: each is refused before die_with_parent and the exec."""
    assert tether.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("sig", [[], ["--signal", "kill"], ["--signal", "SIGINT"]])
def test_tether_execs_the_command_in_its_own_pid(sig: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.tether", *sig, "--", *PRINT_PID],
        env=bridge_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split() == ["pid", str(proc.pid)]


def test_tether_refuses_an_unknown_signal_with_exit_code_2_as_supervisord_runs_it() -> None:
    done = run("ops.tether", "--signal", "NOPE", "--", *PRINT_PID)
    assert done.returncode == 2
    assert "tether: unknown signal 'NOPE'" in done.stderr
    assert "pid" not in done.stdout, "the command never ran"


def test_tether_passes_the_exit_code_through() -> None:
    assert run("ops.tether", "--", "false").returncode == 1


def test_tethered_command_ends_with_its_parent(tmp_path: Path) -> None:
    """The parent (supervisord's place) killed -9: the tethered command gets SIGTERM."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"c = subprocess.Popen([sys.executable, '-m', 'ops.tether', '--', {sys.executable!r},"
            " '-c', 'import os, time; print(os.getpid(), flush=True); time.sleep(120)'],"
            f" stdout=open({str(pid_file)!r}, 'w'))\n"
            "time.sleep(120)\n",
        ],
        env=bridge_env(),
    )
    child = 0
    try:
        deadline = time.monotonic() + 30
        while not child:
            assert time.monotonic() < deadline, "the tethered command never started"
            time.sleep(0.05)
            text = pid_file.read_text().strip() if pid_file.exists() else ""
            child = int(text) if text else 0
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "the tethered command outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by init, counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    if "Z" in state.split()[1]:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
