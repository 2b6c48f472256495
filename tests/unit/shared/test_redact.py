"""Secrets hidden in every text: the masking function and the paths that use it."""

from __future__ import annotations

import configparser
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from shared.codec import decode_api_log, encode_api_log
from shared.config import mask_url, redact, remember, scrub, secret_values
from shared.config.redact import _remembered
from shared.logs import JsonFormatter, ScrubbingFormatter
from shared.models import ApiLogRow

REPO = Path(__file__).resolve().parents[3]
PW = "pw-5ecret-77"


@pytest.fixture
def remembered() -> Iterator[None]:
    """This process remembers PW as a configured secret; forgotten afterwards."""
    saved = list(_remembered)
    remember([f"postgresql://bridge:{PW}@db:5432/desk"])
    yield
    _remembered[:] = saved


def test_url_passwords_are_hidden_whatever_the_url() -> None:
    text = "connect to redis://:abc@h:1/0 and postgresql://u:p%40ss@[::1]:5432/d failed"
    assert (
        redact(text) == "connect to redis://:***@h:1/0 and postgresql://u:***@[::1]:5432/d failed"
    )
    assert redact("http://user@host/ no password") == "http://user@host/ no password"


def test_password_query_parameters_are_hidden() -> None:
    text = "postgresql://u@h/d?sslmode=require&password=s3cr3t&x=1 redis://h/0?PASSWORD=abc"
    out = redact(text)
    assert "s3cr3t" not in out and "abc" not in out
    assert "sslmode=require&password=***&x=1" in out
    assert mask_url("redis://h:6379/0?password=abcd&db=1") == "redis://h:6379/0?password=***&db=1"


def test_configured_secrets_are_hidden_as_written_and_decoded() -> None:
    secrets = secret_values(
        ["postgresql://bridge:p%40ss-1@db/desk", "redis://h/0?password=tok-42", "plain-token", ""]
    )
    assert set(secrets) == {"p%40ss-1", "p@ss-1", "tok-42", "plain-token"}
    text = 'auth failed: "p@ss-1" / p%40ss-1; token plain-token; tok-42'
    assert redact(text, secrets) == 'auth failed: "***" / ***; token ***; ***'


def test_short_secrets_are_hidden_in_urls_only() -> None:
    secrets = secret_values(["redis://:ab@h/0"])
    assert secrets == ()
    assert redact("redis://:ab@h/0 about", secrets) == "redis://:***@h/0 about"


def test_the_longest_secret_goes_first() -> None:
    secrets = secret_values(["pass", "passphrase-long"])
    assert redact("x passphrase-long y pass", secrets) == "x *** y ***"


def test_scrub_uses_the_remembered_secrets(remembered: None) -> None:
    assert scrub(f"asyncpg said {PW!r}") == "asyncpg said '***'"


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def _raised(exc: BaseException) -> BaseException:
    """`exc` with a traceback, as a logged exception has."""

    def throw() -> None:
        raise exc

    try:
        throw()
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


def test_log_lines_are_scrubbed_text_and_json(remembered: None) -> None:
    error = _raised(ConnectionError(f"cannot connect to postgresql://bridge:{PW}@db/desk ({PW})"))
    text = ScrubbingFormatter("%(message)s").format(_record("failed %r", error, exc=error))
    assert PW not in text and "Traceback" in text and "bridge:***@db" in text
    quoted = f'pw"{PW}'  # a secret with a quote: JSON escapes it, so scrub before encoding
    remember([quoted])
    line = JsonFormatter().format(_record("failed %s", quoted, exc=error))
    assert PW not in line and 'pw\\"' not in line
    assert orjson.loads(line)["msg"] == "failed ***"


def test_api_log_messages_are_scrubbed_both_ways(remembered: None) -> None:
    row = ApiLogRow(
        ts=datetime(2026, 1, 2, tzinfo=UTC),
        api_mode="SOCKET",
        status="WARN",
        message=f"x {PW}",
        source="writer",
    )
    assert encode_api_log(row)["message"] == "x ***"
    raw = {**encode_api_log(row), "message": f"from another process: {PW}"}
    decoded = decode_api_log(raw)
    assert isinstance(decoded, ApiLogRow) and decoded.message == "from another process: ***"


def test_an_uncaught_exception_is_printed_scrubbed(tmp_path: Path) -> None:
    script = (
        "from shared.config import remember\n"
        "from shared.logs import configure_logging\n"
        f"remember(['{PW}'])\n"
        "configure_logging('t')\n"
        f"raise RuntimeError('DSN redis://:{PW}@h/0 and {PW}')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "RuntimeError" in proc.stderr and PW not in proc.stderr


def _programs(conf: Path) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(conf.read_text())
    return {section: dict(parser[section]) for section in parser.sections()}


SECRET_NAMES = ("DATABASE_URL", "REDIS_URL", "IBKR_GATEWAY_URL", "PASSWORD", "TOKEN", "requirepass")


@pytest.mark.parametrize("conf", ["deploy/supervisord.conf", "deploy/demo.conf.in"])
def test_supervisord_profiles_put_no_secret_on_a_command_line(conf: str) -> None:
    """Command lines are world-readable (`ps`); the programs read `.env` themselves."""
    sections = _programs(REPO / conf)
    lines = [
        f"[{section}] {key}={value}"
        for section, keys in sections.items()
        for key, value in keys.items()
        if key in ("command", "environment")
    ]
    assert any("command=" in line for line in lines)
    for line in lines:
        for name in SECRET_NAMES:
            assert name.lower() not in line.lower(), line
        assert "://" not in line.replace("unix://", "") or "@" not in line, line
