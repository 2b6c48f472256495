"""The watchdog's supervisord client against a real supervisord that answers with an error:
wrong credentials, a collector that crashes as it starts again, one that dies just as it is
restarted, one started by someone else meanwhile, and a supervisord shutting down (also between
the watchdog's look and its stop)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import watchdog.supervisor
from shared.supervisor_rpc import Supervisor
from tests.helpers import supervisord_with_collector
from watchdog.supervisor import RestartFailed, SupervisorClient, SupervisorUnavailable

NAME = "bridge:collector"
SLEEPER = f'command={sys.executable} -c "import time; time.sleep(600)"'


async def running_pid(client: SupervisorClient) -> int:
    end = time.monotonic() + 20
    while True:
        info = await asyncio.to_thread(client.info)
        if info.get("statename") == "RUNNING" and info.get("pid"):
            return int(info["pid"])
        assert time.monotonic() < end, info
        await asyncio.sleep(0.1)


async def wait_ready(path: Path) -> None:
    """The collector script touches `path` once its signal handling is set."""
    end = time.monotonic() + 20
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < end, "the collector never got ready"
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_supervisord() -> Iterator[str]:
    """supervisord also on loopback TCP with a user and password; yields its URL without them."""
    port = free_port()
    program = f"""{SLEEPER}
startsecs=0

[inet_http_server]
port=127.0.0.1:{port}
username=watchdog
password=s3cret-pass"""
    with supervisord_with_collector(program):
        yield f"http://127.0.0.1:{port}"


async def test_wrong_credentials_are_reported_masked(http_supervisord: str) -> None:
    host = http_supervisord.removeprefix("http://")
    good = SupervisorClient(f"http://watchdog:s3cret-pass@{host}", NAME)
    assert await running_pid(good) > 0  # the right credentials are accepted
    for url in (http_supervisord, f"http://watchdog:wrong-pass@{host}"):
        with pytest.raises(SupervisorUnavailable, match="HTTP 401 Unauthorized") as info:
            await SupervisorClient(url, NAME).restart()
        assert "wrong-pass" not in str(info.value)


COLLECTOR = """\
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if marker.exists():
    sys.exit("collector: crashed at start")  # every start after the first one
marker.touch()
time.sleep(600)
"""


async def test_a_collector_that_crashes_at_start_is_a_restart_failure(tmp_path: Path) -> None:
    script = tmp_path / "collector.py"
    script.write_text(COLLECTOR)
    program = f"""command={sys.executable} {script} {tmp_path / "started"}
startsecs=1
startretries=0"""
    with supervisord_with_collector(program) as (_proc, _folder, sock):
        client = SupervisorClient(f"unix://{sock}", NAME)
        pid = await running_pid(client)
        with pytest.raises(RestartFailed, match=r"startProcess\(bridge:collector\): fault (40|50)"):
            await client.restart()
        info = await asyncio.to_thread(client.info)
    assert info["statename"] != "RUNNING"  # it keeps crashing: supervisord's log says why
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the old one was stopped


DIES_ON_CONT = """\
import pathlib, signal, sys, time
signal.signal(signal.SIGCONT, lambda *_: sys.exit(0))
pathlib.Path(sys.argv[1]).touch()
time.sleep(600)
"""


async def test_a_collector_that_dies_as_it_is_restarted_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ends between the watchdog's look and its stopProcess (supervisord: NOT_RUNNING):
    the restart goes on and starts it."""
    script, ready = tmp_path / "collector.py", tmp_path / "ready"
    script.write_text(DIES_ON_CONT)
    program = f"""command={sys.executable} {script} {ready}
startsecs=0
autorestart=false"""

    class DiesMeanwhile(Supervisor):
        """Real calls; after SIGCONT it waits until supervisord saw the process end."""

        def call(self, method: str, *args: Any) -> Any:
            result = super().call(method, *args)
            if method == "supervisor.signalProcess":
                end = time.monotonic() + 20
                while super().call("supervisor.getProcessInfo", NAME)["statename"] == "RUNNING":
                    assert time.monotonic() < end
                    time.sleep(0.05)
            return result

    monkeypatch.setattr(watchdog.supervisor, "Supervisor", DiesMeanwhile)
    with supervisord_with_collector(program) as (_proc, _folder, sock):
        client = SupervisorClient(f"unix://{sock}", NAME)
        pid = await running_pid(client)
        await wait_ready(ready)
        result = await client.restart()
    assert result.pid_before == pid
    assert result.pid_after not in (None, pid)
    assert result.state_after == "RUNNING"


