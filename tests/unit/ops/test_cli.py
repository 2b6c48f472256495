"""The `bridge` command's pure parts: check-config, env file choice, tail's table, the demo's
rendering (the bridge group is the production one), waitfor."""

from __future__ import annotations

import configparser
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ops import cli, config_docs, demo, tail, waitfor
from ops.config_docs import env_example
from shared.config import VARIABLES

REPO = Path(__file__).resolve().parents[3]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("IB_", "IBKR_", "BRIDGE_")) or key in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(key)


# ---- check-config ------------------------------------------------------------------------------
def test_check_config_example_is_the_generated_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "--example"]) == 0
    out = capsys.readouterr().out
    assert out == env_example()
    assert out == (REPO / "deploy" / ".env.example").read_text()


def test_check_config_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    env = tmp_path / "x.env"
    env.write_text(
        "DATABASE_URL=postgresql://bridge:s3cret@127.0.0.1:5432/db\n"
        "REDIS_URL=redis://:hunter2@127.0.0.1:6379/0\n"
    )
    assert cli.main(["--env-file", str(env), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "hunter2" not in out
    assert "postgresql://bridge:***@127.0.0.1:5432/db" in out
    assert "s3cret" not in out and "hunter2" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if not line.startswith("#")}
    assert set(lines) == {v.name for v in VARIABLES}
    assert lines["IB_API_MODE"].split() == ["IB_API_MODE", "SOCKET", "(default)"]
    assert lines["IB_MARKET_DATA_TYPE"].split()[1] == "FROZEN"
    assert lines["IBKR_TLS_VERIFY"].split()[1:] == ["1", "(default)"]
    assert lines["BRIDGE_POLL_INTERVAL_S"].split()[1] == "5"
    assert lines["REDIS_URL"].endswith("(.env)")


def test_check_config_invalid_exits_2_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    env = tmp_path / "x.env"
    env.write_text("IB_API_MODE=FIX\nDATABASE_URL=postgresql://u@h/db\nREDIS_URL=redis://h/0\n")
    assert cli.main(["--env-file", str(env), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "IB_API_MODE" in err and "SOCKET, PORTAL" in err


def test_check_config_requires_the_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    env = tmp_path / "x.env"
    env.write_text("REDIS_URL=redis://h/0\n")
    assert cli.main(["--env-file", str(env), "check-config"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_env_file_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.env_file(None) is None
    (tmp_path / ".demo").mkdir()
    (tmp_path / ".demo" / ".env").write_text("")
    assert cli.env_file(None) == Path(".demo/.env")
    (tmp_path / ".env").write_text("")
    assert cli.env_file(None) == Path(".env")
    assert cli.env_file("other.env") == Path("other.env")


# ---- tail --------------------------------------------------------------------------------------
def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "timestamp": datetime(2026, 11, 25, 14, 30, 5, tzinfo=UTC),
        "contract": "PORTFOLIO",
        "delta": 1234.5678,
        "gamma": 12.345678,
        "vega": -250.1,
        "theta": -91.88,
        "underlying_price": 513.58,
        "account": "DU1234567",
        "legs": 12,
        "legs_excluded": 0,
    }
    row.update(kw)
    return row


def test_tail_rows_align_under_the_header() -> None:
    head, rule = tail.header().splitlines()
    rows = [
        tail.format_row(_row()),
        tail.format_row(_row(contract="SPY", delta=-3.0, gamma=0.0, underlying_price=None)),
        tail.format_row(_row(delta=-98765.4321)),
    ]
    # every column ends where its rule ends (numbers are right-aligned)
    ends = [
        i + 1
        for i, ch in enumerate(rule)
        if ch == "-" and (i + 1 == len(rule) or rule[i + 1] == " ")
    ]
    for line in [head, *rows]:
        for end in ends[3:]:  # numeric columns
            assert line[end - 1] != " ", (line, end)
    assert "1,234.57" in rows[0]
    assert "NULL" in rows[1]
    assert rows[1].split()[2:4] == ["DU1234567", "SPY"]
    assert rows[0].endswith("12/12")


def test_tail_shows_legs_left_out_and_a_row_whose_exposure_is_not_there() -> None:
    assert tail.format_row(_row(legs=12, legs_excluded=3)).endswith(" 9/12")
    assert tail.format_row(_row(legs=None, legs_excluded=None)).endswith(" -")


def test_tail_timestamps_are_shown_in_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    text = tail.format_row(_row(timestamp=datetime(2026, 11, 25, 9, 30, tzinfo=eastern)))
    assert text.startswith("2026-11-25 14:30:00.000")


def test_tail_number_format() -> None:
    assert tail.fmt_number(None, 2) == "NULL"
    assert tail.fmt_number(float("nan"), 2) == "nan"
    assert tail.fmt_number(-0.123456, 4) == "-0.1235"


# ---- the demo profile --------------------------------------------------------------------------
def _sections(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_demo_runs_the_production_bridge_group(tmp_path: Path) -> None:
    d = demo.render(
        tmp_path / "d",
        ports={
            "pg_port": 50001,
            "redis_port": 50002,
            "gateway_port": 50003,
            "gateway_control_port": 50004,
            "web_port": 50005,
        },
        python="/opt/py",
    )
    rendered = _sections(d.conf.read_text())
    prod = _sections((REPO / "deploy" / "supervisord.conf").read_text())
    for section in demo.BRIDGE_SECTIONS:
        for key, value in prod.items(section):
            got = rendered.get(section, key)
            if key == "directory":
                assert got == "%(here)s"
            elif key == "command":
                assert got.startswith("/opt/py -m ")
                assert got.endswith(value.split(" ", 1)[1])
            elif "%(here)s/run/" in value:
                assert got == value.replace("%(here)s/run/", "%(here)s/logs/")
            else:
                assert got == value, (section, key)
    assert "--port 50001" in rendered.get("program:postgres", "command")
    assert "--aof" in rendered.get("program:redis", "command")
    assert "--port 50003 --control-port 50004" in rendered.get("program:gateway", "command")
    env = dict(
        line.split("=", 1)
        for line in (d.dir / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert env["DATABASE_URL"] == "postgresql://postgres@127.0.0.1:50001/postgres"
    assert env["REDIS_URL"] == "redis://127.0.0.1:50002/0"
    assert env["IB_PORT"] == "50003"
    assert env["BRIDGE_SUPERVISOR_URL"] == f"unix://{d.dir}/supervisor.sock"
    assert env["BRIDGE_WEB_PORT"] == "50005" and d.web_url == "http://127.0.0.1:50005/"
    assert 'REDIS_URL="redis://127.0.0.1:50002/0"' in rendered.get("supervisord", "environment")


def test_demo_reuses_free_ports_of_the_last_run(tmp_path: Path) -> None:
    first = demo.render(tmp_path / "d")
    again = demo.render(tmp_path / "d")
    assert first.ports == again.ports
    assert len(set(first.ports.values())) == len(demo.PORT_NAMES) == 5
    assert not {5432, 6379} & set(first.ports.values())


def test_demo_escapes_percent_for_supervisord(tmp_path: Path) -> None:
    d = demo.render(tmp_path / "d", overrides={"IB_ACCOUNT": "a%b"})
    assert 'IB_ACCOUNT="a%%b"' in d.conf.read_text()


def test_demo_refuses_a_socket_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        demo.render(tmp_path / ("x" * 120))


# ---- waitfor -----------------------------------------------------------------------------------
def test_waitfor_targets() -> None:
    assert waitfor.parse_target("127.0.0.1:5432") == ("127.0.0.1", 5432)
    assert waitfor.parse_target(":80") == ("127.0.0.1", 80)
    with pytest.raises(Exception, match="HOST:PORT"):
        waitfor.parse_target("nothing")


def test_waitfor_times_out_on_a_closed_port() -> None:
    port = demo._free_port(set())
    assert waitfor.wait_ports([("127.0.0.1", port)], 0.3) == [("127.0.0.1", port)]


def test_waitfor_needs_a_command() -> None:
    assert waitfor.main(["127.0.0.1:1"]) == 2


# ---- README ------------------------------------------------------------------------------------
def test_readme_table_and_env_example_are_generated_from_the_declaration() -> None:
    text = (REPO / "README.md").read_text()
    assert config_docs.with_table(text) == text, "regenerate: python -m ops.config_docs"
    assert config_docs.markdown_table() in text
    assert config_docs.main(["--check"]) == 0
    for v in VARIABLES:
        default = f"`{v.default}`" if v.default else "(empty)"
        assert f"| `{v.name}` | {default} | {v.allowed} |" in text, v.name
        assert f"\n{v.name}={v.default}\n" in env_example()
    for command in ("make demo", "make test", "bridge status", "XPENDING", "XINFO GROUPS"):
        assert command in text


def test_readme_table_is_replaced_between_its_markers() -> None:
    stale = f"intro\n{config_docs.TABLE_START}\n| old |\n{config_docs.TABLE_END}\noutro\n"
    fresh = config_docs.with_table(stale)
    assert fresh.startswith("intro\n") and fresh.endswith("\noutro\n")
    assert "| old |" not in fresh and config_docs.markdown_table() in fresh
    assert config_docs.with_table(fresh) == fresh
    with pytest.raises(ValueError, match="markers"):
        config_docs.with_table("no markers")
