"""`bridge demo` (ops/demo_run.py) in the parts an operator meets without a whole demo running:
--render-only writes the supervisord configuration, prints its path and starts nothing; a
second demo in the same folder is refused with how to reach the first; --stop on a folder
where nothing runs says so; the log follower keeps up over a rotated log; and as root the
private PostgreSQL folder is made once and then reused."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import demo_run
from ops.embedded import pg_private
from tests.helpers import wait_for


def test_render_only_prints_the_configuration_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo_run.run_demo(tmp_path, render_only=True) == 0
    conf = tmp_path / "supervisord.conf"
    assert capsys.readouterr().out.strip() == str(conf)  # the file to run supervisord with
    assert "[supervisord]" in conf.read_text()
    assert not (tmp_path / "supervisord.pid").exists()
    assert not (tmp_path / "pg" / "data").exists()  # no cluster, no private folder


def test_a_second_demo_in_the_same_folder_is_refused_with_how_to_reach_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = demo_run.DemoLock(tmp_path)
    assert first.acquire()
    try:
        assert demo_run.run_demo(tmp_path, render_only=True) == 1
    finally:
        first.release()
    err = capsys.readouterr().err
    assert f"already running (`bridge demo` pid {os.getpid()})" in err
    assert "--stop" in err
    assert not (tmp_path / "supervisord.conf").exists()  # nothing rendered over it


def test_the_lock_holder_of_a_folder_never_locked_is_unknown(tmp_path: Path) -> None:
    assert demo_run.DemoLock(tmp_path / "missing").holder() == "?"


def test_stop_where_nothing_runs_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo_run.stop_demo(tmp_path) == 0
    assert f"no demo running in {tmp_path}" in capsys.readouterr().out


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "supervisord.log"
    log.write_bytes(b"old line, not shown\n")
    done = threading.Event()
    thread = threading.Thread(target=demo_run._follow, args=(log, done, 0.05), daemon=True)
    thread.start()
    try:
        yield log
    finally:
        done.set()
        thread.join(5)


async def test_the_log_follower_shows_whole_new_lines_also_after_a_rotation(
    follower: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown: list[str] = []

    def seen(text: str) -> bool:
        shown.append(capsys.readouterr().out)
        return text in "".join(shown)

    with follower.open("ab") as f:

        def probed() -> bool:  # lines before the follower took its start are not shown
            f.write(b"probe\n")
            f.flush()
            return seen("probe")

        await wait_for(probed, 10, "the follower's start")
        f.write(b"first new line\nhalf a li")
        f.flush()
        await wait_for(lambda: seen("first new line"), 10, "the first new line")
        assert "half a li" not in "".join(shown)  # an unfinished line waits for its end
        f.write(b"ne\n")
        f.flush()
        await wait_for(lambda: seen("half a line"), 10, "the completed line")
    with follower.open("wb") as f:  # the log starts over, shorter
        f.write(b"after rotation\n")
    await wait_for(lambda: seen("after rotation"), 10, "the rotated log's line")
    assert "old line" not in "".join(shown)


@pytest.mark.skipif(os.geteuid() != 0, reason="the private folder is made as root")
def test_as_root_the_private_postgres_folder_is_made_then_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "pg" / "data"
    try:
        demo_run.prepare_postgres(tmp_path)
        place = pg_private.linked(data)
        assert place is not None
        assert (place.bin_dir / "postgres").exists()
        out = capsys.readouterr().out
        assert f"made the private folder {place.home}" in out
        assert "PostgreSQL refuses root" in out
        demo_run.prepare_postgres(tmp_path)
        assert f"using the private folder {place.home}" in capsys.readouterr().out
        assert pg_private.linked(data) == place
    finally:
        pg_private.remove(data)
