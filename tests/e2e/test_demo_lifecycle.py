"""The demo's lifecycle with real processes, each test in its own temporary demo folder.

- the demo's terminal closed (SIGHUP to its process group): nothing of it keeps running, and
  the next start brings a new PORTFOLIO row;
- supervisord killed -9: its programs (bridge, event listener, embedded servers, simulator) end
  by themselves;
- what an earlier run left running in the folder (a PostgreSQL on the data folder, a simulator)
  is ended by the next start, which then brings rows;
- a second `bridge demo` says how to reach and stop the running one and exits non-zero;
  `bridge demo --stop` stops it.
Every process started here, and every descendant seen, is ended by PID in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ops.demo import render
from ops.demo_owned import programs
from ops.embedded import free_port, pg_private
from tests.helpers import bridge_env

BIN = Path(sys.executable).parent
FIRST_ROW_S = 120.0
GONE_S = 30.0


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def running(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def descendants(root: int) -> set[int]:
    """Every running process below `root` (by parent pid, whatever its session)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def newest_portfolio(dsn: str) -> datetime | None:
    async def run() -> datetime | None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            value: datetime | None = await conn.fetchval(
                "SELECT max(timestamp) FROM portfolio_greeks WHERE contract = 'PORTFOLIO'"
            )
            return value
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None


