"""`python -m watchdog` as a process (SIGTERM, config errors, its system clock shifted by
libfaketime) and the supervisord client against a real supervisord."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.clock import EASTERN
from shared.names import Keys
from shared.supervisor_rpc import Supervisor
from tests.faketime import clock_at, requires_libfaketime
from tests.helpers import bridge_env, supervisord_with_collector, wait_for
from watchdog.supervisor import (
    NotRestarted,
    RestartFailed,
    SupervisorClient,
    SupervisorUnavailable,
)

Spawn = Callable[..., subprocess.Popen[bytes]]
BIN = Path(sys.executable).parent


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


def test_bad_setting_exits_2_with_one_line(spawn: Spawn, redis_url: str) -> None:
    env = bridge_env(REDIS_URL=redis_url, BRIDGE_WATCHDOG_INTERVAL_S="soon")
    proc = spawn("watchdog", env)
    assert proc.wait(20) == 2
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "config_invalid BRIDGE_WATCHDOG_INTERVAL_S='soon'" in log
    assert len([line for line in log.splitlines() if " ERROR " in line]) == 1, log


@requires_libfaketime
async def test_system_clock_shifted_by_libfaketime(
    spawn: Spawn, redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """The watchdog has no clock of its own: its system clock, shifted for the whole process,
    is what it reads (here 23:45 US/Eastern on a day in November)."""
    at = datetime(2026, 11, 25, 23, 45, tzinfo=EASTERN)
    env = bridge_env(
        REDIS_URL=redis_url,
        BRIDGE_REDIS_PREFIX=prefix,
        BRIDGE_WATCHDOG_INTERVAL_S="0.2",
        **clock_at(at),
    )
    spawn("watchdog", env)

    async def updated() -> str:
        raw: Any = await redis.hget(Keys(prefix).watchdog_state, "updated")
        return raw.decode() if raw else ""

    await wait_for(updated, 20, "the watchdog's state")
    first = datetime.fromisoformat(await updated())
    assert at <= first < at + timedelta(seconds=30), first
    await asyncio.sleep(1.0)
    later = datetime.fromisoformat(await updated())
    assert later > first  # the shifted clock runs on


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
