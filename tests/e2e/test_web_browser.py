"""The risk console in a real browser (headless Chromium through Selenium):

- over a database with known rows: the page loads without a console error, the numbers in
  large type are the newest row's, the chart draws every row of the window (gaps and marked
  ticks included), the health panel, the book and the warnings are there; a row inserted
  afterwards appears without a reload; another account is one choice away;
- over the demo pipeline (its supervisord runs `bridge:web`): the console at the demo's URL
  shows the newest PORTFOLIO row of PostgreSQL and the next ones as they arrive, HEALTHY.

A screenshot of each is saved under the test's tmp_path (its path is printed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ops.demo import Demo, render
from ops.embedded import pg_private
from ops.web.page import fmt
from ops.web.series import GREEKS, ms
from shared.clock import grid_floor, utcnow
from tests.e2e.browser import chart, chromium, console_errors, shown, wait_for
from tests.e2e.test_supervisord import Supervised, pg
from tests.helpers import bridge_env
from tests.integration.web import tables
from tests.web_console import StartWebProcess, start_web_process, web_env

__all__ = ["start_web_process"]
POLL_S = 3.0  # an hour is 1200 ticks: the chart gets every row


def headline(driver: Any) -> dict[str, tuple[str, float | None]]:
    out = {}
    for g in GREEKS:
        text, value = shown(driver, f"v-{g}")
        out[g] = (text, float(value) if value else None)
    return out


def screenshot(driver: Any, path: Path) -> None:
    driver.save_screenshot(str(path))
    print(f"\nscreenshot of the console: {path}")
    assert path.stat().st_size > 20_000


async def test_the_console_shows_the_rows_and_a_new_one_without_reload(
    pg_url: str,
    redis: aioredis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    start_web_process: StartWebProcess,
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    end = grid_floor(utcnow(), POLL_S) - timedelta(seconds=30)
    ticks = [end - timedelta(seconds=POLL_S * i) for i in range(120, -1, -1)]
    ticks = [t for i, t in enumerate(ticks) if not 50 <= i < 60]  # a 33 s hole
    book = {"ALL": 1.0, "DU1": 0.25, "DU2": 0.75}
    for account, k in book.items():
        rows = [
            (
                t,
                "PORTFOLIO",
                k * (1500 + 40 * i % 97),
                k * (2.5 + i % 7 / 10),
                k * (-800 + i),
                k * (-120.25 - i % 5),
                600.0 + i / 8,
            )
            for i, t in enumerate(ticks)
        ]
        await tables.greeks(pg_url, rows, account=account)
    marked = {ticks[20]: (1, 0), ticks[80]: (0, 2)}  # (carried, excluded)
    exposure = [
        tables.exposure_row(
            t,
            "ALL",
            "PORTFOLIO",
            1.0,
            legs=6,
            legs_fresh=6 - sum(ce),
            legs_carried=ce[0],
            legs_excluded=ce[1],
        )
        for t, ce in marked.items()
    ]
    exposure += [
        tables.exposure_row(ticks[-1], "ALL", scope, k, legs_fresh=4, legs_carried=0)
        for scope, k in (("PORTFOLIO", 3.0), ("SPY", 2.0), ("QQQ", -1.0), ("IWM", 0.5))
    ]
    await tables.copy(pg_url, "portfolio_exposure", tables.EXPOSURE_COLUMNS, exposure)
    await tables.logs(pg_url, [(utcnow(), "WARN", "SPY 600C carried forward 70 s")])
    await tables.running_bridge(redis, prefix, utcnow())
    web = await start_web_process(
        web_env(pg_url, redis_url, prefix, tmp_path, BRIDGE_POLL_INTERVAL_S=str(POLL_S))
    )
    stored = await tables.fetch(
        pg_url,
        "SELECT * FROM portfolio_greeks WHERE account = 'ALL' ORDER BY timestamp",
    )
    newest = stored[-1]

    with chromium(tmp_path) as driver:
        driver.get(web.url + "/")
        wait_for(lambda: chart(driver, "delta")["points"] == str(len(stored)), 30, "the chart")
        assert console_errors(driver) == []
        for g in GREEKS:
            assert headline(driver)[g] == (fmt(newest[g]), newest[g])
            drawn = chart(driver, g)
            assert drawn["points"] == str(len(stored))
            assert (int(drawn["last-t"]), float(drawn["last-value"])) == (
                ms(newest["timestamp"]),
                newest[g],
            )
        # the hole is shaded, not joined; the two marked ticks are marked
        gaps = driver.find_elements("css selector", "#chart-delta rect.gap")
        assert len(gaps) == 3  # before the first row, the hole, after the last row
        assert len(driver.find_elements("css selector", "#chart-delta rect.mark-carried")) == 1
        assert len(driver.find_elements("css selector", "#chart-delta rect.mark-excluded")) == 1
        assert driver.find_element("id", "state").text in ("HEALTHY", "DEGRADED")
        assert "link" in driver.find_element("id", "health-list").text
        book_text = driver.find_element("id", "book-rows").text
        assert [line.split()[0] for line in book_text.splitlines()] == [
            "PORTFOLIO",
            "SPY",
            "QQQ",
            "IWM",
        ]
        assert "carried forward 70 s" in driver.find_element("id", "log-rows").text
        screenshot(driver, tmp_path / "web-console.png")

        # a new row: shown within a refresh or two, the page not reloaded
        driver.execute_script("window.stillThere = 'yes';")
        new_ts = utcnow() - timedelta(seconds=1)
        await tables.greeks(
            pg_url, [(new_ts, "PORTFOLIO", 4321.25, 0.0625, 777.25, -99.5, 612.0)], account="ALL"
        )
        wait_for(lambda: headline(driver)["delta"][1] == 4321.25, 20, "the new row's delta")
        assert headline(driver) == {
            "delta": ("4,321", 4321.25),
            "gamma": ("0.0625", 0.0625),
            "vega": ("777.25", 777.25),
            "theta": ("-99.50", -99.5),
        }
        drawn = chart(driver, "vega")
        assert (int(drawn["last-t"]), float(drawn["last-value"])) == (ms(new_ts), 777.25)
        assert drawn["points"] == str(len(stored) + 1)
        assert driver.execute_script("return window.stillThere;") == "yes"

        # another account: one choice, no reload either
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element("id", "account")).select_by_value("DU1")
        du1 = (
            await tables.fetch(
                pg_url,
                "SELECT delta FROM portfolio_greeks WHERE account = 'DU1' "
                "ORDER BY timestamp DESC LIMIT 1",
            )
        )[0]["delta"]
        wait_for(lambda: headline(driver)["delta"][1] == du1, 20, "DU1's newest delta")
        assert driver.execute_script("return window.stillThere;") == "yes"
        assert console_errors(driver) == []


# ---- over the demo pipeline --------------------------------------------------------------------
@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Demo, Supervised]]:
    folder = tmp_path / "demo"
    d = render(
        folder,
        overrides={"BRIDGE_POLL_INTERVAL_S": str(POLL_S), "BRIDGE_HEARTBEAT_TTL_S": "5"},
    )
    sup = Supervised(d.conf, f"unix://{d.socket}", bridge_env(), cwd=folder)
    try:
        yield d, sup
    finally:
        sup.close()
        pg_private.remove(folder / "pg" / "data")


def row_at(d: Demo, t_ms: int) -> Any:
    rows = pg(
        d.database_url,
        "SELECT * FROM portfolio_greeks WHERE contract = 'PORTFOLIO' AND timestamp = $1",
        datetime.fromtimestamp(t_ms / 1000, UTC),
    )
    return rows[0] if rows else None


def test_the_demo_console_follows_the_pipeline(
    demo: tuple[Demo, Supervised], tmp_path: Path
) -> None:
    d, sup = demo
    sup.wait_states(("bridge:writer", "bridge:collector", "bridge:web"), "RUNNING", 90)
    wait_for(
        lambda: pg(d.database_url, "SELECT 1 FROM portfolio_greeks LIMIT 1"), 120, "a first row"
    )
    with chromium(tmp_path) as driver:
        driver.get(d.web_url)
        asof = lambda: driver.find_element("id", "asof").get_attribute("data-t")  # noqa: E731
        first = int(wait_for(asof, 60, "the newest row on the page"))

        def consistent() -> bool:
            t = int(asof())
            row = row_at(d, t)
            return row is not None and all(
                headline(driver)[g] == (fmt(row[g]), row[g]) for g in GREEKS
            )

        wait_for(consistent, 30, "the numbers of a row of PostgreSQL")
        drawn = chart(driver, "delta")
        row = row_at(d, int(drawn["last-t"]))
        assert row is not None and float(drawn["last-value"]) == row["delta"]
        count = pg(
            d.database_url,
            "SELECT count(*) FROM portfolio_greeks "
            "WHERE contract = 'PORTFOLIO' AND timestamp <= $1",
            row["timestamp"],
        )[0][0]
        assert drawn["points"] == str(count)  # every row of the window, the demo's first hour
        driver.execute_script("window.stillThere = 'yes';")
        wait_for(lambda: int(asof()) > first, 30, "a newer row without a reload")
        wait_for(
            lambda: int(chart(driver, "delta")["last-t"]) > ms(row["timestamp"]), 30, "the chart"
        )
        assert driver.execute_script("return window.stillThere;") == "yes"
        wait_for(lambda: driver.find_element("id", "state").text == "HEALTHY", 60, "HEALTHY")
        assert "bridge:web" in driver.find_element("id", "health-list").text
        assert console_errors(driver) == []
        screenshot(driver, tmp_path / "web-console-demo.png")
