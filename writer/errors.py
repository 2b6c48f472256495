"""How the writer reads a database failure: an outage (open the breaker, buffer the rows), a bad
row (bisect, dead-letter it), a misconfiguration (exit code 2, not restarted in a loop), or
a bug (the process exits and supervisord restarts it). The unacked entries wait in Redis."""

from __future__ import annotations

import asyncpg

from database.db_manager import is_connection_error, is_data_error
from shared.config import scrub

# Besides the connection-level failures: the server cannot take writes right now, or a table
# went away under us (the rows wait in the buffer until it is back). The rows are fine.
TRANSIENT_SERVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.TransactionRollbackError,  # 40001 serialization, 40P01 deadlock
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a standby after a failover
    asyncpg.exceptions.UndefinedTableError,  # 42P01: the table was dropped
)


class DatabaseSetupError(RuntimeError):
    """Connecting or the schema check failed for a reason that is no outage (bad password,
    no permission): never a reason to dead-letter rows."""


# The database says the configuration is wrong (bad user or password, no such database, no right
# to create the tables): retrying cannot help, the operator must fix DATABASE_URL or the grants.
CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28000, 28P01 bad password
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: no such database
    asyncpg.exceptions.InsufficientPrivilegeError,  # 42501
)


def is_config_error(exc: BaseException) -> bool:
    """The failure (or the failure under a DatabaseSetupError) is a misconfiguration."""
    cause = exc.__cause__ if isinstance(exc, DatabaseSetupError) else exc
    return isinstance(cause, CONFIG_ERRORS)


def is_outage(exc: BaseException) -> bool:
    return is_connection_error(exc) or isinstance(exc, TRANSIENT_SERVER_ERRORS)


def is_row_error(exc: BaseException) -> bool:
    return is_data_error(exc) and not is_outage(exc)


def reason_of(exc: BaseException) -> str:
    """An exception as one short line for the log and `api_logs`."""
    text = scrub(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
    return text[:300]
