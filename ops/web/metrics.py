"""/metrics: the bridge's health and the newest net Greeks in the Prometheus text format.

Built at each scrape from `bridge status`'s report (so the numbers are the ones `bridge status
--json` shows) and two PostgreSQL reads: the newest PORTFOLIO row of each account and the
reconnect attempts in api_logs. A figure that is not known at the scrape (its source is
unreachable) is left out rather than shown as 0; `bridge_redis_up` and `bridge_postgres_up` say
which source that was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ops.status import EXIT_CODES, classify
from ops.status_report import Report

GREEKS = ("delta", "gamma", "vega", "theta")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, doc: str, value: float | bool | None) -> GaugeMetricFamily | None:
    return None if value is None else GaugeMetricFamily(name, doc, value=float(value))


def status_families(r: Report) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """The report's figures; the same numbers as `bridge status --json`."""
    level, _ = classify(r)
    redis_ok = r.redis_error is None
    found: list[GaugeMetricFamily | CounterMetricFamily | None] = [
        _gauge("bridge_status", "0 healthy, 1 degraded, 2 down (bridge status)", EXIT_CODES[level]),
        _gauge("bridge_redis_up", "1 when Redis answered this scrape", float(redis_ok)),
        _gauge(
            "bridge_postgres_up",
            "1 when PostgreSQL answered this scrape",
            float(r.db_error is None),
        ),
        _gauge(
            "bridge_link_up",
            "1 when the collector's link to IBKR is connected",
            float(r.link == "connected"),
        ),
        _gauge(
            "bridge_last_row_age_seconds",
            "age of the newest PORTFOLIO row in PostgreSQL",
            r.last_row_age_s,
        ),
        _gauge(
            "bridge_stream_backlog_entries",
            "stream entries waiting for the writer (pending + not yet delivered)",
            float(r.backlog) if redis_ok else None,
        ),
        _gauge("bridge_buffer_rows", "rows in the writer's buffer file", _num(r.buffer_rows)),
        _gauge(
            "bridge_breaker_open",
            "1 while the writer's circuit breaker is open (PostgreSQL unreachable for it)",
            None if r.breaker == "unknown" else float(r.breaker == "open"),
        ),
    ]
    if r.dead_letters is not None:
        found.append(
            CounterMetricFamily(
                "bridge_dead_letters", "entries set aside in the dead-letter stream", r.dead_letters
            )
        )
    return [f for f in found if f is not None]


def _num(value: int | None) -> float | None:
    return None if value is None else float(value)


def greek_family(rows: Sequence[Mapping[str, Any]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "bridge_net_greek",
        "newest net Greek of the PORTFOLIO row, per account",
        labels=["greek", "account"],
    )
    for row in rows:
        for greek in GREEKS:
            value = row[greek]
            if value is not None:
                family.add_metric([greek, str(row["account"])], float(value))
    return family


def newest_time_family(rows: Sequence[Mapping[str, Any]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "bridge_net_greek_timestamp_seconds",
        "time of the newest PORTFOLIO row, per account (Unix seconds)",
        labels=["account"],
    )
    for row in rows:
        family.add_metric([str(row["account"])], row["timestamp"].timestamp())
    return family


def reconnect_family(total: int | None) -> CounterMetricFamily | None:
    if total is None:
        return None
    return CounterMetricFamily(
        "bridge_reconnect_attempts",
        "reconnect and reauth attempts of the watchdog, as recorded in api_logs",
        total,
    )


class _Fixed(Collector):
    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Any]:
        return iter(self._families)


def exposition(families: Iterable[Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)