class Processes:
    """Every process a test starts or sees; all of them ended by PID at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.seen: set[int] = set()

    def start(self, args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=bridge_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal gives
            )
        self.procs.append(proc)
        return proc

    def watch(self, proc: subprocess.Popen[bytes]) -> set[int]:
        pids = descendants(proc.pid)
        self.seen |= pids
        return pids

    def close(self) -> None:
        for proc in self.procs:
            self.seen |= descendants(proc.pid)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder of this test; removed afterwards, with the private PostgreSQL folder (as root)
    its demo's `pg/data` links to."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    try:
        yield folder
    finally:
        pg_private.remove(folder / "demo" / "pg" / "data")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.close()


def start_demo(procs: Processes, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    return procs.start([str(BIN / "bridge"), "demo", "--dir", str(folder)], log, folder.parent)


def wait_new_row(folder: Path, since: datetime, log: Path) -> None:
    def new_row() -> bool:
        # read at each try: a start may rewrite the .env of the last run (other ports)
        with contextlib.suppress(OSError, IndexError):
            dsn = (folder / ".env").read_text().split("DATABASE_URL=", 1)[1].split()[0]
            newest = newest_portfolio(dsn)
            return newest is not None and newest >= since
        return False

    try:
        wait_until(new_row, FIRST_ROW_S, f"a PORTFOLIO row stamped after {since}")
    except AssertionError:
        raise AssertionError(log.read_text(errors="replace")[-4000:]) from None


def all_gone(pids: set[int]) -> bool:
    return not any(running(p) for p in pids)


def left_running(pids: set[int]) -> list[str]:
    return [f"{p}: {cmdline(p)}" for p in sorted(pids) if running(p)]


def demo_children(pids: set[int]) -> dict[str, set[int]]:
    """The kinds of process a running demo must have, by command line."""
    kinds = {
        "supervisord": "supervisord",
        "postgres": "pginstall/bin/postgres",
        "redis": "redis-server",
        "simulator": "-m simulator.gateway",
        "writer": "-m writer",
        "collector": "-m collector",
        "watchdog": "-m watchdog",
        "listener": "-m ops.supervisor_events",
    }
    return {k: {p for p in pids if pattern in cmdline(p)} for k, pattern in kinds.items()}


def test_closing_the_terminal_stops_everything_and_the_next_start_brings_rows(
    work: Path, procs: Processes
) -> None:
    folder, log = work / "demo", work / "demo.out"
    since = datetime.now(UTC)
    demo = start_demo(procs, folder, log)
    wait_new_row(folder, since, log)
    pids = procs.watch(demo)
    kinds = demo_children(pids)
    assert all(kinds.values()), kinds

    os.killpg(demo.pid, signal.SIGHUP)  # what closing its terminal does
    sup_log = folder / "logs" / "supervisord.log"
    asked = "received SIGTERM indicating exit request"  # an orderly stop, not a kill
    wait_until(lambda: asked in sup_log.read_text(), GONE_S, "supervisord asked to stop")
    os.killpg(demo.pid, signal.SIGINT)  # a Ctrl-C while it stops: asked once is enough
    assert demo.wait(90) == 0, log.read_text()[-3000:]
    wait_until(lambda: all_gone(pids), GONE_S, "every process of the demo to end")
    tail = sup_log.read_text()
    assert tail.count(asked) == 1, tail
    assert "stopped: writer (exit status 0)" in tail
    assert "stopped: postgres (exit status 0)" in tail

    since = datetime.now(UTC)
    again = start_demo(procs, folder, work / "again.out")
    wait_new_row(folder, since, work / "again.out")
    procs.watch(again)
    os.killpg(again.pid, signal.SIGINT)  # Ctrl-C
    assert again.wait(90) == 0


def test_ctrl_c_before_the_first_row_stops_in_order_without_a_verdict(
    work: Path, procs: Processes
) -> None:
    """Stopped while it starts: no "no new row, see the logs" (that is for a demo that runs
    without rows), and nothing of it keeps running."""
    folder, log = work / "demo", work / "demo.out"
    demo = start_demo(procs, folder, log)

    def collector_started() -> bool:  # past its wait for the services (ops.waitfor)
        return any(cmdline(p).endswith("-m collector ") for p in procs.watch(demo))

    wait_until(collector_started, 60, "the demo's collector to start")
    os.killpg(demo.pid, signal.SIGINT)
    assert demo.wait(90) == 0, log.read_text()[-3000:]
    wait_until(lambda: not programs(folder), GONE_S, "every program of the demo to end")
    text = log.read_text()
    assert "no new PORTFOLIO row" not in text, text[-3000:]
    assert "supervisord ended" not in text  # the stop was ours, not from outside


def test_supervisord_killed_leaves_no_program_running(work: Path, procs: Processes) -> None:
    folder = work / "demo"
    d = render(folder)
    since = datetime.now(UTC)
    supervisord = procs.start(
        [str(BIN / "supervisord"), "-n", "-c", str(d.conf)], work / "sup.out", folder
    )
    wait_new_row(folder, since, folder / "logs" / "supervisord.log")
    pids = procs.watch(supervisord)
    kinds = demo_children(pids)
    assert all(kinds[k] for k in kinds if k != "supervisord"), kinds

    supervisord.kill()
    supervisord.wait(10)
    wait_until(
        lambda: all_gone(pids),
        GONE_S,
        "every program of the killed supervisord to end",
    )
    assert not left_running(pids)


def test_leftovers_of_an_earlier_run_are_ended_before_a_start(work: Path, procs: Processes) -> None:
    folder = work / "demo"
    render(folder)
    # what an earlier run could leave: a PostgreSQL holding the data folder, a simulator
    py, data = sys.executable, folder / "pg" / "data"
    pg_wrapper = procs.start(
        [py, "-m", "ops.embedded", "postgres", "--data", str(data), "--port", str(free_port())],
        work / "old-pg.out",
        folder,
    )
    sim = procs.start(
        [py, "-m", "simulator.gateway", "--port", "0", "--control-port", "0"],
        work / "old-sim.out",
        folder,
    )
    wait_until((data / "postmaster.pid").exists, 60, "the old PostgreSQL")
    # its server process may still be between fork and exec when the pid file appears
    wait_until(
        lambda: any("pginstall/bin/postgres" in cmdline(p) for p in procs.watch(pg_wrapper)),
        30,
        "the old PostgreSQL's server process",
    )
    old = procs.watch(pg_wrapper) | {pg_wrapper.pid, sim.pid}

    log = work / "demo.out"
    since = datetime.now(UTC)
    demo = start_demo(procs, folder, log)
    wait_new_row(folder, since, log)
    procs.watch(demo)
    assert not left_running(old - {pg_wrapper.pid, sim.pid})
    assert pg_wrapper.poll() is not None and sim.poll() is not None
    assert "left running" in log.read_text()
    os.killpg(demo.pid, signal.SIGTERM)
    assert demo.wait(90) == 0


def test_a_second_demo_is_refused_and_stop_ends_the_first(work: Path, procs: Processes) -> None:
    folder, log = work / "demo", work / "demo.out"
    since = datetime.now(UTC)
    demo = start_demo(procs, folder, log)
    wait_new_row(folder, since, log)
    pids = procs.watch(demo)

    second = subprocess.run(
        [str(BIN / "bridge"), "demo", "--dir", str(folder)],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode != 0
    assert "already running" in second.stderr
    for hint in ("status", "supervisorctl", "--stop"):
        assert hint in second.stderr, second.stderr
    # the first one untouched (its programs; a PostgreSQL backend may come and go)
    programs = set().union(*demo_children(pids).values())
    assert demo.poll() is None and programs and all(running(p) for p in programs)

    stop = subprocess.run(
        [str(BIN / "bridge"), "demo", "--dir", str(folder), "--stop"],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not left_running(pids)  # --stop returns once they are gone
    assert demo.wait(30) == 0
