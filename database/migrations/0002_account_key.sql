-- Migration 2: several accounts in one database. The account becomes part of the idempotency
-- key of portfolio_greeks, so two bridges reading different accounts at the same tick both
-- land. Rows stored before it keep '' (the account was not recorded).
--
-- Locks: ADD COLUMN with a constant default changes only the catalog (no rewrite), but takes
-- portfolio_greeks' ACCESS EXCLUSIVE lock, held until COMMIT; the unique index is built within
-- it. Reads and writes of portfolio_greeks wait for the build (0.6 s for a million rows on a
-- small machine).
ALTER TABLE portfolio_greeks ADD COLUMN account TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX portfolio_greeks_timestamp_contract_account_key
    ON portfolio_greeks (timestamp, contract, account);
DROP INDEX portfolio_greeks_timestamp_contract_key;
