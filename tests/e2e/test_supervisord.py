"""End to end under a real supervisord in a temporary folder.

The demo profile (deploy/demo.conf.in + the bridge group of deploy/supervisord.conf, rendered by
`bridge demo`'s own code) runs a private PostgreSQL and Redis on free ports, the IB Gateway
simulator and the bridge, all under tmp. The tests run in order against that one supervisord:
rows arrive; `bridge status --json` is healthy, then degraded while the writer is stopped;
`supervisorctl restart bridge:writer` and a kill -9 of the collector lose nothing and write
nothing twice; `supervisorctl stop bridge:` ends every process cleanly within its stopwaitsecs.
Then deploy/supervisord.conf itself, copied into tmp with an invalid `.env`: every process ends
FATAL with the reason in its log, and the event listener puts the FATAL into api_logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from ops.demo import Demo, render
from ops.embedded import pg_private
from shared.supervisor_rpc import RPC_ERRORS, Supervisor, full_name
from tests.helpers import bridge_env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POLL_S = 0.5
BRIDGE = ("bridge:writer", "bridge:collector", "bridge:watchdog")
STOPWAITSECS = {"writer": 20, "collector": 15, "watchdog": 10}


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25
) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def pg(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def pg_or_none(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record] | None:
    try:
        return pg(dsn, sql, *args)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None


class Supervised:
    """`supervisord -n -c conf` as a child of the test; ended by its PID, children checked."""

    def __init__(self, conf: Path, url: str, env: dict[str, str], cwd: Path) -> None:
        self.conf = conf
        self.log_path = conf.parent / "supervisord.stdout"
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(conf)],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.env = env
        self.folder = cwd
        self.rpc = Supervisor(url, timeout_s=10)
        self.child_pids: set[int] = set()
        wait_until(self._answers, 30, "supervisord's socket")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        try:
            return self.rpc.state() == "RUNNING"
        except RPC_ERRORS:
            return False

    def info(self) -> dict[str, dict[str, Any]]:
        infos = {full_name(i): i for i in self.rpc.all_process_info()}
        self.child_pids |= {int(i["pid"]) for i in infos.values() if i.get("pid")}
        return infos

    def state(self, name: str) -> str:
        return str(self.info()[name]["statename"])

    def wait_states(self, names: tuple[str, ...], state: str, timeout_s: float) -> None:
        wait_until(
            lambda: all(self.state(n) == state for n in names), timeout_s, f"{names} {state}"
        )

    def ctl(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(*RPC_ERRORS):
                self.info()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # a child left behind by a hard end: ours only if it still runs in our folder
        for pid in self.child_pids:
            if self._runs_in(pid, self.folder):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _runs_in(pid: int, folder: Path) -> bool:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return cwd == str(folder) or cwd.startswith(f"{folder}/")


# ---- the demo profile --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, Supervised]]:
    folder = tmp_path_factory.mktemp("demo")
    d = render(
        folder,
        overrides={
            "BRIDGE_POLL_INTERVAL_S": str(POLL_S),
            "BRIDGE_HEARTBEAT_TTL_S": "3",
            "BRIDGE_TICK_LEDGER": str(folder / "ledger.csv"),
            "BRIDGE_CLAIM_IDLE_S": "5",
            "BRIDGE_FLUSH_RETRY_S": "1",
        },
    )
    sup = Supervised(d.conf, f"unix://{d.socket}", bridge_env(), cwd=folder)
    try:
        yield d, sup
    finally:
        sup.close()
        pg_private.remove(folder / "pg" / "data")  # as root: the cluster's private folder


def portfolio_ts(d: Demo) -> list[datetime]:
    rows = pg_or_none(
        d.database_url,
        "SELECT timestamp FROM portfolio_greeks WHERE contract = 'PORTFOLIO' ORDER BY timestamp",
    )
    return [r["timestamp"] for r in rows or []]


def ledger(d: Demo) -> list[datetime]:
    path = d.dir / "ledger.csv"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        ts, _, contract = line.rpartition(",")
        if contract == "PORTFOLIO":
            out.append(datetime.fromisoformat(ts))
    return out


def duplicates(d: Demo) -> list[asyncpg.Record]:
    return pg(
        d.database_url,
        "SELECT timestamp, contract, count(*) FROM portfolio_greeks "
        "GROUP BY timestamp, contract HAVING count(*) > 1",
    )


def status(d: Demo) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [str(BIN / "bridge"), "--env-file", str(d.dir / ".env"), "status", "--json"],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def landed(d: Demo, until: datetime) -> None:
    """Every row the collector produced up to `until` is in PostgreSQL (waits for the writer)."""

    def check() -> bool:
        produced = {t for t in ledger(d) if t <= until}
        return bool(produced) and produced <= set(portfolio_ts(d))

    wait_until(check, 60, f"every row produced up to {until} in PostgreSQL")


def test_demo_starts_and_rows_arrive(demo: tuple[Demo, Supervised]) -> None:
    d, sup = demo
    sup.wait_states(
        ("services:postgres", "services:redis", "services:gateway", *BRIDGE), "RUNNING", 60
    )
    rows = wait_until(
        lambda: len(portfolio_ts(d)) >= 6 and portfolio_ts(d), 60, "six PORTFOLIO rows"
    )
    # on the wall-clock grid of the poll interval
    for ts in rows:
        assert (ts.timestamp() / POLL_S) % 1 == pytest.approx(0, abs=1e-6)
    assert not duplicates(d)


def bridge(d: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bridge"), "--env-file", str(d.dir / ".env"), *args],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bridge_tail_schema_and_drain_against_the_demo(demo: tuple[Demo, Supervised]) -> None:
    d, _sup = demo
    done = bridge(d, "tail", "--count", "3", "--last", "0", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["timestamp", "(UTC)", "account", "contract"]
    assert len(lines) == 2 + 3
    assert all(" PORTFOLIO " in line for line in lines[2:])
    assert all(line.split()[2] == "DU1234567" for line in lines[2:])
    stamps = [line[:23] for line in lines[2:]]
    assert stamps == sorted(set(stamps))  # new rows, in order, each once
    done = bridge(d, "schema")
    assert done.returncode == 0 and "schema ok" in done.stdout, done.stderr
    done = bridge(d, "drain")  # nothing buffered while PostgreSQL is up
    assert done.returncode == 0 and "buffer empty" in done.stdout, done.stderr


def test_status_healthy_then_degraded_while_writer_stopped(
    demo: tuple[Demo, Supervised],
) -> None:
    d, sup = demo
    wait_until(lambda: status(d)[0] == 0, 60, "bridge status healthy")
    code, body = status(d)
    assert code == 0 and body["healthy"] is True and body["status"] == "healthy"
    for key in ("mode", "link", "last_row_age_s", "pending", "buffer_rows", "breaker"):
        assert key in body
    assert body["link"] == "connected" and body["mode"] == "SOCKET"
    assert body["breaker"] == "closed" and body["buffer_rows"] == 0

    assert sup.ctl("stop", "bridge:writer").returncode == 0
    try:
        code, body = status(d)
        assert code == 1, body
        assert body["healthy"] is False and body["status"] == "degraded"
        assert "bridge:writer is STOPPED" in body["reasons"]
        assert body["processes"]["bridge:writer"] == "STOPPED"
        # rows wait in Redis meanwhile
        wait_until(lambda: status(d)[1]["backlog"] > 0, 20, "entries waiting for the writer")
    finally:
        assert sup.ctl("start", "bridge:writer").returncode == 0
    wait_until(lambda: status(d)[0] == 0, 60, "healthy again after the writer's restart")


def test_writer_restart_loses_nothing_and_writes_nothing_twice(
    demo: tuple[Demo, Supervised],
) -> None:
    d, sup = demo
    before = sup.info()["bridge:writer"]["pid"]
    done = sup.ctl("restart", "bridge:writer")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sup.info()["bridge:writer"]["pid"] != before
    restarted = datetime.now().astimezone()
    wait_until(
        lambda: any(t > restarted + timedelta(seconds=2) for t in portfolio_ts(d)),
        60,
        "rows after the restart",
    )
    landed(d, restarted + timedelta(seconds=1))
    assert not duplicates(d)
    # the writer's restart adds no gap: PostgreSQL has exactly the grid slots produced
    produced = [t for t in ledger(d) if t <= restarted + timedelta(seconds=1)]
    stored = [t for t in portfolio_ts(d) if produced[0] <= t <= produced[-1]]
    assert stored == sorted(set(produced))


def test_collector_kill_9_rows_continue(demo: tuple[Demo, Supervised]) -> None:
    d, sup = demo
    pid = int(sup.info()["bridge:collector"]["pid"])
    os.kill(pid, signal.SIGKILL)
    killed = datetime.now().astimezone()
    wait_until(
        lambda: (
            sup.state("bridge:collector") == "RUNNING"
            and int(sup.info()["bridge:collector"]["pid"]) != pid
        ),
        60,
        "the collector restarted by supervisord",
    )
    after = wait_until(
        lambda: [t for t in portfolio_ts(d) if t > killed], 60, "rows from the new collector"
    )
    landed(d, killed)  # whatever the killed collector had handed off is stored
    assert not duplicates(d)
    rows = portfolio_ts(d)
    last_before = max(t for t in rows if t <= killed)
    gap = (after[0] - last_before).total_seconds()
    assert (killed - last_before).total_seconds() <= 5  # ticks went on until the kill
    assert gap < 15, f"{gap} s without rows around the restart"
    # the event listener turned the unexpected exit into an api_logs row
    wait_until(
        lambda: pg(
            d.database_url,
            "SELECT message FROM api_logs WHERE message LIKE $1",
            "bridge:collector exited unexpectedly%",
        ),
        30,
        "the api_logs row of the unexpected exit",
    )


def test_postgres_down_rows_buffered_drain_busy_then_recovered(
    demo: tuple[Demo, Supervised],
) -> None:
    d, sup = demo
    assert sup.ctl("stop", "services:postgres").returncode == 0
    try:

        def buffered() -> dict[str, Any] | None:
            code, body = status(d)
            return body if code == 1 and body["breaker"] == "open" and body["buffer_rows"] else None

        body = wait_until(buffered, 60, "breaker open and rows in the buffer")
        assert body["db_error"] is not None
        assert "services:postgres is STOPPED" in body["reasons"]
        done = bridge(d, "drain")
        assert done.returncode == 3, done.stdout + done.stderr
        assert "busy" in done.stderr
    finally:
        assert sup.ctl("start", "services:postgres").returncode == 0
    resumed = datetime.now().astimezone()
    wait_until(lambda: status(d)[0] == 0, 90, "healthy again, the buffer drained")
    landed(d, resumed)  # what was buffered during the outage is in PostgreSQL
    assert not duplicates(d)


def test_stop_group_exits_cleanly_within_stopwaitsecs(demo: tuple[Demo, Supervised]) -> None:
    d, sup = demo
    sup.wait_states(BRIDGE, "RUNNING", 60)
    log_path = d.dir / "logs" / "supervisord.log"
    offset = log_path.stat().st_size
    started_wall = time.time()
    started = time.monotonic()
    done = sup.ctl("stop", "bridge:")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < max(STOPWAITSECS.values()), elapsed
    infos = sup.info()
    for name in BRIDGE:
        assert infos[name]["statename"] == "STOPPED"
        assert infos[name]["exitstatus"] == 0, infos[name]
        # supervisord's `stop` time has a resolution of one second
        took = int(infos[name]["stop"]) - int(started_wall)
        assert took <= STOPWAITSECS[name.split(":")[1]], (name, took)
    with open(log_path, encoding="utf-8") as fh:
        fh.seek(offset)
        text = fh.read()
    for program in STOPWAITSECS:
        assert f"stopped: {program} (exit status 0)" in text, text
    assert "SIGKILL" not in text


# ---- deploy/supervisord.conf with an invalid .env ----------------------------------------------
def test_invalid_env_ends_fatal_with_the_reason(
    tmp_path_factory: pytest.TempPathFactory, redis_server_url: str
) -> None:
    root = tmp_path_factory.mktemp("prod")
    (root / "deploy" / "run").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "supervisord.conf", root / "deploy" / "supervisord.conf")
    (root / ".venv").symlink_to(BIN.parent)
    prefix = f"test:{os.getpid()}:{time.monotonic_ns()}:"
    (root / ".env").write_text(
        f"IB_API_MODE=FIX\nREDIS_URL={redis_server_url}\nBRIDGE_REDIS_PREFIX={prefix}\n"
        "DATABASE_URL=postgresql://postgres@127.0.0.1:1/postgres\n"
    )
    sock = root / "deploy" / "run" / "supervisor.sock"
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    # started from another directory: the config's paths do not depend on it
    sup = Supervised(
        root / "deploy" / "supervisord.conf",
        f"unix://{sock}",
        bridge_env(),
        cwd=root / "deploy" / "run",
    )
    sup.folder = root
    try:
        sup.wait_states(BRIDGE, "FATAL", 90)
        for name in BRIDGE:
            program = name.split(":")[1]
            text = (root / "deploy" / "run" / f"{program}.log").read_text()
            assert "config_invalid IB_API_MODE='FIX' is invalid: allowed: SOCKET, PORTAL" in text
        done = sup.ctl("status")
        assert "FATAL" in done.stdout and "bridge:writer" in done.stdout

        def fatal_rows() -> list[dict[str, str]]:
            entries = client.xrange(f"{prefix}api_logs")
            return [f for _id, f in entries if f.get("source") == "supervisor"]

        rows = wait_until(
            lambda: len(fatal_rows()) >= 3 and fatal_rows(),
            30,
            "three FATAL rows from the event listener",
        )
        for name in BRIDGE:
            row = next(r for r in rows if r["message"].startswith(f"{name} is FATAL"))
            assert row["status"] == "ERROR"
            assert "IB_API_MODE" in row["message"]
    finally:
        sup.close()
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
