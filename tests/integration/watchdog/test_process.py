"""`python -m watchdog` as a process (SIGTERM, config errors, the test clock hook) and the
supervisord client against a real supervisord."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.config import ConfigError
from shared.names import Keys
from shared.supervisor_rpc import Supervisor
from tests.helpers import bridge_env, supervisord_with_collector, wait_for
from watchdog.__main__ import clock_offset, make_clock
from watchdog.supervisor import (
    NotRestarted,
    RestartFailed,
    SupervisorClient,
    SupervisorUnavailable,
)

Spawn = Callable[..., subprocess.Popen[bytes]]
BIN = Path(sys.executable).parent
REAL = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_clock_hook_unset_is_no_shift() -> None:
    assert clock_offset({}, REAL) == timedelta(0)
    clock = make_clock(timedelta(0))
    assert abs((clock() - datetime.now(UTC)).total_seconds()) < 1


def test_clock_hook_fake_now_and_offset() -> None:
    fake = "2026-11-25T23:45:00-05:00"
    assert REAL + clock_offset({"BRIDGE_TEST_FAKE_NOW": fake}, REAL) == datetime.fromisoformat(fake)
    assert clock_offset({"BRIDGE_TEST_CLOCK_OFFSET_S": "-90.5"}, REAL) == timedelta(seconds=-90.5)
    shifted = make_clock(timedelta(hours=3))
    assert abs((shifted() - datetime.now(UTC)).total_seconds() - 3 * 3600) < 1


@pytest.mark.parametrize(
    "env",
    [
        {"BRIDGE_TEST_FAKE_NOW": "2026-11-25T23:45:00"},  # naive
        {"BRIDGE_TEST_FAKE_NOW": "tonight"},
        {"BRIDGE_TEST_CLOCK_OFFSET_S": "nan"},
        {"BRIDGE_TEST_CLOCK_OFFSET_S": "1e12"},
        {"BRIDGE_TEST_CLOCK_OFFSET_S": "1", "BRIDGE_TEST_FAKE_NOW": "2026-11-25T23:45:00Z"},
    ],
)
def test_clock_hook_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        clock_offset(env, REAL)


async def test_sigterm_exits_0_quickly(
    spawn: Spawn, redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    env = bridge_env(
        REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=prefix, BRIDGE_WATCHDOG_INTERVAL_S="30"
    )
    proc = spawn("watchdog", env)

    async def published() -> bool:
        return bool(await redis.hget(Keys(prefix).watchdog_state, "decision"))

    await wait_for(published, 20, "the watchdog's state")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    took = time.monotonic() - t0
    print(f"stopped in {took:.2f} s")
    assert took < 5
    raw: Any = await redis.hget(Keys(prefix).watchdog_state, "decision")
    assert raw == b"stopped"
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "watchdog_started mode=SOCKET" in log
    assert "watchdog_stopped" in log


def test_bad_clock_hook_exits_2_with_one_line(spawn: Spawn, redis_url: str) -> None:
    env = bridge_env(REDIS_URL=redis_url, BRIDGE_TEST_FAKE_NOW="tonight")
    proc = spawn("watchdog", env)
    assert proc.wait(20) == 2
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "config_invalid BRIDGE_TEST_FAKE_NOW='tonight'" in log


@pytest.fixture
def supervisord() -> Iterator[str]:
    """A real supervisord (short tmp folder: unix socket path limit) running one program
    `bridge:collector` that only sleeps; ended by its PID."""
    program = f"""\
command={sys.executable} -c "import time; time.sleep(600)"
startsecs=0
stopwaitsecs=2"""
    with supervisord_with_collector(program) as (_proc, _folder, sock):
        yield f"unix://{sock}"


async def running_pid(client: SupervisorClient) -> int:
    end = time.monotonic() + 10
    while True:
        info = await asyncio.to_thread(client.info)
        if info.get("statename") == "RUNNING" and info.get("pid"):
            return int(info["pid"])
        assert time.monotonic() < end, info
        await asyncio.sleep(0.1)


async def test_supervisor_client_restarts_a_frozen_process(supervisord: str) -> None:
    client = SupervisorClient(supervisord, "bridge:collector")
    pid = await running_pid(client)
    os.kill(pid, signal.SIGSTOP)
    try:
        result = await client.restart()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert result.pid_before == pid
    assert result.pid_after not in (None, pid)
    assert result.state_after == "RUNNING"


async def test_supervisor_client_errors(supervisord: str, tmp_path: Path) -> None:
    with pytest.raises(RestartFailed, match="no process named"):
        await SupervisorClient(supervisord, "bridge:nothing").restart()
    with pytest.raises(SupervisorUnavailable, match="unreachable"):
        await SupervisorClient(f"unix://{tmp_path}/none.sock", "bridge:collector").restart()
    with pytest.raises(SupervisorUnavailable, match="not set"):
        await SupervisorClient("", "bridge:collector").restart()
    with pytest.raises(SupervisorUnavailable, match=r"\*\*\*"):  # the password is masked
        await SupervisorClient("http://u:secret@127.0.0.1:1", "bridge:collector").restart()


async def test_supervisor_client_leaves_an_operator_stopped_process_alone(supervisord: str) -> None:
    client = SupervisorClient(supervisord, "bridge:collector")
    await running_pid(client)
    await asyncio.to_thread(Supervisor(supervisord).stop, "bridge:collector")
    with pytest.raises(NotRestarted, match="STOPPED") as info:
        await client.restart()
    assert info.value.state == "STOPPED"
    assert (await asyncio.to_thread(client.info))["statename"] == "STOPPED"
