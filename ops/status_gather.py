"""`bridge status`'s reads, each with a short timeout: Redis (link, heartbeat, streams, groups,
writer state), PostgreSQL (the newest rows), supervisord, and the buffer file."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from database.reads import READ_ERRORS, Reader
from ops import status_writers
from ops.status_report import TIMEOUT_S, UNDELIVERED_SCAN_MAX, Report, stale_after_s
from shared.clock import age_s, parse_time, utcnow
from shared.codec import as_text as _text
from shared.config import Settings, mask_url, scrub
from shared.jsonl import JsonlFile
from shared.names import PORTFOLIO_CONTRACT, WRITER_GROUP, Keys
from shared.supervisor_rpc import RPC_ERRORS, Supervisor, full_name


def _texts(mapping: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in mapping.items()}


def _parse_time(value: object) -> datetime | None:
    return parse_time(_text(value))


def _short(exc: BaseException) -> str:
    text = scrub(str(exc) or type(exc).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


async def _gather_redis(r: Report, settings: Settings) -> None:
    keys = Keys(settings.redis_prefix)
    client = aioredis.Redis.from_url(
        settings.require_redis(),
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        decode_responses=True,
    )
    try:
        link = _texts(await client.hgetall(keys.link))
        r.link = link.get("state") or None
        r.link_since = link.get("since") or None
        r.link_reason = link.get("reason", "")
        r.market_data = {
            k: v for k, v in link.items() if k.startswith(("lines_", "rotat", "market_"))
        }
        r.last_tick_age_s = age_s(_parse_time(link.get("last_tick")), r.now)
        r.heartbeat_age_s = age_s(_parse_time(await client.get(keys.heartbeat)), r.now)
        if r.heartbeat_age_s is None and await client.exists(keys.heartbeat):
            r.heartbeat_age_s = 0.0  # present but not an ISO time: alive all the same
        for stream in (keys.greeks, keys.api_logs, keys.dead):
            r.streams[stream.removeprefix(keys.prefix)] = int(await client.xlen(stream))
        r.dead_letters = r.streams.get("dead")
        for stream in keys.data_streams:
            short = stream.removeprefix(keys.prefix)
            r.pending_by_consumer[short], r.undelivered[short] = await _group_state(client, stream)
        got = await status_writers.gather(client, keys)
        r.writers = status_writers.combine(r.pending_by_consumer, got)
        r.writer_alive = status_writers.any_alive(r.writers, got.legacy_alive)
        # the breaker shown: an open one of a running writer, else the last writer's
        opened = [got.states[n] for n, v in r.writers.items() if v.alive and v.breaker == "open"]
        writer = opened[0] if opened else _texts(await client.hgetall(keys.writer_state))
        r.breaker = writer.get("breaker") or ("unknown" if not writer else "closed")
        r.breaker_since = writer.get("since", "")
        r.breaker_reason = writer.get("reason", "")
        with contextlib.suppress(ValueError):
            if "buffer_rows" in writer:
                r.buffer_rows = int(writer["buffer_rows"])
            if "buffer_bytes" in writer:
                r.buffer_bytes = int(writer["buffer_bytes"])
        r.watchdog = _texts(await client.hgetall(keys.watchdog_state))
    except (RedisError, OSError) as exc:
        r.redis_error = _short(exc)
    finally:
        await client.aclose()


async def _group_state(client: aioredis.Redis, stream: str) -> tuple[dict[str, int], int]:
    """(pending entries per consumer of the writers group, entries not yet delivered)."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return {}, 0
    group = next((g for g in groups if g.get("name") == WRITER_GROUP), None)
    if group is None:
        return {}, int(await client.xlen(stream))
    consumers = await client.xinfo_consumers(stream, WRITER_GROUP)
    by_consumer = {str(c["name"]): int(c["pending"]) for c in consumers}
    last = str(group.get("last-delivered-id", "0-0"))
    newer = await client.xrange(stream, min=f"({last}", max="+", count=UNDELIVERED_SCAN_MAX)
    return by_consumer, len(newer or [])


async def _gather_db(r: Report, settings: Settings) -> None:
    try:
        conn = await Reader.connect(settings.require_database(), timeout_s=TIMEOUT_S)
    except READ_ERRORS as exc:
        r.db_error = _short(exc)
        return
    try:
        row = await conn.newest_portfolio_row(PORTFOLIO_CONTRACT)
        by_account = await conn.newest_by_account()
    except READ_ERRORS as exc:
        r.db_error = _short(exc)
        return
    finally:
        await conn.close()
    if row is not None:
        ts: datetime = row["timestamp"]
        r.last_row_ts = ts.isoformat()
        r.last_row_age_s = age_s(ts, r.now)
    r.accounts = {a: age_s(t, r.now) or 0.0 for a, t in by_account.items()}


def _gather_supervisor(r: Report, url: str) -> None:
    try:
        infos = Supervisor(url, timeout_s=TIMEOUT_S).all_process_info()
    except RPC_ERRORS as exc:
        r.supervisor_error = _short(exc)
        return
    r.processes = {full_name(i): str(i.get("statename", "UNKNOWN")) for i in infos}


def _gather_buffer(r: Report, settings: Settings) -> None:
    buffer = JsonlFile(settings.buffer_path)
    r.buffer_path = str(buffer.path)
    if buffer.path.exists():
        # unreadable here: the writer's own figures (from Redis) stay
        with contextlib.suppress(OSError):
            r.buffer_rows, r.buffer_bytes = buffer.count()


async def gather(settings: Settings, supervisor_url: str = "") -> Report:
    now = utcnow()
    r = Report(
        mode=settings.ib_api_mode,
        prefix=settings.redis_prefix,
        now=now,
        stale_s=stale_after_s(settings.poll_interval_s),
        supervisor_url=mask_url(supervisor_url),
    )
    tasks = [_gather_redis(r, settings), _gather_db(r, settings)]
    if supervisor_url:
        tasks.append(asyncio.to_thread(_gather_supervisor, r, supervisor_url))
    await asyncio.gather(*tasks)
    _gather_buffer(r, settings)
    return r
