"""The page `/`: one screen for the risk manager, rendered here with what is known at the
request (the state, what is unreachable, the newest net Greeks), then kept up to date by
/static/app.js, which polls the JSON endpoints and draws the charts (static/chart.js, SVG).

Every value written into the HTML is escaped; the page holds no script of its own (the
Content-Security-Policy allows only /static/ scripts) and no secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from ops.web.series import GREEKS, WINDOWS

STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
WINDOW_NAMES = {"1h": "1 hour", "1d": "1 day", "1w": "1 week"}
GREEK_NAMES = {"delta": "Delta", "gamma": "Gamma", "vega": "Vega", "theta": "Theta"}
STATES = ("healthy", "degraded", "down")


def load_static() -> dict[str, tuple[bytes, str]]:
    """The files under /static/, by name, read once (no path from a request touches the disk)."""
    folder = resources.files("ops.web").joinpath("static")
    return {name: (folder.joinpath(name).read_bytes(), kind) for name, kind in STATIC_TYPES.items()}


def fmt(value: float | None) -> str:
    """A Greek as shown in large type (static/app.js formats the same way)."""
    if value is None:
        return "–"
    size = abs(value)
    digits = 0 if size >= 1000 else 2 if size >= 1 else 4
    return f"{value:,.{digits}f}"


def _banners(status: Mapping[str, Any], db_error: str | None) -> str:
    out = []
    if status.get("redis_error"):
        out.append(f"Redis unreachable: {status['redis_error']} (the live state is unknown)")
    if db_error:
        out.append(f"PostgreSQL unreachable: {db_error} (no charts or book until it answers)")
    return "".join(f'<p class="banner">{escape(text)}</p>' for text in out)


def _headline(newest: Mapping[str, Any] | None) -> str:
    parts = []
    for g in GREEKS:
        value = None if newest is None else newest.get(g)
        data = "" if value is None else f' data-value="{escape(repr(value))}"'
        parts.append(
            f'<div class="figure"><span class="name">{GREEK_NAMES[g]}</span>'
            f'<span class="value" id="v-{g}"{data}>{escape(fmt(value))}</span></div>'
        )
    when = "no PORTFOLIO row yet" if newest is None else f"as of {newest['timestamp']}"
    return "".join(parts) + f'<p id="asof">{escape(when)}</p>'


def _controls(accounts: Sequence[str], account: str, window: str) -> str:
    options = "".join(
        f'<option value="{escape(a)}"{" selected" if a == account else ""}>{escape(a)}</option>'
        for a in accounts
    )
    hidden = "" if len(accounts) > 1 else " hidden"
    links = "".join(
        f'<a class="window{" current" if w == window else ""}" data-window="{w}" '
        f'href="/?{escape(urlencode({"window": w, "account": account}))}">{WINDOW_NAMES[w]}</a>'
        for w in WINDOWS
    )
    return (
        f'<form id="controls" method="get" action="/">'
        f'<input type="hidden" name="window" value="{escape(window)}">'
        f'<label id="account-box"{hidden}>Account <select id="account" name="account">'
        f'{options}</select> <button id="go" type="submit">show</button></label>'
        f'<nav id="windows">{links}</nav></form>'
    )


def _charts() -> str:
    figures = "".join(
        f'<figure class="chart"><figcaption>{GREEK_NAMES[g]}</figcaption>'
        f'<svg id="chart-{g}" class="plot" viewBox="0 0 600 200" role="img" '
        f'aria-label="{GREEK_NAMES[g]} over the window"></svg></figure>'
        for g in GREEKS
    )
    legend = (
        '<p id="legend"><span class="key key-gap"></span> no rows (a gap, not joined) '
        '<span class="key key-carried"></span> Greeks carried forward '
        '<span class="key key-excluded"></span> legs left out of the sums '
        '<span id="chart-note"></span></p>'
    )
    return f'<section id="charts">{figures}{legend}</section>'


def render(
    *,
    status: Mapping[str, Any],
    db_error: str | None,
    newest: Mapping[str, Any] | None,
    accounts: Sequence[str],
    account: str,
    window: str,
    refresh_ms: int,
) -> str:
    level = str(status.get("status", "down"))
    level = level if level in STATES else "down"
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in status.get("reasons", []))
    body_data = (
        f'data-refresh-ms="{refresh_ms}" data-window="{escape(window)}" '
        f'data-account="{escape(account)}" data-scope="PORTFOLIO"'
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>IBKR Greeks Bridge: risk console</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
<script src="/static/chart.js" defer></script>
<script src="/static/app.js" defer></script>
</head>
<body {body_data}>
<header>
<h1>Net Greeks <span id="scope-label">PORTFOLIO</span>
<span id="account-label">{escape(account)}</span></h1>
{_controls(accounts, account, window)}
<div id="state" class="state state-{level}">{escape(level.upper())}</div>
</header>
<div id="banners">{_banners(status, db_error)}</div>
<main>
<section id="headline">{_headline(newest)}</section>
{_charts()}
<section id="book"><h2>Book by underlying <span id="book-asof"></span></h2>
<table><thead><tr><th>underlying</th><th>delta $</th><th>dollar gamma (1 %)</th><th>vega</th>
<th>theta</th><th>price</th><th>legs fresh / carried / out</th><th>data</th></tr></thead>
<tbody id="book-rows"></tbody></table><p id="book-note" class="note"></p></section>
<section id="health"><h2>Health</h2><ul id="reasons">{reasons}</ul><dl id="health-list"></dl>
</section>
<section id="logs"><h2>Recent warnings and errors (api_logs)</h2>
<table><tbody id="log-rows"></tbody></table></section>
</main>
<footer>updated <span id="updated">at load</span> · <a href="/api/status">status JSON</a> ·
<a href="/metrics">metrics</a> · times in this browser's time zone</footer>
</body>
</html>
"""
