"""Every SQL statement of the bridge except the schema (database/sql/schema.sql)."""

from __future__ import annotations

from importlib import resources

SCHEMA_LOCK_KEY = 0x1B6B_C0DE  # pg_advisory_xact_lock key of the schema check


def schema_sql() -> str:
    return resources.files("database").joinpath("sql/schema.sql").read_text(encoding="utf-8")


LOCK_SCHEMA = "SELECT pg_advisory_xact_lock($1)"

# Batches arrive in stream order; WITH ORDINALITY + ORDER BY keeps `id` order = input order.
INSERT_GREEKS = """
INSERT INTO portfolio_greeks (timestamp, contract, delta, gamma, vega, theta, underlying_price)
SELECT ts, contract, delta, gamma, vega, theta, und
FROM unnest($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], $5::float8[],
            $6::float8[], $7::float8[])
     WITH ORDINALITY AS r(ts, contract, delta, gamma, vega, theta, und, n)
ORDER BY n
ON CONFLICT (timestamp, contract) DO NOTHING
"""

INSERT_API_LOGS = """
INSERT INTO api_logs (timestamp, api_mode, status, message)
SELECT ts, api_mode, status, message
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[])
     WITH ORDINALITY AS r(ts, api_mode, status, message, n)
ORDER BY n
ON CONFLICT (timestamp, api_mode, status, md5(message)) DO NOTHING
"""

INSERT_GREEK_SNAPSHOT = """
INSERT INTO greek_snapshots
    (timestamp, contract, delta, gamma, vega, theta, implied_vol, underlying_price)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id
"""
SELECT_GREEK_SNAPSHOTS = """
SELECT id, timestamp, contract, delta, gamma, vega, theta, implied_vol, underlying_price
FROM greek_snapshots WHERE contract = $1 ORDER BY timestamp DESC, id DESC LIMIT $2
"""

INSERT_TRADE = """
INSERT INTO trades (timestamp, contract, side, quantity, price, commission, order_ref)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id
"""
SELECT_TRADES = """
SELECT id, timestamp, contract, side, quantity, price, commission, order_ref
FROM trades WHERE timestamp >= $1 ORDER BY timestamp, id
"""

NEWEST_PORTFOLIO_ROW = """
SELECT timestamp, delta, gamma, vega, theta, underlying_price
FROM portfolio_greeks WHERE contract = $1 ORDER BY timestamp DESC LIMIT 1
"""
