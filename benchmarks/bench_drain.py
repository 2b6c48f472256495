"""Drain throughput of the writer's buffer against a raw COPY of the same rows, in one run.

    .venv/bin/python benchmarks/bench_drain.py [--rows 1000000]

1. A buffer file of N rows, written in the writer's own line format (`writer.lines.encode_line`).
2. The drain: a separate process (`bench_drain.py drain ...`, the real `BufferedStore.flush()` path:
   chunked read in a read-ahead thread, each line checked (`writer.lines.raw_line`), COPY text
   straight into `portfolio_greeks` (the staging table + INSERT ... SELECT ... ON CONFLICT path
   only when a chunk replays stored rows), COMMIT, checkpoint) into a private PostgreSQL, run
   under `/usr/bin/time -v` for its peak RSS.
3. The reference, in the same database: the same rows (as CSV) loaded with a raw COPY into a
   fresh table `LIKE portfolio_greeks INCLUDING ALL` (same columns and unique index), and, for
   information, into a fresh table without any index.

Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_buffer(path: Path, csv_path: Path, n: int) -> None:
    from shared.models import GreeksRow
    from writer.lines import encode_line

    with open(path, "wb") as buf, open(csv_path, "w") as csv:
        for base in range(0, n, 10_000):
            lines = []
            for i in range(base, min(base + 10_000, n)):
                row = GreeksRow(
                    T0 + timedelta(seconds=5 * i),
                    "PORTFOLIO",
                    float(i) * 1.5,
                    0.25 + i / 1e7,
                    -3.5,
                    12.0,
                    None if i % 100 == 0 else 600.0 + i,
                    "DU1234567",
                    "SOCKET",
                )
                lines.append(orjson.dumps(encode_line(row)))
                und = "" if row.underlying_price is None else repr(row.underlying_price)
                csv.write(
                    f"{row.ts.isoformat()},{row.contract},{row.delta!r},{row.gamma!r},"
                    f"{row.vega!r},{row.theta!r},{und}\n"
                )
            buf.write(b"\n".join(lines) + b"\n")


async def drain(dsn: str, buffer: str) -> None:
    """The drain process: the writer's BufferedStore draining the buffer into PostgreSQL."""
    from database.db_manager import DBManager
    from shared.config import load_settings
    from shared.models import ApiLogRow
    from writer.buffered_store import BufferedStore

    settings = load_settings({"DATABASE_URL": dsn, "BRIDGE_BUFFER_PATH": buffer}, dotenv=None)
    db = DBManager(dsn, min_size=0, connect_attempts=1)
    await db.connect()

    async def no_dead_letters(rejected: object) -> list[ApiLogRow]:
        raise AssertionError(f"unexpected dead letters: {rejected!r}")

    store = BufferedStore(settings, db, dead_letter=no_dead_letters)
    store.open_buffer()
    try:
        start = time.perf_counter()
        ok = await store.flush(force=True)
        seconds = time.perf_counter() - start
    finally:
        store.close()
        await db.close()
    print(f"DRAIN ok={ok} seconds={seconds:.3f}", flush=True)


async def reference_copy(dsn: str, csv_path: Path, *, with_index: bool) -> float:
    conn = await asyncpg.connect(dsn)
    table = "copy_reference" if with_index else "copy_reference_bare"
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        if with_index:
            await conn.execute(f"CREATE TABLE {table} (LIKE portfolio_greeks INCLUDING ALL)")
        else:
            await conn.execute(f"CREATE TABLE {table} (LIKE portfolio_greeks INCLUDING DEFAULTS)")
        start = time.perf_counter()
        await conn.copy_to_table(
            table,
            source=str(csv_path),
            format="csv",
            columns=[
                "timestamp",
                "contract",
                "delta",
                "gamma",
                "vega",
                "theta",
                "underlying_price",
            ],
        )
        return time.perf_counter() - start
    finally:
        await conn.close()


async def check(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        count = await conn.fetchval("SELECT count(*) FROM portfolio_greeks")
        disorder = await conn.fetchval("""
            SELECT count(*) FROM (SELECT timestamp, lag(timestamp) OVER (ORDER BY id) AS prev
            FROM portfolio_greeks) s WHERE prev >= timestamp""")
        same = await conn.fetchval("""
            SELECT count(*) FROM portfolio_greeks p JOIN copy_reference c
            USING (timestamp, contract)
            WHERE p.delta = c.delta AND p.gamma = c.gamma AND p.vega = c.vega
              AND p.theta = c.theta
              AND p.underlying_price IS NOT DISTINCT FROM c.underlying_price""")
    finally:
        await conn.close()
    print(f"check: {count} rows drained, {disorder} out of order, {same} identical to the COPY")
    if count != n or disorder or same != n:
        raise SystemExit("the drained rows differ from the reference")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    from ops.embedded import PostgresServer

    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        os.chmod(tmp, 0o755)
        folder = Path(tmp)
        server = PostgresServer(folder / "pgdata")
        server.start()
        try:
            dsn = server.url()
            buffer, csv_path = folder / "buffer.jsonl", folder / "rows.csv"
            csv_path.touch()
            t = time.perf_counter()
            write_buffer(buffer, csv_path, args.rows)
            os.chmod(csv_path, 0o644)
            print(
                f"buffer: {args.rows} rows, {buffer.stat().st_size / 1e6:.1f} MB "
                f"(written in {time.perf_counter() - t:.1f} s)"
            )
            proc = subprocess.run(
                ["/usr/bin/time", "-v", sys.executable, __file__, "drain", dsn, str(buffer)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, sep="\n")
                raise SystemExit("the drain process failed")
            found = re.search(r"DRAIN ok=True seconds=([\d.]+)", proc.stdout)
            if found is None:
                print(proc.stdout, proc.stderr[-3000:], sep="\n")
                raise SystemExit("the drain did not finish")
            drained_s = float(found[1])
            rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])  # type: ignore[index]
            copy_s = asyncio.run(reference_copy(dsn, csv_path, with_index=True))
            bare_s = asyncio.run(reference_copy(dsn, csv_path, with_index=False))
            asyncio.run(check(dsn, args.rows))
        finally:
            server.remove()
    drain_rate, copy_rate, bare_rate = (args.rows / s for s in (drained_s, copy_s, bare_s))
    print(
        f"drain (writer BufferedStore.flush: read-ahead thread, COPY text per 10k-row chunk): "
        f"{drained_s:.2f} s, {drain_rate:,.0f} rows/s"
    )
    print(
        f"raw COPY into LIKE portfolio_greeks INCLUDING ALL (same unique index): "
        f"{copy_s:.2f} s, {copy_rate:,.0f} rows/s"
    )
    print(
        f"raw COPY into a table without indexes (information): "
        f"{bare_s:.2f} s, {bare_rate:,.0f} rows/s"
    )
    print(f"ratio drain / COPY (same index): {drain_rate / copy_rate:.2f}  (target >= 0.35)")
    print(f"ratio drain / COPY (no index):   {drain_rate / bare_rate:.2f}")
    print(f"drain process peak RSS (/usr/bin/time -v): {rss_kb / 1024:.1f} MB  (target < 150)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "drain":
        asyncio.run(drain(sys.argv[2], sys.argv[3]))
    else:
        main()
