"""`bridge schema`: apply the pending migrations now; `--status`: list them, change nothing.

Exit 0 when done (or listed); 2 with one line when PostgreSQL is unreachable or refuses (a wrong
password, no such database, no right to change the tables: run it as the tables' owner).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

import asyncpg

from database.db_manager import DBManager, is_connection_error
from database.migrate import Migration, MigrationState
from shared.config import scrub

EXIT_OK, EXIT_REFUSED = 0, 2
STATE_TEXT = {
    "applied": "applied",
    "pending": "pending",
    "changed": "applied, file changed since",
    "unknown": "applied, not in this release",
}


def status_lines(states: Sequence[MigrationState]) -> list[str]:
    """The table of `bridge schema --status` and its summary line."""
    width = max([len(s.name) for s in states] + [4])
    lines = [f"{'version':<8} {'name':<{width}}  {'state':<28} applied_at"]
    for s in states:
        when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else ""
        line = f"{s.version:04d}     {s.name:<{width}}  {STATE_TEXT[s.state]:<28} {when}"
        lines.append(line.rstrip())
    count = {k: sum(1 for s in states if s.state == k) for k in STATE_TEXT}
    summary = f"{len(states)} migrations: {count['applied']} applied, {count['pending']} pending"
    for state in ("changed", "unknown"):
        if count[state]:
            summary += f", {count[state]} {STATE_TEXT[state]}"
    return [*lines, summary]


def applied_lines(
    done: Sequence[tuple[Migration, float]], states: Sequence[MigrationState]
) -> list[str]:
    """What `bridge schema` did, then one line saying where the schema stands."""
    lines = [f"applied {m.label} in {seconds:.2f} s" for m, seconds in done]
    lines += [
        f"warning: {s.label} {STATE_TEXT[s.state]}"
        for s in states
        if s.state in ("changed", "unknown")
    ]
    applied = sum(1 for s in states if s.state != "pending")
    lines.append(f"schema ok: {applied} migrations applied, none pending")
    return lines


async def _run(dsn: str, status_only: bool) -> list[str]:
    # what the manager logs is in the lines printed (or the one error line): not twice
    logging.getLogger("database").addHandler(logging.NullHandler())
    db = DBManager(dsn, min_size=1, max_size=1, connect_attempts=1)
    await db.connect()
    try:
        if status_only:
            return status_lines(await db.migration_states())
        done = await db.migrate()
        return applied_lines(done, await db.migration_states())
    finally:
        await db.close()


def schema_command(dsn: str, *, status_only: bool) -> int:
    try:
        lines = asyncio.run(_run(dsn, status_only))
    except Exception as exc:
        if is_connection_error(exc):
            why = "unreachable"
        elif isinstance(exc, asyncpg.PostgresError):
            why = "refused"
        else:
            raise
        text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        print(scrub(f"schema_failed PostgreSQL {why}: {text}"), file=sys.stderr)
        return EXIT_REFUSED
    for line in lines:
        print(line)
    return EXIT_OK
