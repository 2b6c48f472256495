"""The embedded redis-server (ops/embedded/redis_server.py) as fault-injection tests use it: a
real redis-server that starts, stops, is killed -9, frozen (SIGSTOP: it does not answer) and
thawed (it answers again), keeps its AOF data over a restart, and refuses a port another
process holds with a clear error instead of "starting" a server that is already gone."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from ops.embedded import RedisServer

MakeRedis = Callable[..., RedisServer]


def client(server: RedisServer, timeout_s: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(
        server.url(), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def test_a_second_start_of_a_running_server_keeps_the_same_process(
    private_redis: RedisServer,
) -> None:
    proc = private_redis.proc
    assert proc is not None
    private_redis.start()
    assert private_redis.proc is proc
    assert proc.poll() is None
    assert RedisServer.server_pid(private_redis.data_dir) == proc.pid
    with client(private_redis) as c:
        assert c.ping()


def test_a_frozen_server_does_not_answer_and_answers_once_thawed(
    private_redis: RedisServer,
) -> None:
    with client(private_redis) as c:
        c.set("k", "v")
    private_redis.freeze()
    with client(private_redis, timeout_s=0.5) as c, pytest.raises(redis.TimeoutError):
        c.get("k")
    private_redis.thaw()
    with client(private_redis) as c:
        assert c.get("k") == b"v"


def test_stop_ends_a_frozen_server(private_redis: RedisServer) -> None:
    """stop() thaws first: a frozen redis-server would never act on SIGTERM."""
    private_redis.freeze()
    private_redis.stop()
    assert private_redis.proc is not None
    assert private_redis.proc.returncode == 0  # a clean SIGTERM shutdown, not a kill
    private_redis.stop()  # stopping a stopped server is a no-op
    with pytest.raises(redis.ConnectionError), client(private_redis, timeout_s=1) as c:
        c.ping()


def test_kill_ends_the_server_at_once_and_a_restart_on_aof_keeps_the_data(
    make_redis: MakeRedis,
) -> None:
    server = make_redis(aof=True)
    with client(server) as c:
        c.set("kept", "1")
    server.stop()  # a clean stop writes the AOF
    server.start()
    with client(server) as c:
        assert c.get("kept") == b"1"
    server.kill()
    assert server.proc is not None
    assert server.proc.returncode == -signal.SIGKILL
    # on a dead server, kill/freeze/thaw/stop do nothing (and do not raise)
    server.kill()
    server.freeze()
    server.thaw()
    server.stop()
    assert server.proc.returncode == -signal.SIGKILL
    server.start()
    with client(server) as c:
        assert c.get("kept") == b"1"


def test_without_aof_a_restart_starts_empty(private_redis: RedisServer) -> None:
    with client(private_redis) as c:
        c.set("gone", "1")
    private_redis.stop()
    private_redis.start()
    with client(private_redis) as c:
        assert c.get("gone") is None


def test_a_port_another_process_listens_on_fails_the_start_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = RedisServer(tmp_path / "redis", port=port)
        try:
            with pytest.raises(RuntimeError, match=rf"exited with code 1 .*127\.0\.0\.1:{port}"):
                server.start()
        finally:
            server.stop()
    assert server.proc is not None
    assert server.proc.returncode == 1
    assert b"in use" in (tmp_path / "redis" / "redis.log").read_bytes()


def test_server_pid_without_a_pidfile_is_none(tmp_path: Path) -> None:
    assert RedisServer.server_pid(tmp_path) is None
    (tmp_path / "redis-server.pid").write_text("not a pid\n")
    assert RedisServer.server_pid(tmp_path) is None
    (tmp_path / "redis-server.pid").write_text("")
    assert RedisServer.server_pid(tmp_path) is None
