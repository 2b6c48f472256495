"""/api/series over real PostgreSQL: the values are the table's, a gap stays a gap, a long
window's buckets keep each bucket's first, last, lowest and highest row, and the ticks that
carried Greeks or left legs out are marked."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from ops.web.series import GREEKS, ms
from shared.clock import grid_floor, utcnow
from tests.integration.web import tables
from tests.web_console import StartWeb


def values(points: list[list[Any]]) -> list[list[Any]]:
    """The drawn points, without the null breaks."""
    return [p for p in points if p[1] is not None]


def break_between(points: list[list[Any]], a: datetime, b: datetime) -> bool:
    """A null point right between the rows at `a` and `b` (nothing drawn across)."""
    for before, mid, after in zip(points, points[1:], points[2:], strict=False):
        if mid[1] is None and before[0] == ms(a) and after[0] == ms(b):
            return ms(a) < mid[0] < ms(b)
    return False


def portfolio_rows(rng: random.Random, t0: datetime, step_s: int, n: int) -> list[tuple[Any, ...]]:
    return [
        (
            t0 + timedelta(seconds=step_s * i),
            "PORTFOLIO",
            rng.uniform(-500, 500),
            rng.uniform(0, 5),
            rng.uniform(-100, 100),
            rng.uniform(-50, 0),
            600.0 + i,
        )
        for i in range(n)
    ]


async def test_a_window_of_rows_is_the_table_gaps_are_not_joined(
    pg_url: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    rng = random.Random(7)
    t0 = grid_floor(utcnow(), 5) - timedelta(seconds=5 * 40)
    stored = {}
    for account in ("DU1", "DU2", "ALL"):
        rows = [r for i, r in enumerate(portfolio_rows(rng, t0, 5, 40)) if not 10 <= i < 14]
        await tables.greeks(pg_url, rows, account=account)
        stored[account] = rows
    web = await start_web()

    status, body = await web.json("/api/series?account=DU1&window=1h")
    assert status == 200, body
    rows = stored["DU1"]
    assert body["accounts"] == ["ALL", "DU1", "DU2"]
    assert body["account"] == "DU1" and body["scope"] == "PORTFOLIO"
    assert body["downsampled"] is False and body["rows"] == len(rows)
    for i, g in enumerate(GREEKS):
        assert values(body["series"][g]) == [[ms(r[0]), r[2 + i]] for r in rows]
    newest = rows[-1]
    assert body["newest"]["timestamp"] == newest[0].isoformat()
    assert [body["newest"][g] for g in GREEKS] == list(newest[2:6])
    assert body["newest"]["underlying_price"] == newest[6]
    # rows 10-13 are missing: a gap from row 9 to row 14, a break in every series
    before, after = t0 + timedelta(seconds=45), t0 + timedelta(seconds=70)
    assert {"from": before.isoformat(), "to": after.isoformat(), "seconds": 25.0} in body["gaps"]
    assert all(break_between(body["series"][g], before, after) for g in GREEKS)
    # and the window's start, before the first row, is no record either
    assert body["gaps"][0]["from"] == body["from"] and body["gaps"][0]["to"] == t0.isoformat()

    status, body = await web.json("/api/series?window=1h")
    assert body["account"] == "ALL"  # several accounts: the combined book first
    assert values(body["series"]["delta"]) == [[ms(r[0]), r[2]] for r in stored["ALL"]]


def expected_buckets(
    rows: list[tuple[Any, ...]], start: datetime, bucket_s: float
) -> dict[str, list[list[Any]]]:
    """Per Greek, each bucket's first, last, lowest and highest row (times in ms, sorted)."""
    by_bucket: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        by_bucket[math.floor((r[0] - start).total_seconds() / bucket_s)].append(r)
    out: dict[str, list[list[Any]]] = {g: [] for g in GREEKS}
    for b in sorted(by_bucket):
        group = sorted(by_bucket[b])
        for i, g in enumerate(GREEKS):
            pick = [group[0], group[-1], min(group, key=lambda r: r[2 + i])]
            pick.append(max(group, key=lambda r: r[2 + i]))
            out[g] += sorted([ms(r[0]), r[2 + i]] for r in set(pick))
    return out


