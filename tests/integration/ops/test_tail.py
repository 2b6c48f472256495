"""`bridge tail` against a real PostgreSQL: it keeps following new rows through an outage
(the operator's command as run, `python -m ops.cli tail`), gives up when PostgreSQL stays away
longer than its give-up time, and honours --count and --last."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from database.db_manager import DBManager
from database.reads import READ_ERRORS
from ops.embedded import PostgresServer
from ops.tail import fmt_ts, tail
from tests.helpers import bridge_env, wait_for

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
UNAVAILABLE = "-- PostgreSQL unavailable"


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=5 * i)


async def insert(url: str, first: int, n: int) -> None:
    """Rows first..first+n-1 (timestamp ts(i), delta i), in one transaction."""
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO portfolio_greeks "
            "(timestamp, contract, delta, gamma, vega, theta, underlying_price) "
            "VALUES ($1, 'PORTFOLIO', $2, 0.1, -0.2, 0.3, 600.0)",
            [(ts(i), float(i)) for i in range(first, first + n)],
        )
    finally:
        await conn.close()


async def schema(url: str) -> None:
    async with DBManager(url) as db:
        await db.migrate()


def shown(text: str) -> list[str]:
    """The timestamps of the row lines in tail's output, in order."""
    return [line[:23] for line in text.splitlines() if line.startswith("2026-")]


def stamps(first: int, n: int) -> list[str]:
    return [fmt_ts(ts(i)) for i in range(first, first + n)]


async def test_bridge_tail_keeps_going_through_a_postgresql_outage(
    private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    await schema(url)
    await insert(url, 0, 3)
    env_file = tmp_path / "bridge.env"
    env_file.write_text(f"DATABASE_URL={url}\n")
    out_path = tmp_path / "tail.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ops.cli",
                "--env-file",
                str(env_file),
                "tail",
                "--count",
                "6",
                "--last",
                "3",
                "--interval",
                "0.1",
            ],
            env=bridge_env(),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.PIPE,
        )
    try:

        def text() -> str:
            return out_path.read_text()

        await wait_for(lambda: shown(text()) == stamps(0, 3), 30, "the 3 newest rows")
        await asyncio.to_thread(private_pg.stop)
        await wait_for(lambda: UNAVAILABLE in text(), 30, "tail's outage line")
        assert proc.poll() is None, "tail still runs while PostgreSQL is down"
        await asyncio.to_thread(private_pg.start)
        await insert(url, 3, 3)
        _, err = await asyncio.to_thread(proc.communicate, None, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert shown(text()) == stamps(0, 6), "every row once, in order, across the outage"


async def test_tail_gives_up_when_postgresql_stays_away(private_pg: PostgresServer) -> None:
    url = private_pg.url()
    await schema(url)
    out = io.StringIO()
    task = asyncio.create_task(tail(url, out, last=0, interval_s=0.05, give_up_s=0.5))
    await wait_for(lambda: "timestamp (UTC)" in out.getvalue(), 30, "tail's header")
    await asyncio.to_thread(private_pg.stop)
    with pytest.raises(READ_ERRORS):
        await asyncio.wait_for(task, 60)
    lines = out.getvalue().splitlines()
    assert any(line.startswith(UNAVAILABLE) for line in lines)
    assert lines[-1].startswith(UNAVAILABLE), "it retried until it gave up"


async def test_tail_last_zero_shows_only_new_rows_and_stops_at_count(pg_url: str) -> None:
    await schema(pg_url)
    await insert(pg_url, 0, 4)  # older rows: not shown with --last 0
    out = io.StringIO()
    task = asyncio.create_task(tail(pg_url, out, count=2, last=0, interval_s=0.05))
    await wait_for(lambda: "timestamp (UTC)" in out.getvalue(), 30, "tail's header")
    await insert(pg_url, 4, 5)  # one page of 5 rows, more than --count
    assert await asyncio.wait_for(task, 60) == 2
    assert shown(out.getvalue()) == stamps(4, 2)


async def test_tail_count_smaller_than_last(pg_url: str) -> None:
    """--count 2 --last 5: two rows (the start of the newest five, in time order), no waiting
    for new rows."""
    await schema(pg_url)
    await insert(pg_url, 0, 8)
    out = io.StringIO()
    assert await asyncio.wait_for(tail(pg_url, out, count=2, last=5), 60) == 2
    assert shown(out.getvalue()) == stamps(3, 2)


async def test_tail_on_an_empty_table_starts_after_the_newest_id(pg_url: str) -> None:
    await schema(pg_url)
    out = io.StringIO()
    task = asyncio.create_task(tail(pg_url, out, count=1, last=5, interval_s=0.05))
    await wait_for(lambda: "timestamp (UTC)" in out.getvalue(), 30, "tail's header")
    await insert(pg_url, 0, 1)
    assert await asyncio.wait_for(task, 60) == 1
    assert shown(out.getvalue()) == stamps(0, 1)


def test_bridge_tail_on_a_database_that_does_not_exist_says_so_in_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/bridge_no_such_database"
    env_file = tmp_path / "bridge.env"
    env_file.write_text(f"DATABASE_URL={missing}\n")
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "--env-file", str(env_file), "tail", "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tail_failed PostgreSQL: InvalidCatalogNameError")
    assert "Traceback" not in done.stderr
