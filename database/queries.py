"""Every SQL statement of the bridge except the schema's (database/migrations/*.sql)."""

from __future__ import annotations

SCHEMA_LOCK_KEY = 0x1B6B_C0DE  # pg_advisory_xact_lock key of the schema's changes
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock($1)"
# a migration is never cut short by a statement_timeout of the role or the database
NO_STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = 0"

# ---- the migrations' own record (database/migrate.py)
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
# needs no privilege: to_regclass reads the catalog
MIGRATIONS_TABLE_PRESENT = "SELECT to_regclass('schema_migrations')"
SELECT_MIGRATIONS = "SELECT version, name, checksum, applied_at FROM schema_migrations"
MIGRATION_RECORDED = "SELECT true FROM schema_migrations WHERE version = $1"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"

# Batches arrive in stream order; WITH ORDINALITY + ORDER BY keeps `id` order = input order.
INSERT_GREEKS = """
INSERT INTO portfolio_greeks
    (timestamp, contract, delta, gamma, vega, theta, underlying_price, account)
SELECT ts, contract, delta, gamma, vega, theta, und, account
FROM unnest($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], $5::float8[],
            $6::float8[], $7::float8[], $8::text[])
     WITH ORDINALITY AS r(ts, contract, delta, gamma, vega, theta, und, account, n)
ORDER BY n
ON CONFLICT (timestamp, contract, account) DO NOTHING
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
# each row with its tick's completeness from portfolio_exposure (NULL until that row lands)
_TAIL_SELECT = """
SELECT g.id, g.timestamp, g.contract, g.account, g.delta, g.gamma, g.vega, g.theta,
       g.underlying_price, e.legs, e.legs_excluded
FROM portfolio_greeks g
LEFT JOIN portfolio_exposure e
  ON e.timestamp = g.timestamp AND e.account = g.account AND e.scope = g.contract
"""
NEWEST_ROWS = _TAIL_SELECT + "ORDER BY g.id DESC LIMIT $1"
ROWS_AFTER = _TAIL_SELECT + "WHERE g.id > $1 ORDER BY g.id LIMIT $2"
MAX_ID = "SELECT coalesce(max(id), 0) FROM portfolio_greeks"

# each account's newest PORTFOLIO row of the last day (bounded: the status command's read)
NEWEST_BY_ACCOUNT = """
SELECT DISTINCT ON (account) account, timestamp FROM portfolio_greeks
WHERE contract = 'PORTFOLIO' AND timestamp > now() - interval '1 day'
ORDER BY account, timestamp DESC
"""
NEWEST_PORTFOLIO_ROW = """
SELECT timestamp, delta, gamma, vega, theta, underlying_price
FROM portfolio_greeks WHERE contract = $1 ORDER BY timestamp DESC LIMIT 1
"""

# ---- the writer's bulk path (buffer drain). Fast path: COPY straight into the table (fails as a
# whole on a row already stored). Replay path: COPY into a session temp table, then one INSERT ...
# SELECT in input order. ON COMMIT DELETE ROWS empties the staging table at every COMMIT/ROLLBACK.
GREEKS_COLUMNS = (
    "timestamp",
    "contract",
    "delta",
    "gamma",
    "vega",
    "theta",
    "underlying_price",
    "account",
)
STAGE_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS bridge_greeks_in (
    n bigint, ts timestamptz, contract text, delta float8, gamma float8, vega float8,
    theta float8, und float8, account text
) ON COMMIT DELETE ROWS
"""
STAGE_GREEKS_TABLE = "bridge_greeks_in"
STAGE_GREEKS_COLUMNS = ("n", "ts", "contract", "delta", "gamma", "vega", "theta", "und", "account")

INSERT_GREEKS_FROM_STAGE = """
INSERT INTO portfolio_greeks
    (timestamp, contract, delta, gamma, vega, theta, underlying_price, account)
SELECT ts, contract, delta, gamma, vega, theta, und, account FROM bridge_greeks_in ORDER BY n
ON CONFLICT (timestamp, contract, account) DO NOTHING
"""

# The drain's text route: the buffer's own decimal and ISO-8601 strings, parsed by the server.
STAGE_TEXT_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS bridge_greeks_text_in (
    n bigint GENERATED ALWAYS AS IDENTITY, ts timestamptz, contract text, delta float8,
    gamma float8, vega float8, theta float8, und float8, account text
) ON COMMIT DELETE ROWS
"""
STAGE_TEXT_TABLE_NAME = "bridge_greeks_text_in"
STAGE_TEXT_COLUMNS = ("ts", "contract", "delta", "gamma", "vega", "theta", "und", "account")
INSERT_GREEKS_FROM_TEXT_STAGE = """
INSERT INTO portfolio_greeks
    (timestamp, contract, delta, gamma, vega, theta, underlying_price, account)
SELECT ts, contract, delta, gamma, vega, theta, und, account FROM bridge_greeks_text_in
ORDER BY n
ON CONFLICT (timestamp, contract, account) DO NOTHING
"""

# ---- portfolio_exposure: the same three routes (unnest insert, COPY, staged insert)
EXPOSURE_TYPES = (
    ("timestamp", "timestamptz"),
    ("account", "text"),
    ("scope", "text"),
    ("delta", "float8"),
    ("gamma", "float8"),
    ("vega", "float8"),
    ("theta", "float8"),
    ("delta_dollars", "float8"),
    ("gamma_dollars", "float8"),
    ("underlying_price", "float8"),
    ("legs", "int4"),
    ("legs_fresh", "int4"),
    ("legs_carried", "int4"),
    ("legs_excluded", "int4"),
    ("greeks_age_max_s", "float8"),
    ("market_data", "text"),
    ("daily_pnl", "float8"),
    ("unrealized_pnl", "float8"),
    ("realized_pnl", "float8"),
)
EXPOSURE_COLUMNS = tuple(name for name, _ in EXPOSURE_TYPES)
_EXPOSURE_LIST = ", ".join(EXPOSURE_COLUMNS)
EXPOSURE_CONFLICT = "ON CONFLICT (timestamp, account, scope) DO NOTHING"

INSERT_EXPOSURE = f"""
INSERT INTO portfolio_exposure ({_EXPOSURE_LIST})
SELECT {_EXPOSURE_LIST}
FROM unnest({", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(EXPOSURE_TYPES, 1))})
     WITH ORDINALITY AS r({_EXPOSURE_LIST}, n)
ORDER BY n
{EXPOSURE_CONFLICT}
"""
STAGE_EXPOSURE_TABLE = "bridge_exposure_in"
STAGE_EXPOSURE = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGE_EXPOSURE_TABLE} (
    n bigint, {", ".join(f"{c} {t}" for c, t in EXPOSURE_TYPES)}
) ON COMMIT DELETE ROWS
"""
STAGE_EXPOSURE_COLUMNS = ("n", *EXPOSURE_COLUMNS)
INSERT_EXPOSURE_FROM_STAGE = f"""
INSERT INTO portfolio_exposure ({_EXPOSURE_LIST})
SELECT {_EXPOSURE_LIST} FROM {STAGE_EXPOSURE_TABLE} ORDER BY n
{EXPOSURE_CONFLICT}
"""
