"""The tick grid (injected clock: no drift, overruns skipped) and the spool on a Redis outage."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest

from collector.service import Collector
from collector.sink import Sink, TickLedger
from collector.ticker import GridTicker
from collector.transport import LinkEvent, LinkState, PositionData, Snapshot, TransportError
from shared.codec import decode_api_log, decode_data_entry
from shared.config import Settings, load_settings
from shared.jsonl import JsonlFile
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import Keys

START = datetime(2026, 11, 25, 14, 30, 1, 234567, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start
        self.rng = random.Random(7)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        # the OS wakes us a little late, sometimes
        self.advance(seconds + self.rng.uniform(0.0, 0.004))
        await asyncio.sleep(0)


async def test_grid_has_no_drift_over_many_ticks() -> None:
    clock = FakeClock(START)
    ticker = GridTicker(5.0, clock=clock, sleep=clock.sleep, max_ticks=2000)
    seen: list[datetime] = []

    async def on_tick(ts: datetime) -> None:
        seen.append(ts)
        clock.advance(clock.rng.uniform(0.0, 2.0))  # work of the tick

    await ticker.run(on_tick, asyncio.Event())
    assert len(seen) == 2000
    assert seen[0] == datetime(2026, 11, 25, 14, 30, 5, tzinfo=UTC)
    for i, ts in enumerate(seen):
        assert ts == seen[0] + timedelta(seconds=5 * i)  # exactly on the grid, none skipped
        assert ts.timestamp() % 5 == 0
    assert ticker.missed == 0


async def test_overrunning_tick_is_skipped_not_stacked() -> None:
    clock = FakeClock(START)
    ticker = GridTicker(5.0, clock=clock, sleep=clock.sleep, max_ticks=5)
    seen: list[datetime] = []
    missed_reports: list[list[datetime]] = []

    async def on_tick(ts: datetime) -> None:
        seen.append(ts)
        if len(seen) == 2:
            clock.advance(12.0)  # this tick takes 12 s: the next two grid instants pass

    async def on_missed(missed: list[datetime]) -> None:
        missed_reports.append(missed)

    await ticker.run(on_tick, asyncio.Event(), on_missed=on_missed)
    base = datetime(2026, 11, 25, 14, 30, 5, tzinfo=UTC)
    step = timedelta(seconds=5)
    assert seen == [base, base + step, base + 4 * step, base + 5 * step, base + 6 * step]
    assert missed_reports == [[base + 2 * step, base + 3 * step]]
    assert ticker.missed == 2


async def test_real_time_overrun_is_cancelled_and_reported() -> None:
    ticker = GridTicker(0.1, max_ticks=4)
    seen: list[datetime] = []
    overruns: list[datetime] = []

    async def on_tick(ts: datetime) -> None:
        seen.append(ts)
        if len(seen) == 2:
            await asyncio.sleep(1.0)  # hangs: must be cut at the next grid instant

    async def on_overrun(ts: datetime) -> None:
        overruns.append(ts)

    await ticker.run(on_tick, asyncio.Event(), on_overrun=on_overrun)
    assert overruns == [seen[1]]
    assert len(seen) == 4
    gaps = {round((b - a).total_seconds(), 6) for a, b in itertools.pairwise(seen)}
    assert gaps == {0.1}  # the hung tick did not push the grid


async def test_stop_ends_the_loop_after_the_tick_in_hand() -> None:
    stop = asyncio.Event()
    ticker = GridTicker(0.05)
    finished: list[datetime] = []

    async def on_tick(ts: datetime) -> None:
        stop.set()
        await asyncio.sleep(0.01)
        finished.append(ts)

    await asyncio.wait_for(ticker.run(on_tick, stop), 2)
    assert len(finished) == 1


# ---- sink and spool ---------------------------------------------------------------------------


def _row(i: int, contract: str = "PORTFOLIO") -> GreeksRow:
    return GreeksRow(
        START + timedelta(seconds=5 * i), contract, float(i), 0.5, 1.5, -2.5, 600.0, "DU1", "PORTAL"
    )


def _entries(stream: list[tuple[bytes, Mapping[bytes, bytes]]]) -> list[GreeksRow]:
    out = []
    for _id, fields in stream:
        row = decode_data_entry(fields)  # the tick's exposure rows ride the same stream
        assert isinstance(row, GreeksRow | ExposureRow)
        if isinstance(row, GreeksRow):
            out.append(row)
    return out


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


async def test_outage_spools_in_order_and_replays(
    server: fakeredis.FakeServer, tmp_path: Path
) -> None:
    client = fakeredis.FakeAsyncRedis(server=server)
    keys = Keys("t1:")
    spool = JsonlFile(tmp_path / "spool.jsonl")
    ledger = tmp_path / "ledger.csv"
    sink = Sink(client, keys, spool, TickLedger(ledger))
    assert await sink.publish([_row(0)], []) == "redis"
    server.connected = False
    assert (
        await sink.publish([_row(1)], [ApiLogRow(START, "PORTAL", "WARN", "x", "collector")])
        == "spool"
    )
    assert await sink.publish([_row(2)], []) == "spool"
    assert spool.count()[0] == 3
    server.connected = True
    # Redis is not probed by ticks while it is known down: the row goes behind the spool
    assert await sink.publish([_row(3)], []) == "spool"
    assert await sink.replay() == 4  # the heartbeat loop found Redis back
    assert await sink.publish([_row(4)], []) == "redis"
    assert spool.is_empty()
    rows = _entries(await client.xrange(keys.greeks))
    assert [r.delta for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    logs = await client.xrange(keys.api_logs)
    assert len(logs) == 1 and isinstance(decode_api_log(logs[0][1]), ApiLogRow)
    assert ledger.read_text().count("PORTFOLIO") == 5
    await client.aclose()


async def test_restart_during_outage_loses_nothing(
    server: fakeredis.FakeServer, tmp_path: Path
) -> None:
    keys = Keys("t2:")
    path = tmp_path / "spool.jsonl"
    server.connected = False
    first = fakeredis.FakeAsyncRedis(server=server)
    sink = Sink(first, keys, JsonlFile(path))
    for i in range(5):
        assert await sink.publish([_row(i)], []) == "spool"
    await first.aclose()
    # the collector restarts while Redis is still down, then Redis comes back
    second = fakeredis.FakeAsyncRedis(server=server)
    sink2 = Sink(second, keys, JsonlFile(path))
    assert await sink2.replay() == 0
    assert await sink2.publish([_row(5)], []) == "spool"
    server.connected = True
    assert await sink2.replay() == 6
    rows = _entries(await second.xrange(keys.greeks))
    assert [r.delta for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    await second.aclose()


# ---- the collector's tick over fakeredis ----


class FakeTransport:
    mode = "PORTAL"

    def __init__(self) -> None:
        self.events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._state = LinkState.DISCONNECTED
        self.fail: str | None = None
        self.connects = 0

    @property
    def state(self) -> LinkState:
        return self._state

    async def connect(self) -> None:
        self.connects += 1
        self._state = LinkState.CONNECTED

    async def disconnect(self) -> None:
        self._state = LinkState.DISCONNECTED

    async def snapshot(self, now: datetime) -> Snapshot:
        if self.fail:
            raise TransportError(self.fail)
        pos = (
            PositionData(1, "SPY", "OPT", 2, 100, 0.5, 0.01, 0.2, -0.1, now, now),
            PositionData(2, "SPY", "STK", 10, 0.0),
        )
        return Snapshot(now, "DU1", pos, {"SPY": 600.0})

    def status(self) -> Mapping[str, str]:
        return {"authenticated": "true"}


def _settings(tmp_path: Path, prefix: str) -> Settings:
    return load_settings(
        {
            "IB_API_MODE": "PORTAL",
            "BRIDGE_REDIS_PREFIX": prefix,
            "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            "REDIS_URL": "redis://127.0.0.1/0",
            "BRIDGE_POLL_INTERVAL_S": "0.1",
        },
        dotenv=None,
    )


async def test_collector_ticks_across_a_redis_outage(
    server: fakeredis.FakeServer, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, "t3:")
    client = fakeredis.FakeAsyncRedis(server=server)
    keys = Keys("t3:")
    transport = FakeTransport()
    sink = Sink(client, keys, JsonlFile(settings.spool_path))
    collector = Collector(settings, transport, sink)
    await collector.start()
    assert transport.connects == 1
    produced: list[datetime] = []
    for i in range(6):
        ts = START + timedelta(seconds=5 * i)
        if i == 2:
            server.connected = False
        if i == 5:
            server.connected = True
            await collector.sink.replay()  # what the heartbeat loop does each second
        await collector.tick(ts)
        produced.append(ts)
    rows = _entries(await client.xrange(keys.greeks))
    assert [r.ts for r in rows] == produced
    assert all(r.delta == pytest.approx(110.0) and r.underlying_price == 600.0 for r in rows)
    # the link goes down: one WARN, rows stop, then resume with an INFO
    transport.fail = "not authenticated"
    await collector.tick(START + timedelta(seconds=30))
    await collector.tick(START + timedelta(seconds=35))
    transport.fail = None
    await collector.tick(START + timedelta(seconds=40))
    messages = [decode_api_log(f) for _i, f in await client.xrange(keys.api_logs)]
    texts = [m.message for m in messages if isinstance(m, ApiLogRow)]
    assert sum("no rows: not authenticated" in t for t in texts) == 1
    assert sum("rows resumed" in t for t in texts) == 1
    assert len(_entries(await client.xrange(keys.greeks))) == 7
    await client.aclose()


async def test_control_pause_and_reconnect(server: fakeredis.FakeServer, tmp_path: Path) -> None:
    settings = _settings(tmp_path, "t4:")
    client = fakeredis.FakeAsyncRedis(server=server)
    keys = Keys("t4:")
    transport = FakeTransport()
    collector = Collector(settings, transport, Sink(client, keys, JsonlFile(settings.spool_path)))
    # pause_until in the future at start: no connect
    until = datetime.now(UTC) + timedelta(hours=1)
    await client.set("t4:pause_until", until.isoformat())
    await collector.start()
    assert transport.connects == 0 and collector.paused
    link = await client.hgetall(keys.link)
    assert link[b"state"] == b"paused"
    bogus_id = (await client.xadd(keys.control, {"cmd": "bogus", "id": "c0"})).decode()
    collector.control.last_id = "0-0"
    await client.xadd(keys.control, {"cmd": "reconnect", "id": "c1", "reason": "test"})
    stop = asyncio.Event()
    reading = asyncio.create_task(collector.run_control(stop))
    try:
        for _ in range(250):
            if transport.connects:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(reading, 5)
    assert transport.connects == 1 and not collector.paused
    logs = [decode_api_log(f) for _i, f in await client.xrange(keys.api_logs)]
    ignored = [
        (m.status, m.message) for m in logs if isinstance(m, ApiLogRow) and "ignored" in m.message
    ]
    assert ignored == [("WARN", f"control entry {bogus_id} ignored: unknown command 'bogus'")]
    events = await client.xrange(keys.link_events)
    answer = events[-1][1]
    assert answer[b"cmd_id"] == b"c1" and answer[b"state"] == b"connected"
    await client.aclose()
