-- Migration 1: the schema of the first release. Every statement creates only what is absent
-- and leaves what is present, so on a database that release created it changes nothing and is
-- only recorded in schema_migrations. The later migrations change what it made: read the
-- schema as this file followed by them, in order (database/migrate.py applies them).

-- Net portfolio Greeks, one row per collector tick and contract ('PORTFOLIO' or a symbol).
CREATE TABLE IF NOT EXISTS portfolio_greeks (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL,
    contract         TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION
);
-- The idempotency key: a replayed tick is skipped, never stored twice.
CREATE UNIQUE INDEX IF NOT EXISTS portfolio_greeks_timestamp_contract_key
    ON portfolio_greeks (timestamp, contract);

-- Audit trail of the bridge (connects, drops, reconnect attempts, outages, bad entries).
CREATE TABLE IF NOT EXISTS api_logs (
    id        BIGSERIAL PRIMARY KEY,
    timestamp TIMESTAMPTZ NOT NULL,
    api_mode  TEXT,
    message   TEXT,
    status    TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_logs_dedupe_key
    ON api_logs (timestamp, api_mode, status, md5(message));
CREATE INDEX IF NOT EXISTS api_logs_timestamp_idx ON api_logs (timestamp);

-- Pre-existing tables of the desk, owned by DBManager and untouched by the bridge's pipeline.
CREATE TABLE IF NOT EXISTS greek_snapshots (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL DEFAULT now(),
    contract         TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    implied_vol      DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION
);

CREATE TABLE IF NOT EXISTS trades (
    id         BIGSERIAL PRIMARY KEY,
    timestamp  TIMESTAMPTZ NOT NULL DEFAULT now(),
    contract   TEXT NOT NULL,
    side       TEXT NOT NULL,
    quantity   DOUBLE PRECISION NOT NULL,
    price      DOUBLE PRECISION NOT NULL,
    commission DOUBLE PRECISION,
    order_ref  TEXT
);