async def test_a_long_window_keeps_first_last_and_extremes_of_every_bucket(
    pg_url: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    rng = random.Random(11)
    now = utcnow()
    t0 = grid_floor(now - timedelta(days=1), 30) + timedelta(minutes=2)
    rows = portfolio_rows(rng, t0, 30, int((now - t0).total_seconds() // 30))
    spike = len(rows) // 3
    rows[spike] = (*rows[spike][:2], 9_999.0, *rows[spike][3:])  # the day's highest delta
    rows[spike + 1] = (*rows[spike + 1][:2], -9_999.0, *rows[spike + 1][3:])
    hole = rows[1000:1040]  # 20 minutes without rows
    rows = [r for r in rows if r not in hole]
    await tables.greeks(pg_url, rows, account="DU1")
    # the poll interval makes a day 2880 ticks: read in buckets
    web = await start_web(BRIDGE_POLL_INTERVAL_S="30")

    status, body = await web.json("/api/series?account=DU1&window=1d")
    assert status == 200, body
    assert body["downsampled"] is True and body["bucket_s"] == 216.0
    start = datetime.fromisoformat(body["from"])
    shown = [r for r in rows if start <= r[0] <= datetime.fromisoformat(body["to"])]
    assert body["rows"] == len(shown)
    want = expected_buckets(shown, start, body["bucket_s"])
    for g in GREEKS:
        got = values(body["series"][g])
        assert got == want[g]
        assert len(got) <= 4 * 402 < len(shown)  # at most 4 points a bucket, fewer than rows
    deltas = values(body["series"]["delta"])
    first, last = shown[0], shown[-1]
    assert deltas[0] == [ms(first[0]), first[2]] and deltas[-1] == [ms(last[0]), last[2]]
    assert [ms(rows[spike][0]), 9_999.0] in deltas and [ms(rows[spike + 1][0]), -9_999.0] in deltas
    # the hole is a gap, not a line
    before, after = rows[999][0], rows[1000][0]
    assert {"from": before.isoformat(), "to": after.isoformat(), "seconds": 1230.0} in body["gaps"]
    assert all(break_between(body["series"][g], before, after) for g in GREEKS)


async def test_ticks_that_carried_greeks_or_left_legs_out_are_marked(
    pg_url: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    t0 = grid_floor(utcnow(), 5) - timedelta(seconds=50)
    ticks = [t0 + timedelta(seconds=5 * i) for i in range(10)]
    await tables.greeks(
        pg_url, [(t, "PORTFOLIO", 1.0, 0.1, 2.0, -3.0, 600.0) for t in ticks], account="DU1"
    )
    carried, excluded = {3: 2}, {6: 1}
    rows = []
    for i, t in enumerate(ticks):
        out, kept = excluded.get(i, 0), carried.get(i, 0)
        rows.append(
            tables.exposure_row(
                t,
                "DU1",
                "PORTFOLIO",
                1.0,
                legs=4,
                legs_fresh=4 - out - kept,
                legs_carried=kept,
                legs_excluded=out,
            )
        )
    await tables.copy(pg_url, "portfolio_exposure", tables.EXPOSURE_COLUMNS, rows)
    web = await start_web()
    _, body = await web.json("/api/series?account=DU1")
    assert body["completeness"] == "portfolio_exposure"
    shown = [
        (m["timestamp"], m["kind"], m["legs_carried"], m["legs_excluded"]) for m in body["marks"]
    ]
    assert shown == [
        (ticks[3].isoformat(), "carried", 2, 0),
        (ticks[6].isoformat(), "excluded", 0, 1),
    ]
