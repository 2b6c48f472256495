"""The read-only SQL of the web console (`bridge web`), apart from the pipeline's statements.

Every statement is bounded: a time window and a row limit, or one row. The ones that depend on
the schema come in two forms: with the `account` column of portfolio_greeks (`account = $n`)
and without it (a database from before several accounts: every row is the one account '').
"""

from __future__ import annotations

GREEKS = ("delta", "gamma", "vega", "theta")

# What the database holds: the account column, the exposure table. Reads the catalog only.
SCHEMA = """
SELECT to_regclass('portfolio_greeks') IS NOT NULL AS greeks_table,
       to_regclass('api_logs') IS NOT NULL AS api_logs_table,
       to_regclass('portfolio_exposure') IS NOT NULL AS exposure_table,
       EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = to_regclass('portfolio_greeks') AND attname = 'account'
                 AND NOT attisdropped) AS account_column
"""


def account_is(n: int, has_column: bool) -> str:
    """The predicate on the account, parameter `$n`; without the column every row is ''."""
    return f"account = ${n}" if has_column else f"${n}::text = ''"


# The accounts of the PORTFOLIO rows of the day before the newest one (the newest row comes
# from the end of the (timestamp, ...) index; the day is one range of it).
ACCOUNTS = """
WITH newest AS (SELECT max(timestamp) AS t FROM portfolio_greeks WHERE contract = 'PORTFOLIO')
SELECT account FROM portfolio_greeks, newest
WHERE contract = 'PORTFOLIO' AND timestamp > newest.t - interval '1 day'
GROUP BY account ORDER BY account LIMIT 100
"""


def newest_row(has_account: bool) -> str:
    """$1 scope, $2 account: the newest row of that scope."""
    return f"""
SELECT timestamp, delta, gamma, vega, theta, underlying_price FROM portfolio_greeks
WHERE contract = $1 AND {account_is(2, has_account)}
ORDER BY timestamp DESC LIMIT 1
"""


# $1 accounts: the newest PORTFOLIO row of each (one index probe per account)
NEWEST_PER_ACCOUNT = """
SELECT a.account, g.timestamp, g.delta, g.gamma, g.vega, g.theta, g.underlying_price
FROM unnest($1::text[]) AS a(account)
CROSS JOIN LATERAL (
    SELECT timestamp, delta, gamma, vega, theta, underlying_price FROM portfolio_greeks
    WHERE contract = 'PORTFOLIO' AND account = a.account ORDER BY timestamp DESC LIMIT 1
) AS g
ORDER BY a.account
"""


def raw_series(has_account: bool) -> str:
    """$1 scope, $2 from, $3 to, $4 limit, $5 account: the newest rows of the window."""
    return f"""
SELECT timestamp, delta, gamma, vega, theta, underlying_price FROM portfolio_greeks
WHERE contract = $1 AND timestamp >= $2 AND timestamp <= $3 AND {account_is(5, has_account)}
ORDER BY timestamp DESC LIMIT $4
"""


def _extremes(g: str) -> str:
    return (
        f"(array_agg({g} ORDER BY ts))[1] AS {g}_first, "
        f"(array_agg({g} ORDER BY ts DESC))[1] AS {g}_last, "
        f"min({g}) AS {g}_min, (array_agg(ts ORDER BY {g} ASC NULLS LAST, ts))[1] AS {g}_min_ts, "
        f"max({g}) AS {g}_max, (array_agg(ts ORDER BY {g} DESC NULLS LAST, ts))[1] AS {g}_max_ts"
    )


def bucket_series(has_account: bool) -> str:
    """$1 scope, $2 from, $3 to, $4 bucket seconds, $5 limit, $6 account: per bucket of the
    window, the first and last row's time and, per Greek, its first, last, smallest and
    largest value with their times."""
    extremes = ",\n       ".join(_extremes(g) for g in GREEKS)
    return f"""
WITH r AS (
    SELECT timestamp AS ts, delta, gamma, vega, theta,
           floor(extract(epoch FROM timestamp - $2::timestamptz) / $4::float8)::bigint AS b
    FROM portfolio_greeks
    WHERE contract = $1 AND timestamp >= $2 AND timestamp <= $3 AND {account_is(6, has_account)}
)
SELECT b, count(*) AS n, min(ts) AS first_ts, max(ts) AS last_ts,
       {extremes}
FROM r GROUP BY b ORDER BY b LIMIT $5
"""


