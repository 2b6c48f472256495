"""`bridge demo`: runs the demo profile (ops/demo.py) under one supervisord in the foreground.

- one demo per folder: a second `bridge demo` says how to reach and stop the running one and
  exits 1; `bridge demo --stop` stops it and waits until its programs are gone;
- before starting, what an earlier run left running (its supervisord killed -9) is ended, when
  it is proven to be this folder's (ops/demo_owned.py);
- supervisord runs in its own session: Ctrl-C, SIGTERM and a closed terminal (SIGHUP) reach
  only `bridge demo`, which stops supervisord in order (bridge, then services); if `bridge
  demo` itself ends, supervisord gets SIGTERM (parent-death signal), and so do its programs
  when supervisord ends;
- prints how long the first PORTFOLIO row took and how to look at the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from database.reads import READ_ERRORS, Reader
from ops.demo import Demo, _shown, instructions, render
from ops.demo_owned import (
    alive,
    end_in_order,
    programs,
    remove_stale_postmaster_pid,
    supervisord_pid,
    wait_gone,
)
from ops.embedded import pg_private
from ops.embedded.common import PG_USER_AS_ROOT, pg_bin_dir, pg_user, pg_user_exists
from shared.names import PORTFOLIO_CONTRACT
from shared.process import die_with_parent
from shared.supervisor_rpc import RPC_ERRORS, Supervisor

FIRST_ROW_WAIT_S = 90.0
ORPHANS_END_S = 40.0  # programs stop by themselves when supervisord dies (parent-death signal)
STOP_WAIT_S = 120.0  # the stopwaitsecs of bridge and services, in turn, and some room


async def wait_first_row(
    dsn: str, timeout_s: float, alive: subprocess.Popen[bytes], since: datetime
) -> float | None:
    """Seconds until a PORTFOLIO row stamped `since` or later exists (rows of an earlier run do
    not count); None: timed out or supervisord ended."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s and alive.poll() is None:
        with contextlib.suppress(*READ_ERRORS):
            conn = await Reader.connect(dsn, timeout_s=2.0)
            try:
                found = await conn.newest_portfolio_row(PORTFOLIO_CONTRACT)
            finally:
                await conn.close()
            if found and found["timestamp"] >= since:
                return time.monotonic() - start
        await asyncio.sleep(0.5)
    return None


def how_to_reach(demo_dir: Path) -> str:
    rel = _shown(demo_dir)
    return (
        f"  look at it: .venv/bin/bridge --env-file {_shown(demo_dir / '.env')} status\n"
        f"              .venv/bin/supervisorctl -c {rel}/supervisord.conf status\n"
        f"  stop it:    .venv/bin/bridge demo --dir {rel} --stop   (or Ctrl-C in its terminal)"
    )


class DemoLock:
    """One `bridge demo` per folder: an exclusive flock on `<dir>/demo.lock`, released by the
    kernel when the process ends, however it ends (no stale lock after a kill -9)."""

    def __init__(self, demo_dir: Path) -> None:
        self.path = demo_dir / "demo.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip()
        return "?"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _say(text: str, *, err: bool = False) -> None:
    """Print, even to a terminal that is gone (after SIGHUP writes to it fail)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _detach_from_terminal() -> None:
    """After a hangup: stdout/stderr to /dev/null, so that nothing fails writing to them."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)


def _follow(path: Path, done: threading.Event, interval_s: float = 0.3) -> None:
    """Copy the lines supervisord appends to its log to our stdout (supervisord itself does not
    write to the terminal: a closed terminal must not fail its writes)."""
    pos = path.stat().st_size if path.exists() else 0
    while not done.wait(interval_s):
        with contextlib.suppress(OSError), path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < pos:  # rotated
                pos = 0
            f.seek(pos)
            chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            pos += cut
            if cut:
                _say(chunk[:cut].decode(errors="replace").rstrip("\n"))


def _refuse_second(demo_dir: Path, lock: DemoLock) -> int | None:
    """Exit code 1 with how to reach and stop the running demo, or None when none runs."""
    sup = supervisord_pid(demo_dir)
    if lock.acquire() and sup is None:
        return None
    lock.release()
    who = f"supervisord pid {sup}" if sup is not None else f"`bridge demo` pid {lock.holder()}"
    _say(f"the demo in {demo_dir} is already running ({who}):\n{how_to_reach(demo_dir)}", err=True)
    return 1


def clean_leftovers(demo_dir: Path, whose: str = "an earlier run") -> bool:
    """End what `whose` left behind (proven to be this folder's); False if some of it could not
    be ended."""
    left = programs(demo_dir)
    if left:
        shown = ", ".join(f"{p.what} (pid {p.pid})" for p in left)
        _say(f"demo: stopping what {whose} left running: {shown}")
        still = end_in_order(left)
        if still:
            _say(f"demo: could not end pids {still}; see {demo_dir}/logs/", err=True)
            return False
    remove_stale_postmaster_pid(demo_dir / "pg" / "data")
    return True


