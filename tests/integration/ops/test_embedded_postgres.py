"""The embedded PostgreSQL (ops/embedded/postgres_server.py) as fault-injection tests use it: a
real cluster that starts, stops (fast shutdown), is killed -9 with its backends, frozen
(SIGSTOP: it does not answer) and thawed (it answers again), starts again on the same data,
and refuses a port another process holds or a readiness wait that runs out, with a clear
error."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ops.embedded import PostgresServer, pg_private
from ops.embedded.common import children
from tests.helpers import wait_for


@pytest.fixture
def spare_pg() -> Iterator[PostgresServer]:
    """A PostgresServer object not started yet, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-test-pg-"))
    server = PostgresServer(folder / "pgdata")
    try:
        yield server
    finally:
        server.thaw()
        server.remove()
        shutil.rmtree(folder, ignore_errors=True)


async def query(server: PostgresServer, sql: str, timeout_s: float = 10.0) -> object:
    conn = await asyncpg.connect(server.url(), timeout=timeout_s)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_a_second_start_keeps_the_running_postmaster(private_pg: PostgresServer) -> None:
    proc = private_pg.proc
    assert proc is not None
    await asyncio.to_thread(private_pg.start)
    assert private_pg.proc is proc
    assert PostgresServer.server_pid(private_pg.cluster_dir) == proc.pid
    assert pg_private.server_running(private_pg.cluster_dir)
    assert await query(private_pg, "SELECT 1") == 1


async def test_a_frozen_server_does_not_answer_and_answers_once_thawed(
    private_pg: PostgresServer,
) -> None:
    conn = await asyncpg.connect(private_pg.url())
    try:
        await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        private_pg.freeze()
        # the backend of an open connection is frozen too, not only the postmaster
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT v FROM t", timeout=0.5)
        with pytest.raises(TimeoutError):
            await asyncpg.connect(private_pg.url(), timeout=0.5)
        private_pg.thaw()
    finally:
        conn.terminate()
    assert await query(private_pg, "SELECT v FROM t") == 7


async def test_a_frozen_server_is_reported_not_ready_with_its_log(
    private_pg: PostgresServer,
) -> None:
    """Its port accepts connections (the kernel does), but it never answers: the readiness
    wait start() runs ends with a TimeoutError that names the server's log."""
    private_pg.freeze()
    with pytest.raises(TimeoutError, match=f"port {private_pg.port} not ready; see .*\\.log"):
        await asyncio.to_thread(private_pg._wait_ready, 1.0)
    private_pg.thaw()
    await asyncio.to_thread(private_pg._wait_ready, 10.0)


async def test_stop_and_start_again_on_the_same_data(private_pg: PostgresServer) -> None:
    await query(private_pg, "CREATE TABLE kept AS SELECT 42 AS v")
    private_pg.freeze()  # stop() thaws first: a frozen postmaster would not act on SIGINT
    await asyncio.to_thread(private_pg.stop)
    assert private_pg.proc is not None
    assert private_pg.proc.returncode == 0  # a fast shutdown, not a kill
    assert not pg_private.server_running(private_pg.cluster_dir)
    assert PostgresServer.server_pid(private_pg.cluster_dir) is None  # postmaster.pid removed
    await asyncio.to_thread(private_pg.stop)  # stopping a stopped server is a no-op
    await asyncio.to_thread(private_pg.start)
    assert await query(private_pg, "SELECT v FROM kept") == 42


async def test_kill_ends_postmaster_and_backends_and_a_restart_recovers(
    private_pg: PostgresServer,
) -> None:
    await query(private_pg, "CREATE TABLE committed AS SELECT 1 AS v")
    conn = await asyncpg.connect(private_pg.url())
    assert private_pg.proc is not None
    backends = children(private_pg.proc.pid)
    assert backends  # checkpointer, walwriter, the connection's backend...
    private_pg.kill()
    conn.terminate()
    assert private_pg.proc.returncode == -signal.SIGKILL
    # SIGKILL cannot be caught: each backend ends (gone, or a zombie not yet reaped)
    await wait_for(
        lambda: all(_state(pid) in (None, "Z") for pid in backends), 10, "the backends' end"
    )
    # on a dead server, kill/freeze/thaw do nothing (and do not raise)
    private_pg.kill()
    private_pg.freeze()
    private_pg.thaw()
    # the stale postmaster.pid and no live backend: the restart recovers the committed data
    await asyncio.to_thread(private_pg.start)
    assert await query(private_pg, "SELECT v FROM committed") == 1


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return None


def test_a_port_another_process_listens_on_fails_the_start_clearly(
    spare_pg: PostgresServer,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spare_pg.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"exited with code 1 .*:{spare_pg.port} taken"):
            spare_pg.start()
    assert b"could not bind" in spare_pg.log_path.read_bytes()


def test_a_start_that_is_not_listening_in_time_times_out(spare_pg: PostgresServer) -> None:
    spare_pg.init()  # initdb first: the timeout is the server's, not initdb's
    with pytest.raises(TimeoutError, match=f"nothing listening on 127.0.0.1:{spare_pg.port}"):
        spare_pg.start(wait_s=0.0)


def test_remove_deletes_a_plain_data_folder(tmp_path: Path) -> None:
    """A data folder that is not a link to a private folder (an earlier layout, or a server
    that never ran as root) is deleted as it is."""
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("16\n")
    server = PostgresServer(data)
    server.remove()
    assert not data.exists()
    assert not server.socket_dir.exists()


def test_server_pid_of_a_folder_without_a_running_cluster_is_none(tmp_path: Path) -> None:
    assert PostgresServer.server_pid(tmp_path) is None
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert PostgresServer.server_pid(tmp_path) is None
