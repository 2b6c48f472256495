-- Migration 3: one row per tick, account and scope ('PORTFOLIO' or an underlying) with the
-- exposure in share and dollar units, how complete it is, and the account's P&L. A number that
-- is not known is NULL, never 0. A new table: nothing else is locked.
CREATE TABLE portfolio_exposure (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL,
    account          TEXT NOT NULL,
    scope            TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    delta_dollars    DOUBLE PRECISION,
    gamma_dollars    DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION,
    legs             INTEGER,
    legs_fresh       INTEGER,
    legs_carried     INTEGER,
    legs_excluded    INTEGER,
    greeks_age_max_s DOUBLE PRECISION,
    market_data      TEXT,
    daily_pnl        DOUBLE PRECISION,
    unrealized_pnl   DOUBLE PRECISION,
    realized_pnl     DOUBLE PRECISION
);
-- The idempotency key: a replayed entry is skipped, never stored twice.
CREATE UNIQUE INDEX portfolio_exposure_timestamp_account_scope_key
    ON portfolio_exposure (timestamp, account, scope);
