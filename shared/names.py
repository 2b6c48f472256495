"""Every Redis key, stream, group and table name of the bridge, in one place."""

from __future__ import annotations

from dataclasses import dataclass

# IB's market data types, by number 1-4 (reqMarketDataType, the marketDataType message)
MARKET_DATA_KINDS = ("LIVE", "FROZEN", "DELAYED", "DELAYED_FROZEN")

WRITER_GROUP = "writers"
PORTFOLIO_CONTRACT = "PORTFOLIO"
CODEC_VERSION = "1"

TABLE_GREEKS = "portfolio_greeks"
TABLE_API_LOGS = "api_logs"

# The two data streams by their short name (the key adds the prefix; buffer lines carry it).
STREAM_GREEKS = "greeks"
STREAM_API_LOGS = "api_logs"

# IB security types: the ones whose greeks count, and the underlyings (delta 1 a share).
OPTION_TYPES = frozenset({"OPT", "FOP"})
STOCK_TYPES = frozenset({"STK"})

SOURCES = ("collector", "writer", "watchdog", "supervisor")
STATUSES = ("INFO", "WARN", "ERROR")


@dataclass(frozen=True)
class Keys:
    """Redis key names under one prefix (BRIDGE_REDIS_PREFIX, default `bridge:`)."""

    prefix: str = "bridge:"

    @property
    def greeks(self) -> str:
        return f"{self.prefix}{STREAM_GREEKS}"

    @property
    def api_logs(self) -> str:
        return f"{self.prefix}{STREAM_API_LOGS}"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def control(self) -> str:
        """Watchdog -> collector commands (reconnect, pause until T)."""
        return f"{self.prefix}control"

    @property
    def link_events(self) -> str:
        """Collector -> watchdog link changes (a stream, so nothing is missed)."""
        return f"{self.prefix}link_events"

    @property
    def link(self) -> str:
        """Hash: the collector's current link state."""
        return f"{self.prefix}link"

    @property
    def heartbeat(self) -> str:
        """String with a TTL: the collector's last heartbeat (ISO time)."""
        return f"{self.prefix}heartbeat"

    @property
    def pause_until(self) -> str:
        """String expiring at the time: the collector makes no connect attempt before it."""
        return f"{self.prefix}pause_until"

    @property
    def collector_last(self) -> str:
        """String: id of the last entry the collector added (see collector/journal.py)."""
        return f"{self.prefix}collector_last"

    @property
    def writer_state(self) -> str:
        """Hash: breaker state, buffer rows and bytes, last commit, of the writer that wrote
        last (the single writer's key of older versions, still kept for their readers)."""
        return f"{self.prefix}writer"

    @property
    def writer_heartbeat(self) -> str:
        """String with a TTL: a writer is running (the single key of older versions)."""
        return f"{self.prefix}writer_heartbeat"

    def writer_state_of(self, consumer: str) -> str:
        """Hash: the state of the writer whose consumer name is `consumer`."""
        return f"{self.writer_state}:{consumer}"

    def writer_heartbeat_of(self, consumer: str) -> str:
        """String with a TTL: the writer whose consumer name is `consumer` is running."""
        return f"{self.writer_heartbeat}:{consumer}"

    @property
    def watchdog_state(self) -> str:
        return f"{self.prefix}watchdog"

    @property
    def data_streams(self) -> tuple[str, str]:
        """The streams the writer consumes, in the order it reads them."""
        return (self.greeks, self.api_logs)
