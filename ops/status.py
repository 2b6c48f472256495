"""`bridge status`: the bridge's state on one screen, and its classification.

Gathering (`gather`) reads, each with a short timeout: the collector's `link` hash and
heartbeat, the stream lengths, the writers group (pending entries per consumer and entries not
yet delivered), the dead-letter stream, each writer's state hash (breaker, buffer) and heartbeat
(one per consumer name, `ops/status_writers.py`),
the buffer file when it is on this machine, the newest PORTFOLIO row in PostgreSQL (and each
account's), and every
process of supervisord (XML-RPC, when BRIDGE_SUPERVISOR_URL is set).

Classification (`classify`, a pure function), with `stale_s` = max(3 x BRIDGE_POLL_INTERVAL_S,
15 s):

- **down** (exit 2): no new rows are being produced, or nothing can be known about them:
  Redis is unreachable; or the collector's heartbeat is missing (collector not running) while
  the link is not `paused`; or the last tick is older than `stale_s` (or there is none) while
  the link is not `paused`.
- **degraded** (exit 1), when not down: rows are produced and kept safe (in Redis, the spool or
  the buffer) but do not reach PostgreSQL as they should, or something needs a look: the link
  is not `connected` (e.g. `paused` in the nightly reset window); no writer's heartbeat is
  alive; a stopped writer has pending entries or a buffer that holds rows; the breaker is
  open; the buffer holds rows; the newest PORTFOLIO row is older than `stale_s` (or there is
  none); PostgreSQL is unreachable; more than BACKLOG_LIMIT entries wait in the streams
  (pending + not yet delivered); a supervised process is not RUNNING; or supervisord is
  configured but unreachable.
- **healthy** (exit 0): none of the above.

Dead letters are shown but do not change the classification (each was a WARN in api_logs).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast

from ops import status_writers
from ops.status_gather import gather
from ops.status_report import (
    BACKLOG_LIMIT,
    DEGRADED,
    DOWN,
    EXIT_CODES,
    HEALTHY,
    MIN_STALE_S,
    Report,
    stale_after_s,
)
from shared.config import scrub, scrub_all

__all__ = [
    "BACKLOG_LIMIT",
    "DEGRADED",
    "DOWN",
    "EXIT_CODES",
    "HEALTHY",
    "MIN_STALE_S",
    "Report",
    "classify",
    "gather",
    "render",
    "stale_after_s",
    "to_json",
]


def classify(r: Report) -> tuple[str, list[str]]:
    """(healthy | degraded | down, the reasons); see the module docstring."""
    if r.redis_error is not None:
        down, degraded = [f"Redis unreachable: {r.redis_error}"], []
    else:
        down, degraded = _collector_down(r), _pipeline_degraded(r)
    degraded += _storage_degraded(r)
    if down:
        return DOWN, down + degraded
    if degraded:
        return DEGRADED, degraded
    return HEALTHY, []


def _collector_down(r: Report) -> list[str]:
    """No collector, or no recent tick (not while the collector is paused)."""
    if r.link == "paused":
        return []
    down: list[str] = []
    if r.heartbeat_age_s is None:
        down.append("collector heartbeat missing: the collector is not running")
    if r.last_tick_age_s is None:
        down.append("no tick recorded yet")
    elif r.last_tick_age_s > r.stale_s:
        down.append(f"last tick {r.last_tick_age_s:.0f} s ago (limit {r.stale_s:.0f} s)")
    return down


def _pipeline_degraded(r: Report) -> list[str]:
    """What Redis tells about the link, the writer, its breaker and the streams."""
    degraded: list[str] = []
    if r.link != "connected":
        since = f" since {r.link_since}" if r.link_since else ""
        why = f": {r.link_reason}" if r.link_reason else ""
        degraded.append(f"link {r.link or 'unknown'}{since}{why}")
    if r.writer_alive is False:
        degraded.append("writer heartbeat missing: the writer is not running")
    degraded += status_writers.reasons(r.writers)
    if r.breaker == "open":
        why = f": {r.breaker_reason}" if r.breaker_reason else ""
        degraded.append(f"breaker open since {r.breaker_since or '?'}{why}")
    if r.backlog > BACKLOG_LIMIT:
        degraded.append(f"{r.backlog} stream entries wait for the writer")
    return degraded


def _storage_degraded(r: Report) -> list[str]:
    """The buffer file, PostgreSQL and supervisord's processes."""
    degraded: list[str] = []
    if r.buffer_rows:
        degraded.append(f"{r.buffer_rows} rows in the buffer {r.buffer_path}".rstrip())
    if r.db_error is not None:
        degraded.append(f"PostgreSQL unreachable: {r.db_error}")
    elif r.last_row_age_s is None:
        degraded.append("no PORTFOLIO row in PostgreSQL")
    elif r.last_row_age_s > r.stale_s:
        degraded.append(
            f"newest PORTFOLIO row is {r.last_row_age_s:.0f} s old (limit {r.stale_s:.0f} s)"
        )
    elif len(r.accounts) > 1:  # several accounts: each one's rows must be fresh
        degraded += [
            f"newest PORTFOLIO row of account {a} is {age:.0f} s old (limit {r.stale_s:.0f} s)"
            for a, age in sorted(r.accounts.items())
            if age > r.stale_s
        ]
    if r.supervisor_error is not None:
        degraded.append(f"supervisord unreachable: {r.supervisor_error}")
    for name, state in sorted(r.processes.items()):
        if state != "RUNNING":
            degraded.append(f"{name} is {state}")
    return degraded


