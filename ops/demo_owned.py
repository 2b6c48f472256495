"""The processes of a demo folder, proven from /proc, and their orderly end.

A process counts as the demo's only with proof that ties it to this folder, never by its name
alone:
- supervisord: the pid in `<dir>/supervisord.pid`, whose command line is a supervisord with
  `<dir>/supervisord.conf`;
- the programs it runs in Python (bridge, event listener, wrappers, simulator): working
  directory `<dir>` (supervisord's directory=) and `python -m <one of the demo's modules>`;
- PostgreSQL: a `postgres` binary whose working directory is `<dir>/pg/data` (the postmaster
  and its backends chdir there), or the private folder that `<dir>/pg/data` links to as root;
- Redis: a `redis-server` binary whose working directory is `<dir>/redis` (its --dir).
A process whose /proc entries cannot be read (another user's) is never counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

BRIDGE_MODULES = frozenset(
    {"writer", "collector", "watchdog", "ops.web", "ops.supervisor_events", "ops.waitfor"}
)
SERVICE_MODULES = frozenset({"ops.embedded", "ops.tether", "simulator.gateway"})
BRIDGE_STOP_S = 25.0  # the longest stopwaitsecs of the bridge group (20 s) and some room
SERVICE_STOP_S = 35.0  # PostgreSQL's stopwaitsecs (30 s) and some room
KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class Owned:
    pid: int
    what: str
    stop_signal: int
    bridge: bool  # bridge programs end first, then the services they use


def _read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None


def _link(pid: int, name: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (a zombie has ended: nobody we know will reap it soon)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None


def _pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def _module(cmdline: list[str]) -> str | None:
    """`X` of `python ... -m X ...`."""
    with contextlib.suppress(ValueError, IndexError):
        return cmdline[cmdline.index("-m") + 1]
    return None


def _binary(pid: int) -> str:
    exe = _link(pid, "exe") or ""
    return Path(exe.removesuffix(" (deleted)")).name


def supervisord_pid(demo_dir: Path) -> int | None:
    """The running supervisord of this demo folder, proven by its command line."""
    demo_dir = demo_dir.absolute()
    try:
        pid = int((demo_dir / "supervisord.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = _read_cmdline(pid)
    if not cmdline or not alive(pid):
        return None
    cwd = _link(pid, "cwd") or "/"
    is_supervisord = any(Path(a).name in ("supervisord", "supervisor.supervisord") for a in cmdline)
    conf = str(demo_dir / "supervisord.conf")
    with_conf = any(os.path.normpath(os.path.join(cwd, a)) == conf for a in cmdline)
    return pid if is_supervisord and with_conf else None


def programs(demo_dir: Path) -> list[Owned]:
    """Every process of the demo folder except supervisord itself."""
    folder = str(demo_dir.absolute())
    pg_data, redis_data = os.path.realpath(f"{folder}/pg/data"), f"{folder}/redis"
    me = os.getpid()
    out: list[Owned] = []
    for pid in _pids():
        cwd = _link(pid, "cwd")
        if pid == me or cwd not in (folder, pg_data, redis_data) or not alive(pid):
            continue
        if cwd == pg_data and _binary(pid) == "postgres":
            out.append(Owned(pid, "postgres", signal.SIGINT, bridge=False))
        elif cwd == redis_data and _binary(pid).startswith("redis-server"):
            out.append(Owned(pid, "redis-server", signal.SIGTERM, bridge=False))
        elif cwd == folder:
            module = _module(_read_cmdline(pid) or [])
            if module in BRIDGE_MODULES:
                out.append(Owned(pid, module, signal.SIGTERM, bridge=True))
            elif module in SERVICE_MODULES:
                out.append(Owned(pid, module, signal.SIGTERM, bridge=False))
    # SIGINT is the fast shutdown for the postmaster only; its backends stop with it
    postgres = {p.pid for p in out if p.what == "postgres"}
    return [
        Owned(p.pid, "postgres backend", 0, bridge=False)
        if p.pid in postgres and _ppid(p.pid) in postgres
        else p
        for p in out
    ]


def _signal(pids: Iterable[Owned], pick: Callable[[Owned], int]) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, pick(p))


def wait_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    """The pids still running after `timeout_s` (empty: all ended)."""
    end = time.monotonic() + timeout_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def end_in_order(
    owned: list[Owned],
    *,
    bridge_s: float = BRIDGE_STOP_S,
    services_s: float = SERVICE_STOP_S,
) -> list[int]:
    """Stop as supervisord would: the bridge first, then the services, each with its own
    signal and its grace; what outlives the grace is killed. Returns the pids still alive."""
    for group, grace in (([p for p in owned if p.bridge], bridge_s), (owned, services_s)):
        batch = [p for p in group if alive(p.pid)]
        _signal([p for p in batch if p.stop_signal], lambda p: p.stop_signal)
        left = set(wait_gone([p.pid for p in batch], grace))
        if left:
            _signal([p for p in batch if p.pid in left], lambda _p: signal.SIGKILL)
            wait_gone(left, KILL_WAIT_S)
    return [p.pid for p in owned if alive(p.pid)]


def remove_stale_postmaster_pid(data_dir: Path) -> bool:
    """Remove `postmaster.pid` when the pid in it is no running postgres (a reused pid would
    make PostgreSQL refuse to start). Left alone when that cannot be proven."""
    path = data_dir / "postmaster.pid"
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if alive(pid):
        binary = _binary(pid)
        if not binary or binary == "postgres":
            return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True
