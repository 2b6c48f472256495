"""Config: every variable parsed from the environment; bad values name the variable."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from shared.config import VARIABLES, ConfigError, Settings, load_settings, mask, mask_url


def load(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env, dotenv=None)


def test_defaults() -> None:
    s = load()
    assert s.ib_api_mode == "SOCKET"
    assert (s.ib_host, s.ib_port) == ("127.0.0.1", 4001)
    assert s.redis_prefix == "bridge:"
    assert s.buffer_path == Path("~/.portfolio_bridge_buffer.jsonl").expanduser()
    assert s.poll_interval_s == 5.0
    assert s.flush_retry_s == 60.0
    assert s.watchdog_interval_s == 30.0
    assert s.reconnect_retries == 3
    assert s.ib_market_data_type == 2
    assert s.ibkr_tls_verify is True
    assert s.underlying is None and s.per_underlying is False


GOOD = {
    "IB_API_MODE": ("portal", "ib_api_mode", "PORTAL"),
    "IB_HOST": ("gateway.local", "ib_host", "gateway.local"),
    "IB_PORT": ("4002", "ib_port", 4002),
    "IB_CLIENT_ID": ("0", "ib_client_id", 0),
    "IB_ACCOUNT": ("U1234567", "ib_account", "U1234567"),
    "IB_CONNECT_TIMEOUT_S": ("2.5", "ib_connect_timeout_s", 2.5),
    "IB_MARKET_DATA_TYPE": ("delayed_frozen", "ib_market_data_type", 4),
    "IBKR_GATEWAY_URL": ("https://127.0.0.1:5000", "ibkr_gateway_url", "https://127.0.0.1:5000"),
    "IBKR_CA_FILE": ("/etc/ca.pem", "ibkr_ca_file", Path("/etc/ca.pem")),
    "IBKR_TLS_VERIFY": ("off", "ibkr_tls_verify", False),
    "DATABASE_URL": ("postgresql://u:p@h:5432/d", "database_url", "postgresql://u:p@h:5432/d"),
    "REDIS_URL": ("redis://127.0.0.1:6380/1", "redis_url", "redis://127.0.0.1:6380/1"),
    "BRIDGE_REDIS_PREFIX": ("desk1:", "redis_prefix", "desk1:"),
    "BRIDGE_BUFFER_PATH": ("/tmp/b.jsonl", "buffer_path", Path("/tmp/b.jsonl")),
    "BRIDGE_SPOOL_PATH": ("/tmp/s.jsonl", "spool_path", Path("/tmp/s.jsonl")),
    "BRIDGE_POLL_INTERVAL_S": ("0.5", "poll_interval_s", 0.5),
    "BRIDGE_FLUSH_RETRY_S": ("1", "flush_retry_s", 1.0),
    "BRIDGE_WATCHDOG_INTERVAL_S": ("2", "watchdog_interval_s", 2.0),
    "BRIDGE_HEARTBEAT_TTL_S": ("3", "heartbeat_ttl_s", 3.0),
    "BRIDGE_RECONNECT_RETRIES": ("5", "reconnect_retries", 5),
    "BRIDGE_BACKOFF_BASE_S": ("0.1", "backoff_base_s", 0.1),
    "BRIDGE_BACKOFF_CAP_S": ("8", "backoff_cap_s", 8.0),
    "BRIDGE_GREEKS_GRACE_S": ("1", "greeks_grace_s", 1.0),
    "BRIDGE_GREEKS_MAX_AGE_S": ("30", "greeks_max_age_s", 30.0),
    "BRIDGE_UNDERLYING": ("SPY", "underlying", "SPY"),
    "BRIDGE_PER_UNDERLYING": ("yes", "per_underlying", True),
    "BRIDGE_WRITER_BATCH": ("100", "writer_batch", 100),
    "BRIDGE_WRITER_CONSUMER": ("writer-b", "writer_consumer", "writer-b"),
    "BRIDGE_CLAIM_IDLE_S": ("5", "claim_idle_s", 5.0),
    "BRIDGE_STOP_GRACE_S": ("2", "stop_grace_s", 2.0),
    "BRIDGE_SUPERVISOR_URL": ("unix:///tmp/s.sock", "supervisor_url", "unix:///tmp/s.sock"),
    "BRIDGE_COLLECTOR_PROCESS": ("bridge:collector", "collector_process", "bridge:collector"),
    "BRIDGE_TICK_LEDGER": ("/tmp/ledger.csv", "tick_ledger", Path("/tmp/ledger.csv")),
    "BRIDGE_LOG_FORMAT": ("json", "log_format", "json"),
    "BRIDGE_LOG_LEVEL": ("DEBUG", "log_level", "DEBUG"),
}

BAD = {
    "IB_API_MODE": "BOGUS",
    "IB_HOST": "bad host!",
    "IB_PORT": "four",
    "IB_CLIENT_ID": "-1",
    "IB_ACCOUNT": "U 123",
    "IB_CONNECT_TIMEOUT_S": "0",
    "IB_MARKET_DATA_TYPE": "REALTIME",
    "IBKR_GATEWAY_URL": "ftp://x",
    "IBKR_TLS_VERIFY": "maybe",
    "DATABASE_URL": "mysql://u:topsecret@h/db",
    "REDIS_URL": "redis://h:port/0",
    "BRIDGE_REDIS_PREFIX": "has space",
    "BRIDGE_POLL_INTERVAL_S": "nan",
    "BRIDGE_FLUSH_RETRY_S": "-1",
    "BRIDGE_WATCHDOG_INTERVAL_S": "soon",
    "BRIDGE_HEARTBEAT_TTL_S": "0",
    "BRIDGE_RECONNECT_RETRIES": "3.5",
    "BRIDGE_BACKOFF_BASE_S": "x",
    "BRIDGE_BACKOFF_CAP_S": "inf",
    "BRIDGE_GREEKS_GRACE_S": "-2",
    "BRIDGE_GREEKS_MAX_AGE_S": "1e9",
    "BRIDGE_PER_UNDERLYING": "2",
    "BRIDGE_WRITER_BATCH": "0",
    "BRIDGE_WRITER_CONSUMER": "a/b",
    "BRIDGE_CLAIM_IDLE_S": "0",
    "BRIDGE_STOP_GRACE_S": "-1",
    "BRIDGE_SUPERVISOR_URL": "ftp://x",
    "BRIDGE_COLLECTOR_PROCESS": "bad name",
    "BRIDGE_LOG_FORMAT": "xml",
    "BRIDGE_LOG_LEVEL": "LOUD",
}


def test_every_variable_has_good_and_bad_cases() -> None:
    names = {v.name for v in VARIABLES}
    assert set(GOOD) == names
    no_bad_value = {
        "IBKR_CA_FILE",
        "BRIDGE_BUFFER_PATH",
        "BRIDGE_SPOOL_PATH",
        "BRIDGE_UNDERLYING",
        "BRIDGE_TICK_LEDGER",
    }  # any text is a valid path/symbol
    assert set(BAD) == names - no_bad_value


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_value(name: str) -> None:
    raw, attr, expected = GOOD[name]
    assert getattr(load(**{name: raw}), attr) == expected


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_value_names_the_variable(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{name: BAD[name]})
    assert info.value.variable == name
    assert "topsecret" not in str(info.value)


def test_secrets_masked_in_repr_and_errors() -> None:
    s = load(
        DATABASE_URL="postgresql://bridge:hunter2@db:5432/desk",
        REDIS_URL="redis://:s3cret@127.0.0.1:6379/0",
    )
    text = repr(s) + str(s.masked())
    assert "hunter2" not in text and "s3cret" not in text
    assert "postgresql://bridge:***@db:5432/desk" in text
    assert s.database_url.endswith("hunter2@db:5432/desk")  # the real value stays usable
    assert mask_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_buffer_and_spool_must_differ() -> None:
    with pytest.raises(ConfigError) as info:
        load(BRIDGE_BUFFER_PATH="/tmp/x.jsonl", BRIDGE_SPOOL_PATH="/tmp/x.jsonl")
    assert info.value.variable == "BRIDGE_SPOOL_PATH"


def test_dotenv_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nexport IB_PORT=4002\nIB_HOST='10.0.0.5'\nBRIDGE_UNDERLYING=QQQ # desk\n"
    )
    s = load_settings({"IB_HOST": "127.0.0.2"}, dotenv=dotenv)
    assert s.ib_port == 4002
    assert s.ib_host == "127.0.0.2"
    assert s.underlying == "QQQ"


def test_declarations_are_complete_and_distinct() -> None:
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)
    assert len({v.field for v in VARIABLES}) == len(VARIABLES)
    for v in VARIABLES:
        assert getattr(Settings, v.field) is v
        assert v.help and v.allowed, v.name
        assert v.name == v.name.upper().strip(), v.name


def test_good_values_survive_the_round_trip_through_their_env_text() -> None:
    env = {name: raw for name, (raw, _, _) in GOOD.items()}
    env["DATABASE_URL"] = "postgresql://u@h:5432/d"  # without a password, masking changes nothing
    s = load(**env)
    again = load(**s.as_env())
    assert again == s and hash(again) == hash(s)
    assert s.as_env()["IB_MARKET_DATA_TYPE"] == "DELAYED_FROZEN"
    assert s.as_env()["IBKR_TLS_VERIFY"] == "0"
    assert load() != s


def test_settings_are_frozen_and_complete() -> None:
    s = load()
    with pytest.raises(FrozenInstanceError):
        s.ib_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Settings({"ib_port": 1})


def test_secret_masking() -> None:
    assert mask("") == ""
    assert mask("token-abc") == "***"
    assert mask("unix:///run/s.sock") == "unix:///run/s.sock"
    s = load(BRIDGE_SUPERVISOR_URL="http://user:pw123@127.0.0.1:9001")
    assert "pw123" not in repr(s) and "pw123" not in str(s.as_env())
    with pytest.raises(ConfigError) as info:
        load(REDIS_URL="redis://:pw123@h:notaport/0")
    assert info.value.variable == "REDIS_URL" and "pw123" not in str(info.value)


def test_error_lines_say_what_is_allowed() -> None:
    cases = {
        "IB_API_MODE": "allowed: SOCKET, PORTAL",
        "IB_PORT": "an integer from 1 to 65535",
        "IB_CONNECT_TIMEOUT_S": "a number of seconds from 0.1 to 300",
        "IBKR_TLS_VERIFY": "allowed: 1/0, true/false, yes/no, on/off",
        "DATABASE_URL": "a URL with scheme postgresql or postgres",
    }
    for name, allowed in cases.items():
        with pytest.raises(ConfigError) as info:
            load(**{name: BAD[name]})
        assert info.value.allowed == allowed


@pytest.mark.parametrize("module", ["writer", "watchdog"])
@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("IB_API_MODE", "BOGUS"),
        ("IB_PORT", "abc"),
        ("DATABASE_URL", "postgresql://u:topsecret@h:notaport/db"),
    ],
)
def test_process_exits_2_with_one_line(module: str, var: str, value: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", var: value}
    proc = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "ERROR" in lines[0] and var in lines[0] and "topsecret" not in lines[0]
    assert proc.stdout == ""
