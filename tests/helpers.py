"""Helpers for tests: a clean environment for bridge processes, and polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def bridge_env(**overrides: str) -> dict[str, str]:
    """Environment for a bridge process under test: nothing inherited that could leak in."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("IB_", "IBKR_", "BRIDGE_"))}
    keep.pop("DATABASE_URL", None)
    keep.pop("REDIS_URL", None)
    keep.update({"BRIDGE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    keep.update(overrides)
    return keep


async def wait_for(
    predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll an async or sync predicate until true; fail with `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


@contextlib.contextmanager
def supervisord_with_collector(
    program: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """A real `supervisord -n` in a short tmp folder (unix socket path limit) running one
    program `bridge:collector` whose [program:collector] lines (command=..., etc.) are
    `program` ({folder} is replaced by the folder). Yields (process, folder, socket); ended by
    its PID, folder removed."""
    folder = Path(tempfile.mkdtemp(prefix="wd-sv-"))
    sock = folder / "supervisor.sock"
    conf = folder / "supervisord.conf"
    conf.write_text(f"""\
[unix_http_server]
file={sock}
chmod=0700

[supervisord]
logfile={folder}/supervisord.log
pidfile={folder}/supervisord.pid
childlogdir={folder}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[group:bridge]
programs=collector

[program:collector]
{program.replace("{folder}", str(folder))}
""")
    out = folder / "supervisord.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "supervisord"), "-n", "-c", str(conf)],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < end, "supervisord did not open its socket"
            time.sleep(0.05)
        yield proc, folder, sock
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)
