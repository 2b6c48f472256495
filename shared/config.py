"""Typed, frozen settings built once from the environment (and a `.env` file when present).

Every variable is declared once in `VARIABLES` with its default and meaning; `deploy/.env.example`
is generated from the same table (`bridge check-config --example`). A bad value raises
`ConfigError`, which the entry points turn into one ERROR line and exit code 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

ApiMode = Literal["SOCKET", "PORTAL"]
API_MODES: tuple[ApiMode, ...] = ("SOCKET", "PORTAL")
MARKET_DATA_TYPES = {"LIVE": 1, "FROZEN": 2, "DELAYED": 3, "DELAYED_FROZEN": 4}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """One invalid variable: its name, the offending value (masked) and what is allowed."""

    def __init__(self, variable: str, value: str, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"{variable}={value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable("IB_API_MODE", "SOCKET", "transport: SOCKET (IB Gateway, ib_async) or PORTAL"),
    Variable("IB_HOST", "127.0.0.1", "IB Gateway host (SOCKET)"),
    Variable("IB_PORT", "4001", "IB Gateway API port (SOCKET); 4001 live, 4002 paper"),
    Variable("IB_CLIENT_ID", "17", "API client id of the collector (SOCKET), 0..2147483647"),
    Variable("IB_ACCOUNT", "", "account to read; empty = the only managed account"),
    Variable("IB_CONNECT_TIMEOUT_S", "10", "bound on one connect attempt, seconds"),
    Variable(
        "IB_MARKET_DATA_TYPE",
        "FROZEN",
        "LIVE, FROZEN, DELAYED or DELAYED_FROZEN (FROZEN: last values after the close)",
    ),
    Variable("IBKR_GATEWAY_URL", "https://localhost:5000", "Client Portal gateway base (PORTAL)"),
    Variable("IBKR_CA_FILE", "", "PEM file to verify the Client Portal certificate (PORTAL)"),
    Variable(
        "IBKR_TLS_VERIFY",
        "1",
        "1 verify the portal's TLS certificate; 0 skip (only for a gateway on loopback)",
    ),
    Variable("DATABASE_URL", "", "PostgreSQL URL, e.g. postgresql://user:pw@host:5432/db", True),
    Variable("REDIS_URL", "", "Redis URL, e.g. redis://127.0.0.1:6379/0", True),
    Variable("BRIDGE_REDIS_PREFIX", "bridge:", "prefix of every Redis key of this bridge"),
    Variable(
        "BRIDGE_BUFFER_PATH",
        "~/.portfolio_bridge_buffer.jsonl",
        "writer's JSON Lines buffer while PostgreSQL is down",
    ),
    Variable(
        "BRIDGE_SPOOL_PATH",
        "~/.portfolio_bridge_spool.jsonl",
        "collector's JSON Lines spool while Redis is down",
    ),
    Variable("BRIDGE_POLL_INTERVAL_S", "5", "tick interval of the collector, seconds"),
    Variable("BRIDGE_FLUSH_RETRY_S", "60", "retry period of the writer while PostgreSQL is down"),
    Variable("BRIDGE_WATCHDOG_INTERVAL_S", "30", "watchdog check period, seconds"),
    Variable("BRIDGE_HEARTBEAT_TTL_S", "20", "collector heartbeat lifetime in Redis, seconds"),
    Variable("BRIDGE_RECONNECT_RETRIES", "3", "watchdog retries after a failed reconnect"),
    Variable("BRIDGE_BACKOFF_BASE_S", "2", "first back-off delay, doubled per retry"),
    Variable("BRIDGE_BACKOFF_CAP_S", "30", "largest back-off delay"),
    Variable("BRIDGE_GREEKS_GRACE_S", "10", "wait for Greeks after (re)subscribing, seconds"),
    Variable("BRIDGE_GREEKS_MAX_AGE_S", "60", "carry last known Greeks forward at most this long"),
    Variable("BRIDGE_UNDERLYING", "", "symbol whose price is the PORTFOLIO underlying_price"),
    Variable("BRIDGE_PER_UNDERLYING", "0", "1: also write one row per underlying"),
    Variable("BRIDGE_WRITER_BATCH", "500", "entries read per XREADGROUP call"),
    Variable("BRIDGE_WRITER_CONSUMER", "writer-1", "stable consumer name of this writer"),
    Variable("BRIDGE_CLAIM_IDLE_S", "60", "claim entries idle this long from a dead consumer"),
    Variable("BRIDGE_STOP_GRACE_S", "4", "time to finish the batch in hand on SIGTERM"),
    Variable(
        "BRIDGE_SUPERVISOR_URL",
        "",
        "supervisord XML-RPC URL (unix:///path/to/sock or http://host:port) for the watchdog",
    ),
    Variable("BRIDGE_COLLECTOR_PROCESS", "bridge:collector", "supervisord name of the collector"),
    Variable("BRIDGE_TICK_LEDGER", "", "file where the collector records every row it produced"),
    Variable("BRIDGE_LOG_FORMAT", "text", "text (people) or json (log shippers)"),
    Variable("BRIDGE_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)
_BY_NAME = {v.name: v for v in VARIABLES}


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***` (safe for logs and repr)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, optional `export `, single or double quotes."""
    result: dict[str, str] = {}
    if not path.is_file():
        return result
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        result[key] = value
    return result


