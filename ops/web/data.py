"""The JSON bodies of /api/series, /api/exposure and /api/logs, read through the console's
PostgreSQL reader (every read bounded); a read that fails raises READ_ERRORS to the handler."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from database.web_reads import Schema, Span
from ops.web import series as s
from ops.web.console import Console

EXPOSURE_MAX_AGE = timedelta(days=7)  # an older book is not shown as the current one
LOGS_MAX_AGE = timedelta(days=7)
PORTFOLIO = "PORTFOLIO"


def _schema_json(schema: Schema) -> dict[str, bool]:
    return {
        "account_column": schema.account_column,
        "exposure_table": schema.exposure_table,
    }


async def resolve_account(console: Console, account: str | None) -> tuple[Schema, list[str], str]:
    schema, accounts = await console.context()
    return schema, accounts, s.default_account(accounts) if account is None else account


async def series_body(
    console: Console, scope: str, account: str | None, window: str, now: datetime
) -> dict[str, Any]:
    p = s.plan(window, now, console.poll_s)  # ValueError on an unknown window
    schema, accounts, account = await resolve_account(console, account)
    head: dict[str, Any] = {
        "scope": scope,
        "account": account,
        "accounts": accounts,
        "window": window,
        "windows": list(s.WINDOWS),
        "now": now.isoformat(),
        "poll_s": console.poll_s,
        "schema": _schema_json(schema),
    }
    if not schema.greeks_table:
        return {**head, **_empty(p), "note": "no portfolio_greeks table yet"}
    newest = await console.reader.newest(schema, scope, account)
    head["newest"] = s.newest_json(newest, now)
    key = (scope, account, window)
    cached = console.cached_series(key) if p.bucket_s is not None else None
    if cached is None:
        cached = await _window(console, schema, scope, account, p)
        if p.bucket_s is not None:
            console.keep_series(key, cached, p.bucket_s)
    return {**head, **cached}


def _empty(p: s.Plan) -> dict[str, Any]:
    return {
        "from": p.start.isoformat(),
        "to": p.end.isoformat(),
        "bucket_s": p.bucket_s,
        "downsampled": p.bucket_s is not None,
        "gap_s": p.gap_s,
        "rows": 0,
        "truncated": False,
        "newest": None,
        "series": {g: [] for g in s.GREEKS},
        "gaps": [g.as_json() for g in s.all_gaps([], None, None, p)],
        "gaps_truncated": False,
        "marks": [],
        "completeness": "unknown",
    }


async def _window(
    console: Console, schema: Schema, scope: str, account: str, p: s.Plan
) -> dict[str, Any]:
    """The window's points, gaps and completeness marks."""
    r = console.reader
    span = Span(scope, account, p.start, p.end)
    inner = await r.gaps(schema, span, p.gap_s, s.GAP_LIMIT)
    pairs = [(row["prev"], row["ts"]) for row in inner]
    if p.bucket_s is None:
        rows = await r.raw_series(schema, span, s.RAW_ROW_LIMIT)
        points = s.raw_points(rows)
        count, truncated = len(rows), len(rows) >= s.RAW_ROW_LIMIT
        first = rows[0]["timestamp"] if rows else None
        last = rows[-1]["timestamp"] if rows else None
    else:
        limit = s.TARGET_BUCKETS + 2
        buckets = await r.bucket_series(schema, span, p.bucket_s, limit)
        points = s.bucket_points(buckets)
        count, truncated = sum(int(b["n"]) for b in buckets), len(buckets) >= limit
        first = buckets[0]["first_ts"] if buckets else None
        last = buckets[-1]["last_ts"] if buckets else None
        pairs = s.merge_gaps(pairs + s.breaks_between_buckets(buckets, p))
    gaps = s.all_gaps(pairs, first, last, p)
    body: dict[str, Any] = {
        "from": p.start.isoformat(),
        "to": p.end.isoformat(),
        "bucket_s": p.bucket_s,
        "downsampled": p.bucket_s is not None,
        "gap_s": p.gap_s,
        "rows": count,
        "truncated": truncated,
        "series": {g: s.break_at_gaps(pts, gaps) for g, pts in points.items()},
        "gaps": [g.as_json() for g in gaps],
        "gaps_truncated": len(inner) >= s.GAP_LIMIT,
    }
    if schema.exposure_table:
        marks = await r.marks(span, p.bucket_s, s.MARK_LIMIT)
        body["marks"] = [s.mark_json(m) for m in marks]
        body["completeness"] = "portfolio_exposure"
    else:
        body["marks"] = []
        body["completeness"] = "unknown: no portfolio_exposure table in this database"
    return body


def _row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in dict(row).items() if k != "timestamp"}
    return out


async def exposure_body(console: Console, account: str | None, now: datetime) -> dict[str, Any]:
    """The newest book by underlying: from portfolio_exposure, else (no such table, or no row
    in it yet) from portfolio_greeks' per-underlying rows with dollars from their own price."""
    schema, accounts, account = await resolve_account(console, account)
    since = now - EXPOSURE_MAX_AGE
    head: dict[str, Any] = {"account": account, "accounts": accounts, "now": now.isoformat()}
    rows: list[Any] = []
    source = None
    if schema.exposure_table:
        rows = await console.reader.exposure(account, since)
        source = "portfolio_exposure" if rows else None
    if not rows and schema.greeks_table:
        rows = await console.reader.exposure_fallback(schema, account, since)
        source = "portfolio_greeks" if rows else None
    if source is None:
        note = "no exposure rows in the last 7 days"
        if not schema.exposure_table:
            note += (
                " (no portfolio_exposure table; per-underlying rows need BRIDGE_PER_UNDERLYING=1)"
            )
        return {**head, "source": None, "note": note, "timestamp": None, "rows": []}
    ts: datetime = rows[0]["timestamp"]
    scopes = [_row_json(r) for r in rows]
    note = (
        "from portfolio_exposure"
        if source == "portfolio_exposure"
        else "from portfolio_greeks' per-underlying rows (no portfolio_exposure rows): "
        "dollars are net delta x price and gamma x price^2 / 100"
    )
    return {
        **head,
        "source": source,
        "note": note,
        "timestamp": ts.isoformat(),
        "age_s": (now - ts).total_seconds(),
        "portfolio": next((r for r in scopes if r["scope"] == PORTFOLIO), None),
        "rows": [r for r in scopes if r["scope"] != PORTFOLIO],
    }


async def logs_body(console: Console, limit: int, now: datetime) -> dict[str, Any]:
    schema, _ = await console.context()
    if not schema.api_logs_table:
        return {"rows": [], "note": "no api_logs table yet"}
    rows = await console.reader.problem_logs(now - LOGS_MAX_AGE, limit)
    return {
        "rows": [
            {
                "id": r["id"],
                "timestamp": r["timestamp"].isoformat(),
                "api_mode": r["api_mode"],
                "status": r["status"],
                "message": r["message"],
            }
            for r in rows
        ]
    }
