"""Versioned migrations: `database/migrations/NNNN_name.sql`, applied in order, each once.

Each pending migration runs in its own transaction, under the schema advisory lock, and is
recorded in `schema_migrations` (version, name, checksum of the file, applied_at) in that same
transaction: a crash leaves it either applied and recorded or not at all, and processes that
start together apply it once (the others wait for the lock, then find it recorded). Reading what
is applied needs no lock and no CREATE privilege, only SELECT on `schema_migrations`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from database import queries

FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without its number and suffix
    sql: str
    checksum: str  # sha256 of the file, hex

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class Applied:
    """A row of `schema_migrations`."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One line of `bridge schema --status`.

    state: `applied`; `pending`; `changed` (applied, but the file differs now from the one
    applied); `unknown` (applied, yet no file of this release has its number: a newer release).
    """

    version: int
    name: str
    state: str
    applied_at: datetime | None = None

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def migration(file_name: str, data: bytes) -> Migration:
    match = FILE_NAME.fullmatch(file_name)
    if match is None:
        raise ValueError(f"migration file {file_name!r} is not named NNNN_name.sql")
    return Migration(
        version=int(match[1]),
        name=match[2],
        sql=data.decode("utf-8"),
        checksum=hashlib.sha256(data).hexdigest(),
    )


def ordered(found: Iterable[Migration]) -> list[Migration]:
    """The migrations by version; they must be numbered 1, 2, 3... without a gap or a twin."""
    result = sorted(found, key=lambda m: m.version)
    versions = [m.version for m in result]
    if versions != list(range(1, len(result) + 1)):
        raise ValueError(f"migrations must be numbered 1..N without gaps, found {versions}")
    return result


def available() -> list[Migration]:
    """The migrations shipped with this release (package data of `database`)."""
    folder = resources.files("database").joinpath("migrations")
    return ordered(
        migration(f.name, f.read_bytes()) for f in folder.iterdir() if f.name.endswith(".sql")
    )


def states(known: Sequence[Migration], applied: Mapping[int, Applied]) -> list[MigrationState]:
    """Every migration of this release and every one recorded, by version."""
    out: list[MigrationState] = []
    for m in known:
        done = applied.get(m.version)
        if done is None:
            out.append(MigrationState(m.version, m.name, "pending"))
        else:
            state = "applied" if done.checksum == m.checksum else "changed"
            out.append(MigrationState(m.version, m.name, state, done.applied_at))
    versions = {m.version for m in known}
    out.extend(
        MigrationState(a.version, a.name, "unknown", a.applied_at)
        for a in applied.values()
        if a.version not in versions
    )
    return sorted(out, key=lambda s: s.version)


async def read_applied(conn: Any) -> dict[int, Applied]:
    """`schema_migrations` by version; empty when the table does not exist yet (read-only)."""
    if await conn.fetchval(queries.MIGRATIONS_TABLE_PRESENT) is None:
        return {}
    rows = await conn.fetch(queries.SELECT_MIGRATIONS)
    return {
        r["version"]: Applied(r["version"], r["name"], r["checksum"], r["applied_at"]) for r in rows
    }


async def apply(conn: Any, pending: Sequence[Migration]) -> list[tuple[Migration, float]]:
    """Apply `pending` in order on `conn`, each in its own transaction under the schema lock, and
    return those this call applied with their seconds (one another process applied meanwhile is
    skipped). Needs the right to create and alter the tables."""
    async with conn.transaction():
        await conn.execute(queries.NO_STATEMENT_TIMEOUT)  # waiting for another's migration too
        await conn.execute(queries.LOCK_SCHEMA, queries.SCHEMA_LOCK_KEY)
        await conn.execute(queries.CREATE_MIGRATIONS_TABLE)
    done: list[tuple[Migration, float]] = []
    for m in sorted(pending, key=lambda m: m.version):
        started = time.monotonic()
        async with conn.transaction():
            await conn.execute(queries.NO_STATEMENT_TIMEOUT)
            await conn.execute(queries.LOCK_SCHEMA, queries.SCHEMA_LOCK_KEY)
            if await conn.fetchval(queries.MIGRATION_RECORDED, m.version):
                continue
            await conn.execute(m.sql)
            await conn.execute(queries.RECORD_MIGRATION, m.version, m.name, m.checksum)
        done.append((m, time.monotonic() - started))
    return done
