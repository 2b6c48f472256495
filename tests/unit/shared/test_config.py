"""Config: every variable parsed from the environment; bad values name the variable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from shared.config import VARIABLES, ConfigError, Settings, load_settings, mask, mask_url
from simulator.portal.certs import generate


def load(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env, dotenv=None)


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real self-signed certificate (PEM), made once for this module."""
    return generate(tmp_path_factory.mktemp("ca")).cert


@pytest.fixture(autouse=True)
def in_folder_with_ca(ca_pem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder holding `ca.pem`: the CA file is loaded at start."""
    shutil.copy(ca_pem, tmp_path / "ca.pem")
    monkeypatch.chdir(tmp_path)


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
    assert s.ib_market_data_lines == 40
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
    "IB_MARKET_DATA_LINES": ("95", "ib_market_data_lines", 95),
    "BRIDGE_FEED_STALL_S": ("45", "feed_stall_s", 45.0),
    "BRIDGE_WEB_HOST": ("0.0.0.0", "web_host", "0.0.0.0"),
    "BRIDGE_WEB_PORT": ("9100", "web_port", 9100),
    "BRIDGE_WEB_TOKEN": ("a-long-enough-token", "web_token", "a-long-enough-token"),
    "IBKR_GATEWAY_URL": ("https://127.0.0.1:5000", "ibkr_gateway_url", "https://127.0.0.1:5000"),
    "IBKR_CA_FILE": ("ca.pem", "ibkr_ca_file", Path("ca.pem")),  # written by `in_folder_with_ca`
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
    "IB_MARKET_DATA_LINES": "0",
    "BRIDGE_FEED_STALL_S": "0.5",
    "BRIDGE_WEB_HOST": "bad host!",
    "BRIDGE_WEB_PORT": "0",
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
        "BRIDGE_WEB_TOKEN",  # its length is checked by `bridge web` when it needs one
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
    env["BRIDGE_WEB_TOKEN"] = ""  # a secret: shown masked
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


# ---- TLS to the Client Portal ------------------------------------------------------------------
REMOTE = ["https://gateway.example.com:5000", "https://10.0.0.7:5000", "https://[2001:db8::1]:5000"]
LOOPBACK = [
    "https://localhost:5000",
    "https://LOCALHOST:5000",
    "https://127.0.0.1:5000",
    "https://127.8.9.10:5000",
    "https://[::1]:5000",
    "https://[::ffff:127.0.0.1]:5000",
]


@pytest.mark.parametrize("gateway", REMOTE)
def test_tls_verify_off_with_a_remote_portal_names_both_variables_and_the_way_out(
    gateway: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        load(IB_API_MODE="PORTAL", IBKR_GATEWAY_URL=gateway, IBKR_TLS_VERIFY="0")
    line = str(info.value)
    assert info.value.variable == "IBKR_TLS_VERIFY"
    assert "IBKR_GATEWAY_URL" in line and "IBKR_CA_FILE" in line and "loopback" in line
    assert "\n" not in line


def test_a_remote_gateway_hides_its_password_in_the_tls_error() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            IB_API_MODE="PORTAL",
            IBKR_GATEWAY_URL="https://op:gw-pass-1@gw.example.com:5000",
            IBKR_TLS_VERIFY="0",
        )
    assert "gw-pass-1" not in str(info.value) and "gw.example.com" in str(info.value)


@pytest.mark.parametrize("gateway", REMOTE)
def test_a_cleartext_portal_off_loopback_is_refused(gateway: str) -> None:
    cleartext = gateway.replace("https://", "http://op:gw-pass-2@")
    with pytest.raises(ConfigError) as info:
        load(IB_API_MODE="PORTAL", IBKR_GATEWAY_URL=cleartext)
    line = str(info.value)
    assert info.value.variable == "IBKR_GATEWAY_URL"
    assert "https://" in line and "IBKR_CA_FILE" in line and "gw-pass-2" not in line


@pytest.mark.parametrize("gateway", LOOPBACK)
def test_a_cleartext_portal_on_loopback_is_accepted(gateway: str) -> None:
    cleartext = gateway.replace("https://", "http://")
    assert load(IB_API_MODE="PORTAL", IBKR_GATEWAY_URL=cleartext).ibkr_gateway_url == cleartext


@pytest.mark.parametrize("gateway", LOOPBACK)
def test_tls_verify_off_is_accepted_on_loopback(gateway: str) -> None:
    s = load(IB_API_MODE="PORTAL", IBKR_GATEWAY_URL=gateway, IBKR_TLS_VERIFY="0")
    assert s.ibkr_tls_verify is False


def test_tls_rules_leave_verified_remote_portals_and_the_socket_mode_alone() -> None:
    remote = REMOTE[0]
    assert load(IB_API_MODE="PORTAL", IBKR_GATEWAY_URL=remote).ibkr_tls_verify is True
    assert load(IB_API_MODE="PORTAL", IBKR_GATEWAY_URL=remote, IBKR_CA_FILE="ca.pem")
    # SOCKET: the portal's variables are unused, so their combination is not an error
    assert load(IBKR_GATEWAY_URL=remote, IBKR_TLS_VERIFY="0").ib_api_mode == "SOCKET"


@pytest.mark.parametrize("mode", ["PORTAL", "SOCKET"])
def test_a_missing_ca_file_is_an_error_at_start_in_any_mode(mode: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gateway.pem"
    with pytest.raises(ConfigError) as info:
        load(IB_API_MODE=mode, IBKR_CA_FILE=str(missing))
    assert info.value.variable == "IBKR_CA_FILE" and "no such file" in info.value.allowed


BROKEN_PEM = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    "content",
    [b"", b"not a certificate\n", BROKEN_PEM],
    ids=["empty", "text", "broken-pem"],
)
def test_an_unparsable_ca_file_is_an_error_at_start(content: bytes, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load(IB_API_MODE="PORTAL", IBKR_CA_FILE=str(bad))
    assert info.value.variable == "IBKR_CA_FILE" and "PEM" in info.value.allowed


def test_a_folder_as_ca_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(IBKR_CA_FILE=str(tmp_path))
    assert info.value.variable == "IBKR_CA_FILE"


@pytest.mark.parametrize(
    ("extra", "variable", "needles"),
    [
        (
            {"IBKR_GATEWAY_URL": "https://gw.example.com:5000", "IBKR_TLS_VERIFY": "0"},
            "IBKR_TLS_VERIFY",
            ("IBKR_GATEWAY_URL", "IBKR_CA_FILE"),
        ),
        ({"IBKR_CA_FILE": "missing.pem"}, "IBKR_CA_FILE", ("no such file",)),
        ({"IBKR_CA_FILE": "broken.pem"}, "IBKR_CA_FILE", ("PEM",)),
    ],
    ids=["remote-unverified", "missing-ca", "broken-ca"],
)
def test_the_collector_exits_2_at_start_with_one_line(
    extra: dict[str, str], variable: str, needles: tuple[str, ...], tmp_path: Path
) -> None:
    """A real `python -m collector` in PORTAL mode: refused before it connects to anything."""
    (tmp_path / "broken.pem").write_text("not a certificate\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "IB_API_MODE": "PORTAL",
        "REDIS_URL": "redis://127.0.0.1:9/0",  # never reached: the config is refused first
        **extra,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "collector"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "ERROR" in lines[0] and "config_invalid" in lines[0] and variable in lines[0]
    for needle in needles:
        assert needle in lines[0]
    assert proc.stdout == ""


def test_an_unset_secret_is_not_remembered_as_the_text_none() -> None:
    """An optional secret left empty (BRIDGE_WEB_TOKEN) once made every "None" in a log line
    read "***"."""
    s = load()
    assert s.web_token is None
    assert "None" not in s.secret_texts() and "" not in s.secret_texts()
    assert "a-long-enough-token" in load(BRIDGE_WEB_TOKEN="a-long-enough-token").secret_texts()
