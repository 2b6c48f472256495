"""`bridge drain` when it cannot finish: PostgreSQL unreachable (exit 1, "drain incomplete",
the buffer kept, and a later drain lands every row) and a buffer path it cannot read
(exit 1, "drain_failed")."""

from __future__ import annotations

import re
from pathlib import Path

from ops.embedded import free_port
from tests.integration.ops.test_drain import buffer_rows, drain, stored, ts, write_env


async def test_drain_with_postgresql_unreachable_keeps_the_buffer(
    pg_url: str, tmp_path: Path
) -> None:
    buffer = tmp_path / "buffer.jsonl"
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens
    env_file = write_env(
        tmp_path,
        DATABASE_URL=nowhere,
        BRIDGE_BUFFER_PATH=str(buffer),
        BRIDGE_SPOOL_PATH=str(tmp_path / "spool.jsonl"),
    )
    buffer_rows(buffer, 1, 100)
    before = buffer.read_bytes()
    failed = drain(env_file)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # the 100 rows, and the drain's own WARN api_logs rows about the outage after them
    left = re.search(
        rf"drain incomplete: (\d+) rows left in {re.escape(str(buffer))}", failed.stderr
    )
    assert left and int(left[1]) >= 100, failed.stderr
    assert "PostgreSQL unreachable?" in failed.stderr
    assert buffer.read_bytes()[: len(before)] == before, "not a row lost"
    env_file = write_env(
        tmp_path,
        DATABASE_URL=pg_url,
        BRIDGE_BUFFER_PATH=str(buffer),
        BRIDGE_SPOOL_PATH=str(tmp_path / "spool.jsonl"),
    )
    done = drain(env_file)
    assert done.returncode == 0, done.stderr
    assert (await stored(pg_url))[0] == [ts(i) for i in range(1, 101)]


def test_drain_of_an_unreadable_buffer_fails_with_its_reason(pg_url: str, tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.jsonl"
    buffer.mkdir()  # a folder where the buffer file should be
    env_file = write_env(
        tmp_path,
        DATABASE_URL=pg_url,
        BRIDGE_BUFFER_PATH=str(buffer),
        BRIDGE_SPOOL_PATH=str(tmp_path / "spool.jsonl"),
    )
    failed = drain(env_file)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "drain_failed" in failed.stderr
    assert "Is a directory" in failed.stderr
    assert buffer.is_dir()
