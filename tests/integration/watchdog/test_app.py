"""The real watchdog loop against a real Redis, with a scripted fake collector (docs/CONTRACTS.md).

The watchdog's clock is injected (it runs on from a chosen wall time at real speed); intervals
and back-off are small so each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from ops.embedded import RedisServer
from shared.clock import EASTERN
from shared.codec import as_text as text
from shared.config import Settings, load_settings
from shared.names import Keys
from tests.helpers import wait_for
from tests.integration.watchdog.fake_collector import FakeCollector
from watchdog.app import Watchdog
from watchdog.supervisor import NotRestarted, RestartResult, SupervisorUnavailable


class FakeClock:
    """A wall clock that reads `start` now and runs on at real speed; `set` jumps it."""

    def __init__(self, start: datetime) -> None:
        self.set(start)

    def set(self, at: datetime) -> None:
        self.base = at
        self.t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.base + timedelta(seconds=time.monotonic() - self.t0)


def et(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=EASTERN)


NOON = et(2026, 11, 25, 12, 0)


def make_settings(redis_url: str, prefix: str, **env: str) -> Settings:
    base = {
        "REDIS_URL": redis_url,
        "BRIDGE_REDIS_PREFIX": prefix,
        "BRIDGE_WATCHDOG_INTERVAL_S": "0.5",
        "BRIDGE_HEARTBEAT_TTL_S": "1",
        "BRIDGE_RECONNECT_RETRIES": "3",
        "BRIDGE_BACKOFF_BASE_S": "0.1",
        "BRIDGE_BACKOFF_CAP_S": "5",
        "IB_CONNECT_TIMEOUT_S": "1",
        "BRIDGE_STOP_GRACE_S": "1",
    }
    base.update(env)
    return load_settings(env=base, dotenv=None)


class StubSupervisor:
    def __init__(
        self,
        url: str = "unix:///nonexistent/supervisor.sock",
        available: bool = True,
        not_running: str = "",
    ) -> None:
        self.url = url
        self.available = available
        self.not_running = not_running
        self.restarts = 0

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def where(self) -> str:
        return self.url or "(BRIDGE_SUPERVISOR_URL not set)"

    async def restart(self) -> RestartResult:
        if self.not_running:
            raise NotRestarted(self.not_running)
        if not self.available:
            raise SupervisorUnavailable(f"{self.url} unreachable: ConnectionRefusedError()")
        self.restarts += 1
        return RestartResult(100 + self.restarts, 200 + self.restarts, "RUNNING")


@dataclass
class Rig:
    redis: aioredis.Redis
    keys: Keys
    clock: FakeClock
    collector: FakeCollector
    watchdog: Watchdog
    task: asyncio.Task[int]
    stop: asyncio.Event

    async def api_logs(self) -> list[dict[str, str]]:
        entries: Any = await self.redis.xrange(self.keys.api_logs)
        rows = [{text(k): text(v) for k, v in fields.items()} for _id, fields in entries]
        return [r for r in rows if r.get("source") == "watchdog"]

    async def messages(self) -> list[str]:
        return [f"{r['status']} {r['message']}" for r in await self.api_logs()]

    async def has(self, needle: str) -> bool:
        return any(needle in m for m in await self.messages())

    async def state(self) -> dict[str, str]:
        raw: Any = await self.redis.hgetall(self.keys.watchdog_state)
        return {text(k): text(v) for k, v in raw.items()}

    async def checks(self, n: int, decision: str, timeout_s: float = 10.0) -> dict[str, str]:
        """Wait until the watchdog has published `decision` `n` more times (every check rewrites
        its hash with a new `updated`): proof it looked again and decided, not just that time
        passed. Returns the last state seen."""
        seen = (await self.state()).get("updated", "")
        last: dict[str, str] = {}
        for i in range(1, n + 1):

            async def fresh(after: str = seen) -> bool:
                nonlocal last
                last = await self.state()
                return last.get("updated", "") != after and last.get("decision") == decision

            await wait_for(fresh, timeout_s, f"check {i}/{n} deciding {decision!r}")
            seen = last["updated"]
        return last


RigFactory = Callable[..., Any]


@pytest.fixture
async def rig(redis_url: str, prefix: str) -> AsyncIterator[RigFactory]:
    made: list[Rig] = []
    clients: list[aioredis.Redis] = []

    def client() -> aioredis.Redis:
        c = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        clients.append(c)
        return c

    async def make(
        start: datetime = NOON,
        outcomes: list[str] | None = None,
        supervisor: StubSupervisor | None = None,
        mode: str = "SOCKET",
        answer_timeout_s: float | None = None,
        **env: str,
    ) -> Rig:
        settings = make_settings(redis_url, prefix, IB_API_MODE=mode, **env)
        keys = Keys(prefix)
        clock = FakeClock(start)
        redis = client()
        collector = FakeCollector(
            client(),
            keys,
            clock,
            mode=mode,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
            outcomes=list(outcomes or []),
        )
        await collector.start()
        watchdog = Watchdog(
            settings,
            client(),
            clock=clock,
            rand=lambda: 0.0,
            supervisor=supervisor or StubSupervisor(url=""),  # type: ignore[arg-type]
            answer_timeout_s=answer_timeout_s,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(watchdog.run(stop), name="watchdog")
        r = Rig(redis, keys, clock, collector, watchdog, task, stop)
        made.append(r)

        async def first_check_done() -> bool:
            return (await r.state()).get("decision") == "healthy"

        await wait_for(first_check_done, 5, "the watchdog's first check")
        return r

    yield make
    for r in made:
        r.stop.set()
        done, _ = await asyncio.wait({r.task}, timeout=5)
        await r.collector.stop()
        assert done, "the watchdog did not stop within 5 s"
        assert r.task.result() == 0
    for c in clients:
        await asyncio.wait_for(c.aclose(), 3)


async def test_drop_outside_window_reconnects_at_once(
    rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watchdog.app")
    r: Rig = await rig(BRIDGE_WATCHDOG_INTERVAL_S="30")
    loop = asyncio.get_running_loop()
    dropped_at = loop.time()
    await r.collector.drop()
    await wait_for(lambda: r.collector.commands("reconnect"), 3, "a reconnect command")
    reaction_s = r.collector.commands("reconnect")[0].at - dropped_at
    print(f"drop -> reconnect command in {reaction_s * 1000:.0f} ms")
    # the decision was taken on the link event, not at a periodic check
    decisions = [m for m in caplog.messages if m.startswith("watchdog_decision reconnect")]
    assert decisions and "(trigger event)" in decisions[0], decisions
    # the requirement: a drop is acted on at once (~1 s), not at the next check 30 s away;
    # the bound leaves room for a loaded 2-core machine
    assert reaction_s < 10.0

    async def healthy() -> bool:
        return (await r.state()).get("decision") == "healthy"

    await wait_for(healthy, 3, "the watchdog back to healthy")
    messages = await r.messages()
    assert any(
        m.startswith("INFO link disconnected: peer closed connection: reconnect round 1 starts now")
        for m in messages
    ), messages
    assert any(
        re.match(r"INFO reconnect attempt 1/4 of round 1 \(at once\) succeeded", m)
        for m in messages
    ), messages
    assert all(row["api_mode"] == "SOCKET" for row in await r.api_logs())
    assert len(r.collector.commands("reconnect")) == 1
    assert r.collector.commands("pause") == []


async def test_three_failed_retries_then_error_then_a_new_round_at_the_next_check(
    rig: RigFactory,
) -> None:
    r: Rig = await rig(
        outcomes=["refused 1", "refused 2", "refused 3", "refused 4", "ok"],
        BRIDGE_BACKOFF_BASE_S="0.2",
    )
    await r.collector.drop()
    await wait_for(
        lambda: len(r.collector.commands("reconnect")) >= 5, 10, "five reconnect commands"
    )
    sent = [c.at for c in r.collector.commands("reconnect")]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    print("gaps between attempts (s):", [f"{g:.3f}" for g in gaps])
    # no attempt before its back-off, 0.2, 0.4, 0.8 s (jitter pinned to 0), and the new round
    # waits for the next periodic check (0.5 s after the spent round): lower bounds only
    assert gaps[0] >= 0.2
    assert gaps[1] >= 0.4
    assert gaps[2] >= 0.8
    assert gaps[3] >= 0.5

    async def five_attempt_rows() -> bool:
        return sum(" attempt " in m for m in await r.messages()) >= 5

    await wait_for(five_attempt_rows, 3, "five attempt rows")
    messages = await r.messages()
    attempts = [m for m in messages if " attempt " in m]
    assert attempts[0].startswith("WARN reconnect attempt 1/4 of round 1 (at once) failed")
    assert "refused 1" in attempts[0]
    assert attempts[1].startswith(
        "WARN reconnect attempt 2/4 (retry 1 of 3) of round 1 (after 0.20 s back-off) failed"
    )
    assert attempts[2].startswith(
        "WARN reconnect attempt 3/4 (retry 2 of 3) of round 1 (after 0.40 s back-off) failed"
    )
    assert attempts[3].startswith(
        "WARN reconnect attempt 4/4 (retry 3 of 3) of round 1 (after 0.80 s back-off) failed"
    )
    assert "refused 4" in attempts[3]
    errors = [m for m in messages if m.startswith("ERROR")]
    assert len(errors) == 1
    assert "reconnect round 1 failed: all 4 attempts (3 retries) spent" in errors[0]
    assert "last error: link disconnected: reconnect failed: refused 4" in errors[0]
    assert messages.index(errors[0]) > messages.index(attempts[3])
    assert attempts[4].startswith("INFO reconnect attempt 1/4 of round 2 (at once) succeeded")
    assert messages.index(attempts[4]) > messages.index(errors[0])
    # two more checks found the link healthy: no new round, no more commands
    state = await r.checks(2, "healthy")
    assert state["round"] == "2"
    assert len(r.collector.commands("reconnect")) == 5


async def test_rounds_never_stop_and_never_spin(rig: RigFactory) -> None:
    r: Rig = await rig(
        outcomes=["refused"] * 100, BRIDGE_RECONNECT_RETRIES="1", BRIDGE_BACKOFF_BASE_S="0.05"
    )
    await r.collector.drop()

    async def three_spent() -> bool:
        return sum(m.startswith("ERROR") for m in await r.messages()) >= 3

    # never stop: a spent round is followed by another
    await wait_for(three_spent, 15, "three spent rounds")
    await wait_for(lambda: len(r.collector.commands("reconnect")) >= 7, 5, "round 4's attempt")
    sent = [c.at for c in r.collector.commands("reconnect")]
    print(f"{len(sent)} attempts in {sent[-1] - sent[0]:.2f} s")
    # never spin: 2 attempts a round, and each new round waits for the next periodic check
    # (0.5 s after the spent round), so the first attempt of round n+1 comes >= 0.5 s after the
    # last of round n; lateness can only lengthen these gaps
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(gaps[i] >= 0.5 for i in (1, 3, 5)), gaps
    assert all(gaps[i] >= 0.05 for i in (0, 2, 4)), gaps
    assert int((await r.state())["round"]) >= 4


async def test_unanswered_command_times_out_as_a_failed_attempt(rig: RigFactory) -> None:
    r: Rig = await rig(outcomes=["silent", "ok"], answer_timeout_s=0.3)
    await r.collector.drop()

    async def done() -> bool:
        return any("attempt 2/4" in m and "succeeded" in m for m in await r.messages())

    await wait_for(done, 5, "the retry after an unanswered command")
    first = next(m for m in await r.messages() if "attempt 1/4" in m)
    assert first.startswith("WARN")
    assert "no answer from the collector within 0.3 s" in first


@pytest.mark.parametrize(
    ("start", "until_text", "until"),
    [
        (et(2026, 11, 25, 23, 45), "2026-11-26 00:05:00 EST", et(2026, 11, 26, 0, 5)),
        (et(2026, 3, 8, 23, 45), "2026-03-09 00:05:00 EDT", et(2026, 3, 9, 0, 5)),
        (et(2026, 11, 1, 23, 45), "2026-11-02 00:05:00 EST", et(2026, 11, 2, 0, 5)),
    ],
)
async def test_drop_in_the_reset_window_pauses_until_0005_then_reconnects(
    rig: RigFactory,
    start: datetime,
    until_text: str,
    until: datetime,
) -> None:
    r: Rig = await rig(start=start)
    await r.collector.drop("peer closed connection (gateway restart)")
    await wait_for(lambda: r.collector.commands("pause"), 3, "a pause command")
    pause = r.collector.commands("pause")[0].fields
    assert datetime.fromisoformat(pause["until"]) == until
    stored: Any = await r.redis.get(r.keys.pause_until)
    assert datetime.fromisoformat(text(stored)) == until
    ttl_ms: Any = await r.redis.pttl(r.keys.pause_until)
    assert 19 * 60_000 < ttl_ms <= 20 * 60_000  # the key expires at 00:05 ET

    async def logged() -> bool:
        return any("waiting until 00:05 ET" in m for m in await r.messages())

    await wait_for(logged, 3, "the api_logs row about waiting until 00:05 ET")
    row = next(m for m in await r.messages() if "waiting until 00:05 ET" in m)
    assert row.startswith("INFO link disconnected at ")
    assert until_text in row
    assert "no reconnect attempt now" in row
    await r.checks(3, "waiting")  # three periodic checks decided to wait: no attempt
    assert r.collector.commands("reconnect") == []
    # after midnight, shortly before the end of the pause: a check still decides to wait
    before_end = until - timedelta(seconds=2.5)
    r.clock.set(before_end)

    async def waiting_after_midnight() -> bool:
        state = await r.state()
        return state.get("decision") == "waiting" and (
            before_end <= datetime.fromisoformat(state["updated"]) < until
        )

    await wait_for(waiting_after_midnight, 2, "a check after midnight deciding to wait")
    assert r.collector.commands("reconnect") == []
    # 00:05 ET: the reconnect
    await wait_for(lambda: r.collector.commands("reconnect"), 4, "the reconnect at 00:05 ET")
    assert r.clock() >= until
    assert len(r.collector.commands("pause")) == 1

    async def succeeded() -> bool:
        return any("attempt 1/4 of round 1" in m and "succeeded" in m for m in await r.messages())

    await wait_for(succeeded, 3, "the reconnect's success row")
    assert any("pause ended" in m for m in await r.messages())


async def test_retry_crossing_into_the_window_becomes_a_pause(rig: RigFactory) -> None:
    r: Rig = await rig(
        start=et(2026, 11, 25, 23, 39, 50), outcomes=["refused"] * 5, BRIDGE_BACKOFF_BASE_S="1.5"
    )
    r.clock.set(et(2026, 11, 25, 23, 39, 59))
    await r.collector.drop()
    await wait_for(lambda: r.collector.commands("pause"), 5, "a pause during the round")
    assert len(r.collector.commands("reconnect")) == 1  # 23:39:59: one at once, then 23:40
    messages = await r.messages()
    assert any("round 1 ends after 1 attempt(s)" in m for m in messages), messages
    assert not any(m.startswith("ERROR") for m in messages)


async def test_watchdog_started_during_a_pause_honours_pause_until(
    redis: aioredis.Redis,
    rig: RigFactory,
    prefix: str,
) -> None:
    until = et(2026, 11, 26, 0, 5)
    await redis.set(f"{prefix}pause_until", until.isoformat(), px=60_000)
    r: Rig = await rig(start=et(2026, 11, 26, 0, 1))
    await r.collector.event("paused", "paused until 00:05")
    state = await r.checks(2, "waiting")  # two checks saw the pause and decided to wait
    assert "waiting until 2026-11-26 00:05:00 EST" in state["reason"], state
    assert r.collector.commands("reconnect") == []
    r.clock.set(until)
    await wait_for(lambda: r.collector.commands("reconnect"), 3, "the reconnect at 00:05")


async def test_stale_heartbeat_restarts_through_supervisord(rig: RigFactory) -> None:
    sup = StubSupervisor()
    r: Rig = await rig(supervisor=sup)
    r.collector.beating = False  # hung: the key expires after its 1 s TTL
    await wait_for(lambda: sup.restarts == 1, 10, "a restart")
    messages = await r.messages()
    assert any(
        m.startswith("WARN collector heartbeat stale") and "restarting bridge:collector" in m
        for m in messages
    ), messages
    assert any(
        m.startswith(
            "INFO collector bridge:collector restarted through supervisord "
            "(pid 101 -> 201, RUNNING)"
        )
        for m in messages
    ), messages
    # a start-up grace after a restart: checks decide to wait, no restart loop
    state = await r.checks(2, "waiting")
    assert "start-up grace" in state["reason"], state
    assert sup.restarts == 1
    r.collector.beating = True
    await r.collector.beat()
    await r.checks(2, "healthy")
    assert sup.restarts == 1


async def test_stale_heartbeat_without_supervisord_says_so_once(rig: RigFactory) -> None:
    r: Rig = await rig(supervisor=StubSupervisor(url=""))
    r.collector.beating = False
    await wait_for(lambda: r.has("not running under supervisord"), 10, "the WARN")
    await r.checks(3, "collector_stale")  # three more checks found it stale
    said = [m for m in await r.messages() if "not running under supervisord" in m]
    assert len(said) == 1, said
    assert said[0].startswith("WARN collector heartbeat stale")
    # the collector comes back: the watchdog kept watching and acts on a drop again
    r.collector.beating = True
    await r.collector.beat()
    await r.checks(1, "healthy")
    await r.collector.drop()
    await wait_for(lambda: r.collector.commands("reconnect"), 3, "a reconnect")


async def test_supervisord_unreachable_says_so_once(rig: RigFactory) -> None:
    r: Rig = await rig(supervisor=StubSupervisor(available=False))
    r.collector.beating = False
    await wait_for(lambda: r.has("not reachable under supervisord"), 10, "the WARN")
    await r.checks(3, "collector_stale")  # three more checks tried again, quietly
    said = [m for m in await r.messages() if "not reachable under supervisord" in m]
    assert len(said) == 1, await r.messages()


async def test_portal_unauthenticated_session_is_reauthenticated(rig: RigFactory) -> None:
    r: Rig = await rig(mode="PORTAL", outcomes=["401 Unauthorized", "ok"])
    await r.collector.drop("401 from /tickle", state="unauthenticated")
    await wait_for(lambda: len(r.collector.commands("reauth")) >= 2, 5, "two reauth commands")
    assert r.collector.commands("reconnect") == []

    async def done() -> bool:
        return any("reauth attempt 2/4" in m and "succeeded" in m for m in await r.messages())

    await wait_for(done, 3, "the reauth success row")
    messages = await r.messages()
    first = next(m for m in messages if "reauth attempt 1/4" in m)
    assert first.startswith("WARN")
    assert "401 Unauthorized" in first
    assert all(row["api_mode"] == "PORTAL" for row in await r.api_logs())


async def test_portal_ignores_the_socket_reset_window(rig: RigFactory) -> None:
    r: Rig = await rig(mode="PORTAL", start=et(2026, 11, 25, 23, 45))
    await r.collector.drop("gateway unreachable")
    await wait_for(lambda: r.collector.commands("reconnect"), 3, "a reconnect")
    assert r.collector.commands("pause") == []


async def test_stop_during_back_off_returns_promptly(rig: RigFactory) -> None:
    r: Rig = await rig(outcomes=["refused"] * 5, BRIDGE_BACKOFF_BASE_S="30")
    await r.collector.drop()
    await wait_for(lambda: r.collector.commands("reconnect"), 3, "the first attempt")

    async def backing_off() -> bool:
        return (await r.state()).get("decision") == "backoff"

    await wait_for(backing_off, 3, "the watchdog in its 30 s back-off")
    r.stop.set()
    # the requirement: a stop does not wait out the 30 s back-off; the bound leaves room for
    # a loaded 2-core machine and is still far below 30 s
    assert await asyncio.wait_for(r.task, 10) == 0
    assert (await r.state())["decision"] == "stopped"


async def test_operator_stopped_collector_is_left_alone_and_said_once(rig: RigFactory) -> None:
    sup = StubSupervisor(not_running="STOPPED")
    r: Rig = await rig(supervisor=sup)
    r.collector.beating = False
    await wait_for(lambda: r.has("not restarted"), 10, "the WARN")
    await r.checks(3, "collector_stale")  # three more checks asked supervisord again
    said = [m for m in await r.messages() if "not restarted" in m]
    assert len(said) == 1, await r.messages()
    assert "supervisord reports it state STOPPED" in said[0]
    assert sup.restarts == 0


async def test_redis_outage_is_survived(
    private_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watchdog.app")
    url = private_redis.url()
    settings = make_settings(url, prefix)
    keys = Keys(prefix)
    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    helper = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    clock = FakeClock(NOON)
    watchdog = Watchdog(
        settings, client, clock=clock, rand=lambda: 0.0, supervisor=StubSupervisor(url="")
    )  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog.run(stop), name="watchdog")
    collector: FakeCollector | None = None
    try:
        await wait_for(lambda: helper.exists(keys.watchdog_state), 5, "the watchdog's state")
        await asyncio.to_thread(private_redis.stop)

        def said(event: str) -> bool:
            return any(m.startswith(event) for m in caplog.messages)

        await wait_for(lambda: said("watchdog_redis_down"), 10, "the watchdog seeing Redis down")
        assert not task.done()  # it backs off and keeps trying, it does not die
        await asyncio.to_thread(private_redis.start)
        await helper.aclose()  # its pooled connection died with the server
        helper = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        collector = FakeCollector(helper, keys, clock, heartbeat_ttl_s=1.0)
        back_at = clock()
        await collector.start()
        await wait_for(lambda: said("watchdog_redis_back"), 15, "the watchdog back on Redis")

        async def healthy_since_back() -> bool:
            raw: Any = await helper.hgetall(keys.watchdog_state)
            state = {text(k): text(v) for k, v in raw.items()}
            updated = state.get("updated")
            return (
                state.get("decision") == "healthy"
                and updated is not None
                and datetime.fromisoformat(updated) >= back_at
            )

        # a check after the outage saw the collector's beat and link: it is watching again
        await wait_for(healthy_since_back, 10, "a healthy check after the outage")
        await collector.drop()
        await wait_for(
            lambda: collector is not None and collector.commands("reconnect"),
            10,
            "a reconnect after the outage",
        )
        assert not task.done()
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=8)
        if collector is not None:
            await collector.stop()
        await client.aclose()
        await helper.aclose()
    assert done
    assert task.result() == 0