def to_json(r: Report) -> dict[str, Any]:
    level, reasons = classify(r)
    body = asdict(r)
    body["now"] = r.now.isoformat()
    out: dict[str, Any] = {
        "healthy": level == HEALTHY,
        "status": level,
        "reasons": reasons,
        "pending": r.pending,
        "backlog": r.backlog,
    }
    out.update(body)
    # texts read from Redis were written by other processes: hide this configuration's secrets
    return cast(dict[str, Any], scrub_all(out))


# ---- rendering -----------------------------------------------------------------------------
def _age(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s ago"
    if value < 7200:
        return f"{value / 60:.1f} min ago"
    return f"{value / 3600:.1f} h ago"


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


def render(r: Report) -> str:
    level, reasons = classify(r)
    lines = [f"bridge status: {level.upper()}   ({r.now.isoformat(timespec='seconds')})"]
    rows: list[tuple[str, str]] = [("mode", r.mode), ("redis prefix", r.prefix)]
    if r.redis_error is not None:
        rows.append(("redis", f"UNREACHABLE: {r.redis_error}"))
    else:
        rows += _redis_rows(r)
    rows += _storage_rows(r)
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if reasons:
        lines.append("why:")
        lines += [f"  - {reason}" for reason in reasons]
    return scrub("\n".join(lines))


def _with_since(state: str, since: str | None, reason: str) -> str:
    return state + (f" since {since}" if since else "") + (f" ({reason})" if reason else "")


def _redis_rows(r: Report) -> list[tuple[str, str]]:
    rows = [
        ("link", _with_since(r.link or "unknown", r.link_since, r.link_reason)),
        ("market data", _market_data(r.market_data)),
        ("collector heartbeat", _age(r.heartbeat_age_s)),
        ("last tick", _age(r.last_tick_age_s)),
        ("streams", "  ".join(f"{k}={v}" for k, v in r.streams.items()) or "-"),
    ]
    for stream, by in r.pending_by_consumer.items():
        shown = ", ".join(f"{c}={n}" for c, n in by.items()) or "no consumer"
        waiting = r.undelivered.get(stream, 0)
        rows.append((f"pending {stream}", f"{shown}; not yet delivered: {waiting}"))
    rows.append(("dead letters", _num(r.dead_letters)))
    rows.append(("writer", {True: "alive", False: "NOT RUNNING", None: "?"}[r.writer_alive]))
    rows += [(f"writer {n}", status_writers.describe(v)) for n, v in r.writers.items()]
    rows.append(("breaker", _with_since(r.breaker, r.breaker_since, r.breaker_reason)))
    return rows


def _market_data(m: dict[str, str]) -> str:
    """Lines in use of the working budget, streaming or rotating, and the data types."""
    if "lines_in_use" not in m:
        return "-"
    working, budget = m.get("lines_working", "?"), m.get("lines_budget", "?")
    text = f"{m['lines_in_use']}/{working} lines for {m.get('lines_wanted', '?')} contracts"
    if working != budget:
        text += f" (budget {budget}, lowered by the gateway's limit)"
    if m.get("rotating") == "1":
        text += f", rotating: about {m.get('rotation_s', '?')} s per rotation"
    else:
        text += ", streaming"
    kinds = m.get("market_data", "")
    return text + (f"; data {kinds}" if kinds else "")


def _storage_rows(r: Report) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    buffer = f"{_num(r.buffer_rows)} rows, {_num(r.buffer_bytes)} bytes"
    if r.buffer_path:
        buffer += f" ({r.buffer_path})"
    rows.append(("buffer", buffer))
    if r.db_error is not None:
        rows.append(("postgresql", f"UNREACHABLE: {r.db_error}"))
    else:
        newest = "none" if r.last_row_ts is None else f"{r.last_row_ts} ({_age(r.last_row_age_s)})"
        rows.append(("newest PORTFOLIO row", newest))
        if len(r.accounts) > 1:
            shown = (f"{a or '(none)'} {_age(age)}" for a, age in sorted(r.accounts.items()))
            rows.append(("newest row by account", ", ".join(shown)))
    if r.watchdog:
        rows.append(("watchdog", "  ".join(f"{k}={v}" for k, v in sorted(r.watchdog.items()))))
    if not r.supervisor_url:
        rows.append(("supervisord", "not configured (BRIDGE_SUPERVISOR_URL)"))
    elif r.supervisor_error is not None:
        rows.append(("supervisord", f"UNREACHABLE at {r.supervisor_url}: {r.supervisor_error}"))
    else:
        rows += [(f"process {name}", state) for name, state in sorted(r.processes.items())]
    return rows


# ---- gathering -----------------------------------------------------------------------------
