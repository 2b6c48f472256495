"""`bridge schema` and `bridge schema --status` as the operator runs them, against a real
PostgreSQL: the list of migrations (read-only), applying them once, an applied file that
changed, and one line with exit code 2 when PostgreSQL is unreachable or refuses."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ops.embedded import free_port
from tests.helpers import bridge_env

LABELS = ["0001_initial", "0002_account_key", "0003_portfolio_exposure"]


def bridge(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "bridge.env"
    env_file.write_text(f"DATABASE_URL={database_url}\n")
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "--env-file", str(env_file), "schema", *args],
        env=bridge_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def table(stdout: str) -> list[tuple[str, str]]:
    """(version_name, state) of each row of the --status table."""
    rows = []
    for line in stdout.splitlines()[1:-1]:
        version, name, rest = line.split(maxsplit=2)
        state = re.split(r"\s{2,}", rest.strip())[0]
        rows.append((f"{version}_{name}", state))
    return rows


async def test_status_lists_then_schema_applies_once(pg_url: str, tmp_path: Path) -> None:
    listed = bridge(tmp_path, pg_url, "--status")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["version", "name", "state", "applied_at"]
    assert table(listed.stdout) == [(label, "pending") for label in LABELS]
    assert listed.stdout.splitlines()[-1] == "3 migrations: 0 applied, 3 pending"
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None, "read-only"
        done = bridge(tmp_path, pg_url)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [re.sub(r" in \d+\.\d\d s$", "", line) for line in lines[:-1]] == [
            f"applied {label}" for label in LABELS
        ]
        assert lines[-1] == "schema ok: 3 migrations applied, none pending"
        again = bridge(tmp_path, pg_url)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == ["schema ok: 3 migrations applied, none pending"]
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 3
        listed = bridge(tmp_path, pg_url, "--status")
        assert listed.returncode == 0, listed.stderr
        assert table(listed.stdout) == [(label, "applied") for label in LABELS]
        assert listed.stdout.splitlines()[-1] == "3 migrations: 3 applied, 0 pending"
        # an applied file edited since: reported by both
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        listed = bridge(tmp_path, pg_url, "--status")
        assert listed.returncode == 0, listed.stderr
        assert table(listed.stdout)[0] == ("0001_initial", "applied, file changed since")
        assert listed.stdout.splitlines()[-1].endswith(", 1 applied, file changed since")
        done = bridge(tmp_path, pg_url)
        assert done.returncode == 0, done.stderr
        assert "warning: 0001_initial applied, file changed since" in done.stdout.splitlines()
        assert done.stderr == ""
    finally:
        await conn.close()


def test_unreachable_postgresql_is_one_line_and_exit_2(tmp_path: Path) -> None:
    secret = secrets.token_hex(6)
    nowhere = f"postgresql://bridge:{secret}@127.0.0.1:{free_port()}/desk"  # nothing listens
    for args in ((), ("--status",)):
        failed = bridge(tmp_path, nowhere, *args)
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert failed.stdout == ""
        assert len(failed.stderr.splitlines()) == 1, failed.stderr
        assert failed.stderr.startswith("schema_failed PostgreSQL unreachable: ")
        assert secret not in failed.stderr


def test_a_refusing_postgresql_is_one_line_and_exit_2(pg_url: str, tmp_path: Path) -> None:
    missing = urlunsplit(urlsplit(pg_url)._replace(path=f"/nope_{secrets.token_hex(4)}"))
    for args in ((), ("--status",)):
        failed = bridge(tmp_path, missing, *args)
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert len(failed.stderr.splitlines()) == 1, failed.stderr
        assert failed.stderr.startswith(
            "schema_failed PostgreSQL refused: InvalidCatalogNameError: database"
        )
