"""Several accounts end to end over real processes: IB Gateway simulator with two accounts ->
collector (SOCKET) -> Redis -> writer -> PostgreSQL. Each account's rows equal its own book, the
ALL row the combined book, and `portfolio_exposure` has a row at every row's timestamp. Two
bridges reading one account each into one database both land in full."""

from __future__ import annotations

import asyncpg
import pytest

from simulator.book import linked_book
from simulator.portfolio import SimPortfolio, combined, default_portfolio
from tests.e2e.test_socket_pipeline import Spawn, bridge_envs
from tests.fixtures import ACCOUNT, StartGateway
from tests.helpers import wait_for

B = "DU7654321"
BOOK2 = (6, 3, 1)


def books() -> tuple[SimPortfolio, SimPortfolio]:
    first = default_portfolio(ACCOUNT, step_s=0)
    return first, linked_book(first, *BOOK2, account=B)


def net(book: SimPortfolio) -> tuple[float, float, float, float]:
    g = book.net_greeks_at_step(0)
    return (g.delta, g.gamma, g.vega, g.theta)


async def fetch(pg_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url)
    try:
        return list(await conn.fetch(sql))
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return []
    finally:
        await conn.close()


GREEKS = (
    "SELECT timestamp, account, delta, gamma, vega, theta FROM portfolio_greeks"
    " WHERE contract = 'PORTFOLIO' ORDER BY timestamp, account"
)
EXPOSURE = (
    "SELECT timestamp, account, scope, delta, legs, legs_excluded FROM portfolio_exposure"
    " ORDER BY timestamp, account, scope"
)


async def accounts_seen(pg_url: str, want: set[str], n: int) -> bool:
    rows = await fetch(pg_url, GREEKS)
    return all(sum(1 for r in rows if r["account"] == a) >= n for a in want)


async def test_all_accounts_each_book_and_the_combined_book(
    spawn: Spawn, pg_url: str, redis_url: str, prefix: str, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(extra=["--account2", B, "--book2", ":".join(map(str, BOOK2))])
    env = bridge_envs(pg_url, redis_url, prefix, gateway.port) | {"IB_ACCOUNT": "ALL"}
    spawn("writer", env)
    spawn("collector", env)
    await wait_for(lambda: accounts_seen(pg_url, {ACCOUNT, B, "ALL"}, 3), 40, "rows of all three")
    first, second = books()
    want = {ACCOUNT: net(first), B: net(second), "ALL": net(combined([first, second]))}
    rows = await fetch(pg_url, GREEKS)
    for r in rows:
        assert (r["delta"], r["gamma"], r["vega"], r["theta"]) == pytest.approx(
            want[r["account"]], rel=1e-9, abs=1e-9
        ), r["account"]
    exposure = await fetch(pg_url, EXPOSURE)
    greeks_keys = {(r["timestamp"], r["account"]) for r in rows}
    exposure_keys = {(e["timestamp"], e["account"]) for e in exposure if e["scope"] == "PORTFOLIO"}
    assert greeks_keys <= exposure_keys | {max(greeks_keys)}  # the newest tick may be in flight
    assert all(e["legs_excluded"] == 0 for e in exposure)


async def test_two_bridges_reading_two_accounts_into_one_database_both_land(
    spawn: Spawn, pg_url: str, redis_url: str, prefix: str, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(extra=["--account2", B, "--book2", ":".join(map(str, BOOK2))])
    for n, (account, client_id) in enumerate(((ACCOUNT, "21"), (B, "22"))):
        env = bridge_envs(pg_url, redis_url, f"{prefix}b{n}:", gateway.port)  # cleaned up too
        env |= {
            "IB_ACCOUNT": account,
            "IB_CLIENT_ID": client_id,
            "BRIDGE_BUFFER_PATH": f"buffer{n}.jsonl",
            "BRIDGE_SPOOL_PATH": f"spool{n}.jsonl",
        }
        spawn("writer", env)
        spawn("collector", env)
    await wait_for(lambda: accounts_seen(pg_url, {ACCOUNT, B}, 6), 40, "rows of both bridges")
    rows = await fetch(pg_url, GREEKS)
    first, second = books()
    stamps_a = [r["timestamp"] for r in rows if r["account"] == ACCOUNT]
    stamps_b = [r["timestamp"] for r in rows if r["account"] == B]
    assert set(stamps_a) & set(stamps_b)  # the same ticks: both kept, none skipped as stored
    assert len(stamps_a) == len(set(stamps_a)) and len(stamps_b) == len(set(stamps_b))
    assert "ALL" not in {r["account"] for r in rows}
    for r in rows:
        book = first if r["account"] == ACCOUNT else second
        assert (r["delta"], r["gamma"], r["vega"], r["theta"]) == pytest.approx(
            net(book), rel=1e-9, abs=1e-9
        )
