"""The log formats as a log shipper and a person read them: one JSON object a line (extra
fields kept, values that JSON cannot hold written as text), text lines, secrets hidden in both."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import bridge_env

SECRET = "tok-7d1e9c0b55"

SCRIPT = f"""\
import logging, sys
from pathlib import Path
from shared.config import remember
from shared.logs import configure_logging

remember([{SECRET!r}])
configure_logging("writer")  # the text format first, as before the config is read
configure_logging("writer", sys.argv[1], "DEBUG")  # then the configured one replaces it
log = logging.getLogger("writer.flush")
log.debug("flushed rows=%d", 3, extra={{"stream": "greeks", "spool": Path("/var/{SECRET}/x")}})
log.warning("db down: postgresql://bridge:pw-9a8b7c6d@127.0.0.1/bridge")
logging.getLogger("ib_async.client").info("chatty request")
logging.getLogger("ib_async.client").warning("ib_async warns")
"""


def run(fmt: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt],
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert SECRET not in done.stderr and "pw-9a8b7c6d" not in done.stderr, done.stderr
    return done.stderr.splitlines()


def test_json_lines() -> None:
    lines = run("json")
    records = [json.loads(line) for line in lines]  # one object a line, nothing else
    assert len(records) == 3, lines  # one handler only; ib_async's INFO is left out
    flushed, down, warned = records
    assert flushed["level"] == "DEBUG" and flushed["logger"] == "writer.flush"
    assert flushed["msg"] == "flushed rows=3" and flushed["stream"] == "greeks"
    assert flushed["spool"].startswith("/var/") and flushed["spool"].endswith("/x")
    assert "exc" not in flushed
    assert flushed["ts"].endswith("+00:00")
    assert down["level"] == "WARNING" and "postgresql://bridge:" in down["msg"]
    assert (warned["logger"], warned["msg"]) == ("ib_async.client", "ib_async warns")


def test_text_lines() -> None:
    lines = run("text")
    assert len(lines) == 3, lines
    assert " DEBUG writer writer.flush: flushed rows=3" in lines[0]
    assert " WARNING writer writer.flush: db down: postgresql://bridge:" in lines[1]
    assert lines[2].endswith("WARNING writer ib_async.client: ib_async warns")
