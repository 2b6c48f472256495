"""A private PostgreSQL cluster from pgserver's binaries.

As root, postgres runs as `pgserver` from a private folder made for it (ops/embedded/pg_private.py):
no folder above the data folder or the binaries is opened to other users."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ops.embedded import pg_private
from ops.embedded.common import (
    children,
    free_port,
    pg_bin_dir,
    pg_user,
    stop_process,
    wait_port,
)


class PostgresServer:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        # as root: a symbolic link to the cluster in its private folder
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = pg_user()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._place: pg_private.Place | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _layout(self) -> tuple[Path, Path]:
        """(the cluster's folder, the binaries' folder) postgres runs with."""
        if self.user is None:
            return self.data_dir, pg_bin_dir()
        if self._place is None:
            self._place, _ = pg_private.ensure(self.data_dir, pg_bin_dir().parent, self.user)
            os.chown(self.socket_dir, self.user.pw_uid, self.user.pw_gid)
        return self._place.data, self._place.bin_dir

    @property
    def cluster_dir(self) -> Path:
        return self._layout()[0]

    @property
    def bin_dir(self) -> Path:
        return self._layout()[1]

    def _popen_kwargs(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def init(self) -> None:
        data, bins = self._layout()
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(data, self.user.pw_uid, self.user.pw_gid)
        data.chmod(0o700)
        subprocess.run(
            [
                str(bins / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._popen_kwargs(),  # type: ignore[call-overload]
        )

    def init_standby(self, primary_port: int) -> None:
        """Make this cluster a streaming standby of the server on 127.0.0.1:`primary_port`: a
        base backup with `primary_conninfo` and `standby.signal` written (-R). Promote it with
        `SELECT pg_promote()`."""
        data, bins = self._layout()
        if (data / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(bins / "pg_basebackup"),
                *("-D", str(data), "-h", "127.0.0.1", "-p", str(primary_port)),
                *("-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            **self._popen_kwargs(),  # type: ignore[call-overload]
        )

    def command(self) -> list[str]:
        data, bins = self._layout()
        return [
            str(bins / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.socket_dir),
            "-c",
            "fsync=on",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=64MB",
        ]

    def start(self, wait_s: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.init()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=log,
            start_new_session=True,
            **self._popen_kwargs(),  # type: ignore[call-overload]
        )
        log.close()
        self._wait_ready(wait_s)

    def _wait_ready(self, wait_s: float) -> None:
        wait_port(self.port, wait_s, self.proc)
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            probe = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-t",
                    "1",
                ],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on port {self.port} not ready; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster), as `pg_ctl stop -m fast`."""
        stop_process(self.proc, signal.SIGINT, timeout_s, self.thaw, self.kill)

    def kill(self) -> None:
        """kill -9 the postmaster and its children (its process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal_tree(signal.SIGKILL)
        self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend (each backend has its own session, so
        signalling the postmaster's process group would leave them running)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_tree(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal_tree(signal.SIGCONT)

    def _signal_tree(self, sig: int) -> None:
        assert self.proc is not None
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @staticmethod
    def server_pid(data_dir: Path) -> int | None:
        """PID of the postmaster of `data_dir` (first line of postmaster.pid)."""
        try:
            return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cleanup(self) -> None:
        """Stop; the cluster stays for a next start."""
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def remove(self) -> None:
        """Stop and delete the cluster (as root: its private folder too)."""
        self.cleanup()
        if pg_private.remove(self.data_dir) is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