def shutting_down(url: str) -> bool:
    try:
        Supervisor(url).state()
    except xmlrpc.client.Fault as exc:
        assert exc.faultCode == 6, exc  # SHUTDOWN_STATE
        return True
    return False


IGNORES_SIGTERM = """\
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(600)
"""


async def test_a_supervisord_shutting_down_refuses_the_restart(tmp_path: Path) -> None:
    script, ready = tmp_path / "collector.py", tmp_path / "ready"
    script.write_text(IGNORES_SIGTERM)
    program = f"""command={sys.executable} {script} {ready}
startsecs=0
stopwaitsecs=30"""  # a slow stop: supervisord stays in its shutdown until the test kills it
    with supervisord_with_collector(program) as (proc, _folder, sock):
        url = f"unix://{sock}"
        client = SupervisorClient(url, NAME)
        pid = await running_pid(client)
        await wait_ready(ready)  # SIGTERM ignored from now on
        proc.send_signal(signal.SIGTERM)
        try:
            end = time.monotonic() + 20
            while not await asyncio.to_thread(shutting_down, url):
                assert time.monotonic() < end, "supervisord never began shutting down"
                await asyncio.sleep(0.05)
            with pytest.raises(RestartFailed) as info:
                await client.restart()
        finally:
            os.kill(pid, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    assert str(info.value) == "fault 6: SHUTDOWN_STATE"


async def test_a_supervisord_shutting_down_between_look_and_stop_fails_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """supervisord begins its shutdown after the watchdog saw the collector RUNNING: the
    stopProcess fault (not NOT_RUNNING) is a restart failure naming the call."""
    script, ready = tmp_path / "collector.py", tmp_path / "ready"
    script.write_text(IGNORES_SIGTERM)
    program = f"""command={sys.executable} {script} {ready}
startsecs=0
stopwaitsecs=30"""  # supervisord stays in its shutdown until the test kills the program
    with supervisord_with_collector(program) as (proc, _folder, sock):
        url = f"unix://{sock}"

        class ShutsDownMeanwhile(Supervisor):
            def call(self, method: str, *args: Any) -> Any:
                result = super().call(method, *args)
                if method == "supervisor.signalProcess":
                    proc.send_signal(signal.SIGTERM)
                    end = time.monotonic() + 20
                    while not shutting_down(url):
                        assert time.monotonic() < end
                        time.sleep(0.05)
                return result

        monkeypatch.setattr(watchdog.supervisor, "Supervisor", ShutsDownMeanwhile)
        client = SupervisorClient(url, NAME)
        pid = await running_pid(client)
        await wait_ready(ready)
        try:
            with pytest.raises(RestartFailed) as info:
                await client.restart()
        finally:
            os.kill(pid, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    assert str(info.value) == "stopProcess(bridge:collector): fault 6: SHUTDOWN_STATE"


async def test_a_collector_started_by_someone_else_meanwhile_is_the_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the watchdog's stopProcess and its startProcess an operator started it
    (supervisord: ALREADY_STARTED): the restart is done, with the new pid."""
    started: list[int] = []

    class StartedMeanwhile(Supervisor):
        def call(self, method: str, *args: Any) -> Any:
            result = super().call(method, *args)
            if method == "supervisor.stopProcess":
                super().call("supervisor.startProcess", NAME, True)
                started.append(int(super().call("supervisor.getProcessInfo", NAME)["pid"]))
            return result

    monkeypatch.setattr(watchdog.supervisor, "Supervisor", StartedMeanwhile)
    with supervisord_with_collector(f"{SLEEPER}\nstartsecs=0") as (_proc, _folder, sock):
        client = SupervisorClient(f"unix://{sock}", NAME)
        pid = await running_pid(client)
        result = await client.restart()
    assert result.pid_before == pid
    assert result.pid_after == started[0] != pid
    assert result.state_after == "RUNNING"
