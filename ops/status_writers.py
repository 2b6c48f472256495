"""`bridge status`'s view of each writer of the group: its consumer name, its heartbeat, its
pending entries, its breaker and buffer. Pure: `gather` reads, `combine` joins, `reasons` judges.

A writer has a heartbeat key of its own (`Keys.writer_heartbeat_of`). A writer of an older
version has only the single `Keys.writer_heartbeat`: while that key lives, a consumer without a
key of its own may be that writer, so it is shown as unknown, never as not running.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.codec import as_text
from shared.names import Keys


@dataclass
class WriterView:
    alive: bool | None  # None: unknown (a writer of an older version may be this one)
    pending: int = 0
    breaker: str = ""
    since: str = ""
    reason: str = ""
    buffer_rows: int | None = None


@dataclass
class WriterKeys:
    """What Redis holds about the writers."""

    alive: set[str]
    states: dict[str, dict[str, str]]
    legacy_alive: bool


async def gather(client: aioredis.Redis, keys: Keys) -> WriterKeys:
    beat, state = keys.writer_heartbeat_of(""), keys.writer_state_of("")
    alive = {as_text(k).removeprefix(beat) async for k in client.scan_iter(match=beat + "*")}
    states: dict[str, dict[str, str]] = {}
    async for k in client.scan_iter(match=state + "*"):
        raw = await client.hgetall(k)
        states[as_text(k).removeprefix(state)] = {as_text(a): as_text(b) for a, b in raw.items()}
    legacy = bool(await client.exists(keys.writer_heartbeat))
    return WriterKeys(alive, states, legacy)


def combine(
    pending_by_consumer: dict[str, dict[str, int]], got: WriterKeys
) -> dict[str, WriterView]:
    """One view per consumer name known to the group or to Redis' writer keys."""
    pending: dict[str, int] = {}
    for by in pending_by_consumer.values():
        for name, n in by.items():
            pending[name] = pending.get(name, 0) + n
    views: dict[str, WriterView] = {}
    for name in sorted({*pending, *got.alive, *got.states}):
        alive: bool | None = name in got.alive
        if not alive and got.legacy_alive:
            alive = None
        state = got.states.get(name, {})
        view = WriterView(
            alive,
            pending.get(name, 0),
            state.get("breaker", ""),
            state.get("since", ""),
            state.get("reason", ""),
        )
        with contextlib.suppress(ValueError):
            view.buffer_rows = int(state["buffer_rows"]) if "buffer_rows" in state else None
        views[name] = view
    return views


def any_alive(views: dict[str, WriterView], legacy_alive: bool) -> bool:
    return legacy_alive or any(v.alive for v in views.values())


def reasons(views: dict[str, WriterView]) -> list[str]:
    """Why the writers degrade the bridge: a stopped writer's entries or buffer wait."""
    out: list[str] = []
    for name, v in views.items():
        if v.alive is not False:
            continue
        if v.pending:
            out.append(
                f"writer {name} is not running: its {v.pending} pending entries wait for "
                "another writer's claim (BRIDGE_CLAIM_IDLE_S) or its restart"
            )
        if v.buffer_rows:
            out.append(
                f"writer {name} is not running and its buffer holds {v.buffer_rows} rows: "
                f"start it again (BRIDGE_WRITER_CONSUMER={name}) or `bridge drain --buffer PATH`"
            )
    return out


def describe(v: WriterView) -> str:
    alive = {True: "alive", False: "NOT RUNNING", None: "? (an older writer runs)"}[v.alive]
    text = f"{alive}, {v.pending} pending"
    if v.breaker:
        text += f", breaker {v.breaker}"
    if v.buffer_rows:
        text += f", {v.buffer_rows} rows buffered"
    return text
