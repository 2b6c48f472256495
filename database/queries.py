"""Every SQL statement of the bridge except the schema (database/sql/schema.sql)."""

from __future__ import annotations

import re
from importlib import resources

SCHEMA_LOCK_KEY = 0x1B6B_C0DE  # pg_advisory_xact_lock key of the schema check


def schema_sql() -> str:
    return resources.files("database").joinpath("sql/schema.sql").read_text(encoding="utf-8")


LOCK_SCHEMA = "SELECT pg_advisory_xact_lock($1)"


def schema_objects() -> list[str]:
    """The tables and indexes schema.sql creates, by name."""
    return re.findall(r"IF NOT EXISTS (\w+)", schema_sql())


# True when every object exists: needs no privilege, so a role with only INSERT/SELECT on the
# bridge's tables starts (CREATE ... IF NOT EXISTS checks the CREATE privilege first)
SCHEMA_PRESENT = "SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest($1::text[]) AS n"

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

# ---- read-only queries of the operator's commands (database/reads.py)
NEWEST_ROWS = """
SELECT id, timestamp, contract, delta, gamma, vega, theta, underlying_price
FROM portfolio_greeks ORDER BY id DESC LIMIT $1
"""
ROWS_AFTER = """
SELECT id, timestamp, contract, delta, gamma, vega, theta, underlying_price
FROM portfolio_greeks WHERE id > $1 ORDER BY id LIMIT $2
"""
MAX_ID = "SELECT coalesce(max(id), 0) FROM portfolio_greeks"

NEWEST_PORTFOLIO_ROW = """
SELECT timestamp, delta, gamma, vega, theta, underlying_price
FROM portfolio_greeks WHERE contract = $1 ORDER BY timestamp DESC LIMIT 1
"""

# ---- the writer's bulk path (buffer drain). Fast path: COPY straight into the table (fails as a
# whole on a row already stored). Replay path: COPY into a session temp table, then one INSERT ...
# SELECT in input order. ON COMMIT DELETE ROWS empties the staging table at every COMMIT/ROLLBACK.
GREEKS_COLUMNS = ("timestamp", "contract", "delta", "gamma", "vega", "theta", "underlying_price")
STAGE_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS bridge_greeks_in (
    n bigint, ts timestamptz, contract text, delta float8, gamma float8, vega float8,
    theta float8, und float8
) ON COMMIT DELETE ROWS
"""
STAGE_GREEKS_TABLE = "bridge_greeks_in"
STAGE_GREEKS_COLUMNS = ("n", "ts", "contract", "delta", "gamma", "vega", "theta", "und")

INSERT_GREEKS_FROM_STAGE = """
INSERT INTO portfolio_greeks (timestamp, contract, delta, gamma, vega, theta, underlying_price)
SELECT ts, contract, delta, gamma, vega, theta, und FROM bridge_greeks_in ORDER BY n
ON CONFLICT (timestamp, contract) DO NOTHING
"""

# The drain's text route: the buffer's own decimal and ISO-8601 strings, parsed by the server.
STAGE_TEXT_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS bridge_greeks_text_in (
    n bigint GENERATED ALWAYS AS IDENTITY, ts timestamptz, contract text, delta float8,
    gamma float8, vega float8, theta float8, und float8
) ON COMMIT DELETE ROWS
"""
STAGE_TEXT_TABLE_NAME = "bridge_greeks_text_in"
STAGE_TEXT_COLUMNS = ("ts", "contract", "delta", "gamma", "vega", "theta", "und")
INSERT_GREEKS_FROM_TEXT_STAGE = """
INSERT INTO portfolio_greeks (timestamp, contract, delta, gamma, vega, theta, underlying_price)
SELECT ts, contract, delta, gamma, vega, theta, und FROM bridge_greeks_text_in ORDER BY n
ON CONFLICT (timestamp, contract) DO NOTHING
"""