def gaps(has_account: bool) -> str:
    """$1 scope, $2 from, $3 to, $4 gap seconds, $5 limit, $6 account: pairs of consecutive
    rows further apart than the gap."""
    return f"""
SELECT prev, ts FROM (
    SELECT timestamp AS ts, lag(timestamp) OVER (ORDER BY timestamp) AS prev
    FROM portfolio_greeks
    WHERE contract = $1 AND timestamp >= $2 AND timestamp <= $3 AND {account_is(6, has_account)}
) AS s
WHERE ts - prev > make_interval(secs => $4) ORDER BY ts LIMIT $5
"""


# $1 scope, $2 account, $3 from, $4 to, $5 limit: the ticks whose sums left legs out or
# carried Greeks forward (portfolio_exposure)
MARKS = """
SELECT timestamp, legs, legs_fresh, legs_carried, legs_excluded, greeks_age_max_s, market_data
FROM portfolio_exposure
WHERE scope = $1 AND account = $2 AND timestamp >= $3 AND timestamp <= $4
  AND (legs_excluded > 0 OR legs_carried > 0)
ORDER BY timestamp DESC LIMIT $5
"""
# the same per bucket ($5 bucket seconds, $6 limit): the first such tick, how many, the most
MARK_BUCKETS = """
SELECT min(timestamp) AS timestamp, count(*) AS ticks, max(legs) AS legs,
       max(legs_carried) AS legs_carried, max(legs_excluded) AS legs_excluded,
       max(greeks_age_max_s) AS greeks_age_max_s
FROM portfolio_exposure
WHERE scope = $1 AND account = $2 AND timestamp >= $3 AND timestamp <= $4
  AND (legs_excluded > 0 OR legs_carried > 0)
GROUP BY floor(extract(epoch FROM timestamp - $3::timestamptz) / $5::float8)
ORDER BY 1 LIMIT $6
"""

EXPOSURE_COLUMNS = (
    "scope, delta, gamma, vega, theta, delta_dollars, gamma_dollars, underlying_price, legs, "
    "legs_fresh, legs_carried, legs_excluded, greeks_age_max_s, market_data, daily_pnl, "
    "unrealized_pnl, realized_pnl"
)
# $1 account, $2 not before: every scope of the account's newest tick
EXPOSURE = f"""
SELECT timestamp, {EXPOSURE_COLUMNS} FROM portfolio_exposure
WHERE account = $1 AND timestamp = (
    SELECT max(timestamp) FROM portfolio_exposure WHERE account = $1 AND timestamp >= $2
)
ORDER BY scope <> 'PORTFOLIO', abs(delta_dollars) DESC NULLS LAST, scope LIMIT 500
"""


def exposure_fallback(has_account: bool) -> str:
    """$1 not before, $2 account: the per-underlying rows of portfolio_greeks' newest tick that
    has them; dollars from the row's own price (delta x price, gamma x price^2 / 100)."""
    account = account_is(2, has_account)
    return f"""
SELECT timestamp, contract AS scope, delta, gamma, vega, theta,
       delta * underlying_price AS delta_dollars,
       gamma * underlying_price * underlying_price / 100.0 AS gamma_dollars, underlying_price
FROM portfolio_greeks
WHERE contract <> 'PORTFOLIO' AND {account} AND timestamp = (
    SELECT max(timestamp) FROM portfolio_greeks
    WHERE contract <> 'PORTFOLIO' AND {account} AND timestamp >= $1
)
ORDER BY abs(delta * underlying_price) DESC NULLS LAST, contract LIMIT 500
"""


# $1 not before, $2 limit: the newest WARN and ERROR rows of the audit trail
PROBLEM_LOGS = """
SELECT id, timestamp, api_mode, status, message FROM api_logs
WHERE status IN ('WARN', 'ERROR') AND timestamp >= $1
ORDER BY timestamp DESC, id DESC LIMIT $2
"""

# $1 after id: the watchdog's reconnect and reauth attempts recorded since (each attempt is one
# row, `reconnect attempt 2/4 ... succeeded|failed ...`), and the newest id seen
RECONNECT_ATTEMPTS = """
SELECT count(*) FILTER (WHERE message ~ '^(reconnect|reauth) attempt [0-9]+/') AS attempts,
       coalesce(max(id), $1) AS last_id
FROM api_logs WHERE id > $1
"""
