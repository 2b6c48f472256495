"""The demo profile, written by `bridge demo` (what `make demo` runs; ops/demo_run.py runs it):

1. picks free loopback ports for PostgreSQL, Redis and the IB Gateway simulator (the ones of the
   last run when they are still free), so nothing collides with services on the machine;
2. writes `<dir>/.env` (the bridge's configuration, also read by `bridge status`) and renders
   deploy/demo.conf.in into `<dir>/supervisord.conf`, with the bridge group copied from
   deploy/supervisord.conf (same programs, same start/stop settings; run in `<dir>`);
3. says how to look at the data and how to stop it.

Data (PostgreSQL cluster, Redis AOF), logs, buffer and spool stay in `<dir>` (default `.demo/`
in the repository, ignored by git) from one run to the next.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ops.embedded import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BRIDGE_SECTIONS = (
    "group:bridge",
    "program:writer",
    "program:collector",
    "program:watchdog",
    "program:web",
    "eventlistener:bridge_events",
)
PORT_NAMES = ("pg_port", "redis_port", "gateway_port", "gateway_control_port", "web_port")
SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes


@dataclass(frozen=True)
class Demo:
    dir: Path
    ports: dict[str, int]
    env: dict[str, str]

    @property
    def conf(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.dir / "supervisor.sock"

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['BRIDGE_WEB_PORT']}/"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the servers bind: a port the last run left in TIME_WAIT is still free for them
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except (OSError, OverflowError):  # OverflowError: no port number (a hand-edited file)
            return False
    return True


def _free_port(taken: set[int], pick: Callable[[], int] = free_port) -> int:
    """A free port not `taken` and none of the services' usual ones (`pick`: the kernel's)."""
    for _ in range(100):
        port = pick()
        if port not in taken and port not in (5432, 6379, 4001, 4002):
            return port
    raise RuntimeError("no free loopback port found")


def choose_ports(demo_dir: Path) -> dict[str, int]:
    """The ports of the last run when they are all still free, else new free ones."""
    saved_path = demo_dir / "ports.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):  # any bad file: new ports
        saved = json.loads(saved_path.read_text())
        ports = {name: int(saved[name]) for name in PORT_NAMES}
        if len(set(ports.values())) == len(ports) and all(map(_port_free, ports.values())):
            return ports
    ports = {}
    for name in PORT_NAMES:
        ports[name] = _free_port(set(ports.values()))
    return ports


def demo_env(demo_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    """The bridge's configuration in the demo (the rest are the defaults)."""
    return {
        "IB_API_MODE": "SOCKET",
        "IB_HOST": "127.0.0.1",
        "IB_PORT": str(ports["gateway_port"]),
        "IB_CLIENT_ID": "17",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{ports['pg_port']}/postgres",
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis_port']}/0",
        "BRIDGE_REDIS_PREFIX": "bridge:",
        "BRIDGE_BUFFER_PATH": str(demo_dir / "buffer.jsonl"),
        "BRIDGE_SPOOL_PATH": str(demo_dir / "spool.jsonl"),
        "BRIDGE_SUPERVISOR_URL": f"unix://{demo_dir / 'supervisor.sock'}",
        "BRIDGE_COLLECTOR_PROCESS": "bridge:collector",
        "BRIDGE_TICK_LEDGER": "",
        "BRIDGE_WEB_HOST": "127.0.0.1",
        "BRIDGE_WEB_PORT": str(ports["web_port"]),
    }


def _supervisor_quote(value: str) -> str:
    escaped = value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def bridge_sections(python: str) -> str:
    """deploy/supervisord.conf's bridge group, adapted to run in the demo folder."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "supervisord.conf", encoding="utf-8")
    out: list[str] = []
    for section in BRIDGE_SECTIONS:
        out.append(f"[{section}]")
        for key, raw in parser.items(section):
            value = "%(here)s" if key == "directory" else raw
            value = value.replace("%(here)s/../.venv/bin/python", python)
            value = value.replace("%(here)s/run/", "%(here)s/logs/")
            out.append(f"{key}={value}")
        out.append("")
    return "\n".join(out)


def render(
    demo_dir: Path,
    overrides: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    python: str = sys.executable,
) -> Demo:
    """Write `<dir>/.env`, `<dir>/ports.json` and `<dir>/supervisord.conf`; no process starts."""
    demo_dir = demo_dir.absolute()
    sock = demo_dir / "supervisor.sock"
    if len(str(sock)) > SOCKET_PATH_MAX:
        raise ValueError(f"demo folder path too long for a unix socket: {sock}")
    for sub in ("logs", "pg", "redis"):
        (demo_dir / sub).mkdir(parents=True, exist_ok=True)
    ports = ports or choose_ports(demo_dir)
    env = demo_env(demo_dir, ports)
    env.update(overrides or {})
    (demo_dir / "ports.json").write_text(json.dumps(ports, indent=1) + "\n")
    lines = ["# written by `bridge demo`: the demo's configuration (rewritten at each start)"]
    lines += [f"{k}={v}" for k, v in env.items()]
    (demo_dir / ".env").write_text("\n".join(lines) + "\n")
    template = Template((DEPLOY / "demo.conf.in").read_text(encoding="utf-8"))
    environment = ",".join(
        f"{k}={_supervisor_quote(v)}" for k, v in {"PYTHONUNBUFFERED": "1", **env}.items()
    )
    text = template.substitute(
        environment=environment, python=python, **{k: str(v) for k, v in ports.items()}
    )
    waits = f"127.0.0.1:{ports['pg_port']} 127.0.0.1:{ports['redis_port']}"
    sections = bridge_sections(python)
    # the demo's bridge waits (bounded) for its services, so a first initdb costs no retry
    sections = sections.replace(
        f"command={python} -m writer",
        f"command={python} -m ops.waitfor {waits} -- {python} -m writer",
    ).replace(
        f"command={python} -m collector",
        f"command={python} -m ops.waitfor {waits} 127.0.0.1:{ports['gateway_port']} -- "
        f"{python} -m collector",
    )
    demo = Demo(demo_dir, ports, env)
    demo.conf.write_text(text + "\n" + sections, encoding="utf-8")
    return demo


def _shown(path: Path) -> str:
    """`path` relative to the current directory when it is inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def instructions(demo: Demo) -> str:
    rel = _shown(demo.dir)
    env_file = _shown(demo.dir / ".env")
    pg, rd = demo.ports["pg_port"], demo.ports["redis_port"]
    prefix = demo.env.get("BRIDGE_REDIS_PREFIX", "bridge:")
    return f"""
The risk console (net Greeks, book, health; /metrics, /healthz): {demo.web_url}
How to look at it (from the repository root, in another terminal):
  .venv/bin/bridge --env-file {env_file} tail          # new rows as a table (Ctrl-C ends)
  .venv/bin/bridge --env-file {env_file} status        # health; --json for machines
  .venv/bin/supervisorctl -c {rel}/supervisord.conf status
  .venv/bin/supervisorctl -c {rel}/supervisord.conf restart bridge:writer
  psql "postgresql://postgres@127.0.0.1:{pg}/postgres" -c "SELECT * FROM portfolio_greeks ORDER BY timestamp DESC LIMIT 5"
  redis-cli -p {rd} XINFO GROUPS {prefix}greeks
  logs: {rel}/logs/   (psql/redis-cli only if installed; `bridge tail` needs nothing else)
Ctrl-C here (or closing this terminal) stops everything; so does `bridge demo --stop`.
"""  # noqa: E501
