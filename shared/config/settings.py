"""The declaration of every variable (the body of `Settings`) and the loading of the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast, overload

from shared.config.parsers import (
    ConfigError,
    Invalid,
    Parser,
    boolean,
    choice,
    integer,
    mapping,
    mask,
    optional_path,
    optional_text,
    path,
    seconds,
    text,
    url,
)
from shared.config.rules import check_ca_file, check_tls_verify
from shared.names import MARKET_DATA_KINDS

T = TypeVar("T")

ApiMode = Literal["SOCKET", "PORTAL"]
API_MODES: tuple[ApiMode, ...] = ("SOCKET", "PORTAL")
MARKET_DATA_TYPES = {kind: n for n, kind in enumerate(MARKET_DATA_KINDS, start=1)}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Var(Generic[T]):
    """One environment variable, declared as an attribute of `Settings`: reading the attribute
    of a loaded `Settings` gives the parsed value (typed `T`), reading it on the class gives this
    declaration."""

    field: str  # the attribute's name, set by Python when the class body is built

    def __init__(
        self, name: str, parser: Parser[T], default: str, help: str, *, secret: bool = False
    ) -> None:
        self.name = name
        self.parser = parser
        self.default = default  # as written in .env; parsed like any value
        self.help = help
        self.secret = secret  # masked in every output (URLs keep all but their password)

    def __set_name__(self, owner: type[Any], field: str) -> None:
        self.field = field

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Var[T]: ...
    @overload
    def __get__(self, obj: Settings, owner: type[Any] | None = None) -> T: ...
    def __get__(self, obj: Settings | None, owner: type[Any] | None = None) -> Var[T] | T:
        if obj is None:
            return self
        return cast(T, obj._values[self.field])

    @property
    def allowed(self) -> str:
        return self.parser.allowed

    def parse(self, raw: str | None) -> T:
        """The value of `raw` (unset or blank: the default's); raises ConfigError."""
        given = (raw or "").strip() or self.default
        try:
            return self.parser.parse(given)
        except Invalid as exc:
            raise ConfigError(self.name, self.shown(given), str(exc)) from None

    def show(self, value: T) -> str:
        """`value` as .env text, masked when secret."""
        return self.shown(self.parser.show(value))

    def shown(self, given: str) -> str:
        return mask(given) if self.secret else given

    def __repr__(self) -> str:
        return f"Var({self.name!r})"


class Settings:
    """Every setting, typed and frozen, built once by `load_settings`.

    The attributes below ARE the declaration: environment name, parser (type and allowed
    values), default, help line and secrecy of each variable. `VARIABLES`, check-config,
    deploy/.env.example and README's table are derived from them; adding a variable is one
    attribute here plus its use. Generated dataclass fields would be invisible to mypy, a
    hand-written dataclass would repeat every name; typed descriptors give both in one place.
    """

    __slots__ = ("_values",)
    _values: dict[str, object]

    # ---- the collector's link to IBKR ----------------------------------------------------------
    ib_api_mode = Var(
        "IB_API_MODE",
        choice(API_MODES),
        "SOCKET",
        "transport: SOCKET to IB Gateway (ib_async), PORTAL to the Client Portal gateway",
    )
    ib_host = Var(
        "IB_HOST",
        text(r"[A-Za-z0-9.\-:\[\]]{1,253}", "a host name or IP address"),
        "127.0.0.1",
        "IB Gateway host (SOCKET)",
    )
    ib_port = Var(
        "IB_PORT", integer(1, 65535), "4001", "IB Gateway API port (SOCKET); 4001 live, 4002 paper"
    )
    ib_client_id = Var(
        "IB_CLIENT_ID", integer(0, 2**31 - 1), "17", "API client id of the collector (SOCKET)"
    )
    ib_account = Var(
        "IB_ACCOUNT",
        text(
            r"(ALL|[A-Za-z0-9]{1,32}(,[A-Za-z0-9]{1,32}){0,99})?",
            "an account id such as U1234567, a comma-separated list of them, or ALL",
        ),
        "",
        "account(s) to read: one, a list, or ALL; empty = the only managed account",
    )
    ib_connect_timeout_s = Var(
        "IB_CONNECT_TIMEOUT_S", seconds(0.1, 300), "10", "bound on one connect attempt"
    )
    ib_market_data_type = Var(
        "IB_MARKET_DATA_TYPE",
        mapping(MARKET_DATA_TYPES),
        "FROZEN",
        "market data type requested (FROZEN: last values after the close)",
    )
    ib_market_data_lines = Var(
        "IB_MARKET_DATA_LINES",
        integer(1, 10_000),
        "40",
        "most market-data requests held open at once (the account's lines are shared)",
    )
    feed_stall_s = Var(
        "BRIDGE_FEED_STALL_S",
        seconds(1, 86400),
        "120",
        "live data silent this long: cancel and request again",
    )
    ibkr_gateway_url = Var(
        "IBKR_GATEWAY_URL",
        url("https", "http"),
        "https://localhost:5000",
        "Client Portal gateway base (PORTAL)",
        secret=True,
    )
    ibkr_ca_file = Var(
        "IBKR_CA_FILE",
        optional_path(),
        "",
        "PEM file to verify the Client Portal certificate (PORTAL); checked at start when given",
    )
    ibkr_tls_verify = Var(
        "IBKR_TLS_VERIFY",
        boolean(),
        "1",
        "verify the portal's TLS certificate; 0 only for a gateway on loopback (PORTAL)",
    )
    # ---- stores --------------------------------------------------------------------------------
    database_url = Var(
        "DATABASE_URL",
        url("postgresql", "postgres"),
        "",
        "PostgreSQL URL, e.g. postgresql://user:pw@host:5432/db",
        secret=True,
    )
    redis_url = Var(
        "REDIS_URL",
        url("redis", "rediss", "unix"),
        "",
        "Redis URL, e.g. redis://127.0.0.1:6379/0",
        secret=True,
    )
    redis_prefix = Var(
        "BRIDGE_REDIS_PREFIX",
        text(r"[A-Za-z0-9_.:\-{}]{1,64}", "1-64 of A-Z a-z 0-9 _ . : - { }"),
        "bridge:",
        "prefix of every Redis key of this bridge",
    )
    buffer_path = Var(
        "BRIDGE_BUFFER_PATH",
        path(),
        "~/.portfolio_bridge_buffer.jsonl",
        "writer's JSON Lines buffer while PostgreSQL is down",
    )
    spool_path = Var(
        "BRIDGE_SPOOL_PATH",
        path(),
        "~/.portfolio_bridge_spool.jsonl",
        "collector's JSON Lines spool while Redis is down (not the buffer's path)",
    )
    # ---- timing --------------------------------------------------------------------------------
    poll_interval_s = Var(
        "BRIDGE_POLL_INTERVAL_S", seconds(0.05, 3600), "5", "tick interval of the collector"
    )
    flush_retry_s = Var(
        "BRIDGE_FLUSH_RETRY_S",
        seconds(0.05, 3600),
        "60",
        "retry period of the writer while PostgreSQL is down",
    )
    watchdog_interval_s = Var(
        "BRIDGE_WATCHDOG_INTERVAL_S", seconds(0.05, 3600), "30", "watchdog check period"
    )
    heartbeat_ttl_s = Var(
        "BRIDGE_HEARTBEAT_TTL_S", seconds(0.1, 3600), "20", "collector heartbeat lifetime in Redis"
    )
    reconnect_retries = Var(
        "BRIDGE_RECONNECT_RETRIES",
        integer(0, 100),
        "3",
        "watchdog retries after a failed reconnect",
    )
    backoff_base_s = Var(
        "BRIDGE_BACKOFF_BASE_S", seconds(0, 3600), "2", "first back-off delay, doubled per retry"
    )
    backoff_cap_s = Var("BRIDGE_BACKOFF_CAP_S", seconds(0, 3600), "30", "largest back-off delay")
    greeks_grace_s = Var(
        "BRIDGE_GREEKS_GRACE_S", seconds(0, 3600), "10", "wait for Greeks after (re)subscribing"
    )
    greeks_max_age_s = Var(
        "BRIDGE_GREEKS_MAX_AGE_S",
        seconds(0, 86400),
        "60",
        "carry last known Greeks forward at most this long",
    )
    # ---- rows ----------------------------------------------------------------------------------
    underlying = Var(
        "BRIDGE_UNDERLYING",
        optional_text("a symbol, or empty for none"),
        "",
        "symbol whose price is the PORTFOLIO underlying_price",
    )
    per_underlying = Var(
        "BRIDGE_PER_UNDERLYING", boolean(), "0", "1: also write one row per underlying"
    )
    # ---- the writer ----------------------------------------------------------------------------
    writer_batch = Var(
        "BRIDGE_WRITER_BATCH", integer(1, 100_000), "500", "entries read per XREADGROUP call"
    )
    writer_consumer = Var(
        "BRIDGE_WRITER_CONSUMER",
        text(r"[A-Za-z0-9_.\-]{1,64}", "1-64 of A-Z a-z 0-9 _ . -"),
        "writer-1",
        "stable consumer name of this writer",
    )
    claim_idle_s = Var(
        "BRIDGE_CLAIM_IDLE_S",
        seconds(0.01, 86400),
        "60",
        "claim entries idle this long from a dead consumer",
    )
    stop_grace_s = Var(
        "BRIDGE_STOP_GRACE_S", seconds(0, 600), "4", "time to finish the batch in hand on SIGTERM"
    )
    # ---- supervision and logs ------------------------------------------------------------------
    supervisor_url = Var(
        "BRIDGE_SUPERVISOR_URL",
        url("unix", "http"),
        "",
        "supervisord XML-RPC URL (unix:///path/to/sock or http://host:port) for the watchdog",
        secret=True,
    )
    collector_process = Var(
        "BRIDGE_COLLECTOR_PROCESS",
        text(r"[A-Za-z0-9_.:\-]{1,128}", "a supervisord process name"),
        "bridge:collector",
        "supervisord name of the collector",
    )
    tick_ledger = Var(
        "BRIDGE_TICK_LEDGER",
        optional_path(),
        "",
        "file where the collector records every row it produced",
    )
    log_format = Var(
        "BRIDGE_LOG_FORMAT", choice(LOG_FORMATS), "text", "text for people, json for log shippers"
    )
    log_level = Var("BRIDGE_LOG_LEVEL", choice(LOG_LEVELS), "INFO", "lowest level logged")
    # ---- the web console: `bridge web` (off loopback the token is required) --------------------
    web_host = Var("BRIDGE_WEB_HOST", ib_host.parser, "127.0.0.1", "listen address of bridge web")
    web_port = Var("BRIDGE_WEB_PORT", integer(1, 65535), "8765", "port of bridge web")
    web_token = Var(
        "BRIDGE_WEB_TOKEN", optional_text("16+ chars"), "", "bridge web's bearer token", secret=True
    )

    def __init__(self, values: Mapping[str, object]) -> None:
        """`values`: one parsed value per declared field (use `load_settings`)."""
        if set(values) != {v.field for v in VARIABLES}:
            raise TypeError(f"Settings needs exactly the fields {[v.field for v in VARIABLES]}")
        object.__setattr__(self, "_values", dict(values))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.masked().items())
        return f"Settings({shown})"

    def masked(self) -> dict[str, Any]:
        """Every setting by field name, secrets masked, paths as text: safe to print."""
        out: dict[str, Any] = {}
        for v in VARIABLES:
            value = self._values[v.field]
            if v.secret:
                value = v.show(value)
            elif isinstance(value, Path):
                value = str(value)
            out[v.field] = value
        return out

    def secret_texts(self) -> list[str]:
        """The values of the secret variables, unmasked: what `redact` must hide."""
        values = (self._values[v.field] for v in VARIABLES if v.secret)
        return [str(value) for value in values if value]  # unset is no secret (not "None")

    def as_env(self) -> dict[str, str]:
        """Every setting by variable name, as .env text, secrets masked."""
        return {v.name: v.show(self._values[v.field]) for v in VARIABLES}

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL", "", "required: postgresql://user@host:port/db")
        return self.database_url

    def require_redis(self) -> str:
        if not self.redis_url:
            raise ConfigError("REDIS_URL", "", "required: redis://host:port/db or unix:///path")
        return self.redis_url


VARIABLES: tuple[Var[Any], ...] = tuple(v for v in vars(Settings).values() if isinstance(v, Var))


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


def load_settings(
    env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Settings from `env` (default: os.environ) over a `.env` file; raises ConfigError."""
    merged: dict[str, str] = {}
    if dotenv is not None:
        merged.update(read_dotenv(dotenv))
    merged.update(os.environ if env is None else env)
    settings = Settings({v.field: v.parse(merged.get(v.name)) for v in VARIABLES})
    # rules across variables
    if settings.buffer_path == settings.spool_path:
        raise ConfigError(
            Settings.spool_path.name, str(settings.spool_path), "a path other than the buffer's"
        )
    check_ca_file(settings.ibkr_ca_file)
    check_tls_verify(settings.ib_api_mode, settings.ibkr_gateway_url, settings.ibkr_tls_verify)
    return settings


SettingsLoader = Callable[[], Settings]