def _start_supervisord(demo: Demo) -> subprocess.Popen[bytes]:
    """supervisord in its own session (a terminal's hangup reaches only us: we stop it in
    order), silent on the terminal, and sent SIGTERM if we end without stopping it."""
    out = open(demo.dir / "logs" / "supervisord.out", "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-s", "-c", str(demo.conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no thread runs yet here (the log follower starts after)
            preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()),  # noqa: PLW1509
        )
    finally:
        out.close()


def prepare_postgres(demo_dir: Path) -> None:
    """As root, say first what the demo makes outside the repository, then make it: the
    system user PostgreSQL runs as (when absent) and the private folder of its cluster."""
    if os.geteuid() != 0:
        return
    _say(
        f"demo: running as root; PostgreSQL refuses root, so it runs as the system user "
        f"`{PG_USER_AS_ROOT}`"
    )
    if not pg_user_exists():
        _say(
            f"demo: creating the system user `{PG_USER_AS_ROOT}` (useradd --system: no home "
            "folder, no login shell); it stays after `make clean` (userdel pgserver removes it)"
        )
    user = pg_user()
    if user is None:
        return
    data = demo_dir / "pg" / "data"
    place, made = pg_private.ensure(data, pg_bin_dir().parent, user)
    _say(
        f"demo: {'made' if made else 'using'} the private folder {place.home} (mode 0700, owned "
        f"by {PG_USER_AS_ROOT}) for its cluster and server files; {_shown(data)} links to it, "
        "`make clean` removes it. No folder's permissions are changed."
    )


def run_demo(demo_dir: Path, *, render_only: bool = False) -> int:
    demo_dir = demo_dir.absolute()
    demo_dir.mkdir(parents=True, exist_ok=True)
    lock = DemoLock(demo_dir)
    refused = _refuse_second(demo_dir, lock)
    if refused is not None:
        return refused
    if not render_only:
        if not clean_leftovers(demo_dir):
            return 1
        prepare_postgres(demo_dir)  # after: an old cluster may move, never under a server
    demo = render(demo_dir)
    if render_only:
        print(demo.conf)
        return 0
    print(
        f"demo: PostgreSQL 127.0.0.1:{demo.ports['pg_port']}, Redis 127.0.0.1:"
        f"{demo.ports['redis_port']}, IB Gateway simulator 127.0.0.1:"
        f"{demo.ports['gateway_port']}, web console {demo.web_url}; data and logs in {demo.dir}",
        flush=True,
    )
    since = datetime.now(UTC)
    proc = _start_supervisord(demo)
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum == signal.SIGHUP:
            _detach_from_terminal()
        if not stopping and proc.poll() is None:
            stopping = True
            proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    done = threading.Event()
    follower = threading.Thread(
        target=_follow, args=(demo.dir / "logs" / "supervisord.log", done), daemon=True
    )
    follower.start()
    started = time.monotonic()
    seconds = asyncio.run(wait_first_row(demo.database_url, FIRST_ROW_WAIT_S, proc, since))
    if seconds is not None:
        _say(
            f"\n*** first new PORTFOLIO row in PostgreSQL {time.monotonic() - started:.1f} s "
            f"after start ***"
        )
        _say(instructions(demo))
    elif proc.poll() is None and not stopping:
        _say(
            f"\n*** no new PORTFOLIO row after {FIRST_ROW_WAIT_S:g} s: see {demo.dir}/logs/ "
            "and `bridge status` ***"
        )
        _say(instructions(demo))
    code = int(proc.wait())
    done.set()
    follower.join(2.0)
    if not stopping:
        # stopped from outside (`--stop`), or killed: its programs end with it; make sure of it
        _say(f"demo: supervisord ended (exit {code})", err=code != 0)
        wait_gone([p.pid for p in programs(demo_dir)], ORPHANS_END_S)
        clean_leftovers(demo_dir, "supervisord")
    lock.release()
    return code


def stop_demo(demo_dir: Path, timeout_s: float = STOP_WAIT_S) -> int:
    """Stop the folder's demo through its supervisord (bridge first, then services), wait until
    its programs and its `bridge demo` are gone; end what is left over without supervisord."""
    demo_dir = demo_dir.absolute()
    sup = supervisord_pid(demo_dir)
    owned = programs(demo_dir)
    if sup is None and not owned:
        _say(f"no demo running in {demo_dir}")
        return 0
    if sup is not None:
        _say(f"demo: stopping supervisord pid {sup} and its programs ...")
        try:
            Supervisor(f"unix://{demo_dir / 'supervisor.sock'}", timeout_s=10).call(
                "supervisor.shutdown"
            )
        except RPC_ERRORS:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(sup, signal.SIGTERM)
        wait_gone([sup, *(p.pid for p in owned)], timeout_s)
    left = [p for p in programs(demo_dir) if alive(p.pid)]
    if (sup is not None and alive(sup)) or (left and end_in_order(left)):
        _say(f"demo: still running after {timeout_s:g} s; see {demo_dir}/logs/", err=True)
        return 1
    lock = DemoLock(demo_dir)
    end = time.monotonic() + 10.0
    while not lock.acquire() and time.monotonic() < end:  # its `bridge demo` ends by itself
        time.sleep(0.1)
    lock.release()
    _say(f"demo: stopped (nothing of it runs in {demo_dir})")
    return 0