@dataclass(frozen=True)
class Settings:
    ib_api_mode: ApiMode
    ib_host: str
    ib_port: int
    ib_client_id: int
    ib_account: str
    ib_connect_timeout_s: float
    ib_market_data_type: int
    ibkr_gateway_url: str
    ibkr_ca_file: Path | None
    ibkr_tls_verify: bool
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    redis_prefix: str
    buffer_path: Path
    spool_path: Path
    poll_interval_s: float
    flush_retry_s: float
    watchdog_interval_s: float
    heartbeat_ttl_s: float
    reconnect_retries: int
    backoff_base_s: float
    backoff_cap_s: float
    greeks_grace_s: float
    greeks_max_age_s: float
    underlying: str | None
    per_underlying: bool
    writer_batch: int
    writer_consumer: str
    claim_idle_s: float
    stop_grace_s: float
    supervisor_url: str
    collector_process: str
    tick_ledger: Path | None
    log_format: str
    log_level: str

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.masked().items())
        return f"Settings({shown})"

    def masked(self) -> dict[str, Any]:
        """Every setting, with the secrets in URLs masked: safe to print."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("database_url", "redis_url", "supervisor_url", "ibkr_gateway_url"):
                value = mask_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL", "", "required: postgresql://user@host:port/db")
        return self.database_url

    def require_redis(self) -> str:
        if not self.redis_url:
            raise ConfigError("REDIS_URL", "", "required: redis://host:port/db or unix:///path")
        return self.redis_url


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return _BY_NAME[name].default
        return value.strip()

    def shown(self, name: str, value: str) -> str:
        return mask_url(value) if _BY_NAME[name].secret else value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.raw(name)
        upper = value.upper() if allowed == tuple(a.upper() for a in allowed) else value
        if upper not in allowed:
            raise ConfigError(name, value, "allowed: " + ", ".join(allowed))
        return upper

    def integer(self, name: str, lo: int, hi: int) -> int:
        value = self.raw(name)
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, value, f"an integer from {lo} to {hi}") from None
        if not lo <= number <= hi:
            raise ConfigError(name, value, f"an integer from {lo} to {hi}")
        return number

    def seconds(self, name: str, lo: float = 0.0, hi: float = 86400.0) -> float:
        value = self.raw(name)
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, value, f"a number of seconds from {lo} to {hi}") from None
        if not (lo <= number <= hi):  # also rejects NaN
            raise ConfigError(name, value, f"a number of seconds from {lo} to {hi}")
        return number

    def boolean(self, name: str) -> bool:
        value = self.raw(name).lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(name, value, "allowed: 1/0, true/false, yes/no, on/off")

    def url(self, name: str, schemes: tuple[str, ...], *, required_host: bool = True) -> str:
        value = self.raw(name)
        if not value:
            return ""
        allowed = f"a URL with scheme {' or '.join(schemes)}"
        try:
            parts = urlsplit(value)
            port = parts.port  # raises ValueError on a non-numeric port
        except ValueError:
            raise ConfigError(name, self.shown(name, value), allowed) from None
        if parts.scheme not in schemes:
            raise ConfigError(name, self.shown(name, value), allowed)
        if parts.scheme.startswith("unix"):
            if not parts.path:
                raise ConfigError(name, self.shown(name, value), allowed + " and a socket path")
        elif required_host and not parts.hostname and not _host_in_query(parts.query):
            raise ConfigError(name, self.shown(name, value), allowed + " and a host")
        del port
        return value

    def path(self, name: str) -> Path | None:
        value = self.raw(name)
        if not value:
            return None
        if "\x00" in value:
            raise ConfigError(name, value, "a file path")
        return Path(os.path.expanduser(value))

    def text(self, name: str, pattern: str, allowed: str) -> str:
        value = self.raw(name)
        if not re.fullmatch(pattern, value):
            raise ConfigError(name, value, allowed)
        return value


def _host_in_query(query: str) -> bool:
    # postgresql:///db?host=/run/postgresql is a valid libpq URL with the host in the query
    return "host=" in query


def load_settings(
    env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Settings from `env` (default: os.environ) over a `.env` file; raises ConfigError."""
    merged: dict[str, str] = {}
    if dotenv is not None:
        merged.update(read_dotenv(dotenv))
    merged.update(os.environ if env is None else env)
    r = _Reader(merged)
    mode = r.choice("IB_API_MODE", API_MODES)
    md_name = r.choice("IB_MARKET_DATA_TYPE", tuple(MARKET_DATA_TYPES))
    prefix = r.text(
        "BRIDGE_REDIS_PREFIX", r"[A-Za-z0-9_.:\-{}]{1,64}", "1-64 of A-Z a-z 0-9 _ . : - { }"
    )
    buffer_path = r.path("BRIDGE_BUFFER_PATH")
    spool_path = r.path("BRIDGE_SPOOL_PATH")
    assert buffer_path is not None and spool_path is not None  # they have defaults
    if buffer_path == spool_path:
        raise ConfigError("BRIDGE_SPOOL_PATH", str(spool_path), "a path other than the buffer's")
    underlying = r.raw("BRIDGE_UNDERLYING")
    return Settings(
        ib_api_mode=mode,  # type: ignore[arg-type]
        ib_host=r.text("IB_HOST", r"[A-Za-z0-9.\-:\[\]]{1,253}", "a host name or IP address"),
        ib_port=r.integer("IB_PORT", 1, 65535),
        ib_client_id=r.integer("IB_CLIENT_ID", 0, 2**31 - 1),
        ib_account=r.text("IB_ACCOUNT", r"[A-Za-z0-9]{0,32}", "an account id such as U1234567"),
        ib_connect_timeout_s=r.seconds("IB_CONNECT_TIMEOUT_S", 0.1, 300),
        ib_market_data_type=MARKET_DATA_TYPES[md_name],
        ibkr_gateway_url=r.url("IBKR_GATEWAY_URL", ("https", "http")),
        ibkr_ca_file=r.path("IBKR_CA_FILE"),
        ibkr_tls_verify=r.boolean("IBKR_TLS_VERIFY"),
        database_url=r.url("DATABASE_URL", ("postgresql", "postgres")),
        redis_url=r.url("REDIS_URL", ("redis", "rediss", "unix")),
        redis_prefix=prefix,
        buffer_path=buffer_path,
        spool_path=spool_path,
        poll_interval_s=r.seconds("BRIDGE_POLL_INTERVAL_S", 0.05, 3600),
        flush_retry_s=r.seconds("BRIDGE_FLUSH_RETRY_S", 0.05, 3600),
        watchdog_interval_s=r.seconds("BRIDGE_WATCHDOG_INTERVAL_S", 0.05, 3600),
        heartbeat_ttl_s=r.seconds("BRIDGE_HEARTBEAT_TTL_S", 0.1, 3600),
        reconnect_retries=r.integer("BRIDGE_RECONNECT_RETRIES", 0, 100),
        backoff_base_s=r.seconds("BRIDGE_BACKOFF_BASE_S", 0.0, 3600),
        backoff_cap_s=r.seconds("BRIDGE_BACKOFF_CAP_S", 0.0, 3600),
        greeks_grace_s=r.seconds("BRIDGE_GREEKS_GRACE_S", 0.0, 3600),
        greeks_max_age_s=r.seconds("BRIDGE_GREEKS_MAX_AGE_S", 0.0, 86400),
        underlying=underlying or None,
        per_underlying=r.boolean("BRIDGE_PER_UNDERLYING"),
        writer_batch=r.integer("BRIDGE_WRITER_BATCH", 1, 100_000),
        writer_consumer=r.text(
            "BRIDGE_WRITER_CONSUMER", r"[A-Za-z0-9_.\-]{1,64}", "1-64 of A-Z a-z 0-9 _ . -"
        ),
        claim_idle_s=r.seconds("BRIDGE_CLAIM_IDLE_S", 0.01, 86400),
        stop_grace_s=r.seconds("BRIDGE_STOP_GRACE_S", 0.0, 600),
        supervisor_url=r.url("BRIDGE_SUPERVISOR_URL", ("unix", "http")),
        collector_process=r.text(
            "BRIDGE_COLLECTOR_PROCESS", r"[A-Za-z0-9_.:\-]{1,128}", "a supervisord process name"
        ),
        tick_ledger=r.path("BRIDGE_TICK_LEDGER"),
        log_format=r.choice("BRIDGE_LOG_FORMAT", LOG_FORMATS),
        log_level=r.choice("BRIDGE_LOG_LEVEL", LOG_LEVELS),
    )


def env_example() -> str:
    """The text of deploy/.env.example: every variable, its default and its meaning."""
    lines = [
        "# IBKR Greeks Bridge configuration. Copy to .env in the directory the processes run in",
        "# (supervisord's directory=), or export the variables. Generated by",
        "# `bridge check-config --example`; every line shows the default.",
        "",
    ]
    for v in VARIABLES:
        lines.append(f"# {v.meaning}")
        lines.append(f"{v.name}={v.default}")
        lines.append("")
    return "\n".join(lines)


SettingsLoader = Callable[[], Settings]
