"""`run_main` and `die_with_parent` in real processes: the exit code supervisord sees for each
way a process's main ends, and no orphan left when the parent ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.helpers import bridge_env

MAIN = """\
import asyncio, sys
from shared.config import ConfigError
from shared.process import TaskDied, run_main

async def main(settings):
    how = sys.argv[1]
    if how == "code":
        return 3
    if how == "died":
        raise TaskDied("task poller died: OSError('gateway gone')")
    if how == "config":
        raise ConfigError("BRIDGE_ACCOUNT", "nobody", "an IBKR account id")
    if how == "interrupt":
        raise KeyboardInterrupt
    raise AssertionError(how)

run_main("collector", main)
"""


def run(how: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MAIN, how],
        env=bridge_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def test_main_return_value_is_the_exit_code() -> None:
    done = run("code")
    assert done.returncode == 3, done.stderr
    assert errors(done.stderr) == []


def test_a_dead_task_exits_1_with_one_error_line() -> None:
    done = run("died")
    assert done.returncode == 1, done.stderr
    (line,) = errors(done.stderr)
    assert "collector collector: process_failed task poller died: OSError('gateway gone')" in line


def test_a_config_error_found_late_exits_2() -> None:
    done = run("config")
    assert done.returncode == 2, done.stderr
    (line,) = errors(done.stderr)
    assert "config_invalid BRIDGE_ACCOUNT='nobody' is invalid: an IBKR account id" in line


def test_ctrl_c_is_an_orderly_exit_0() -> None:
    done = run("interrupt")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_setting_exits_2_before_main() -> None:
    done = run("code", BRIDGE_LOG_LEVEL="LOUD")
    assert done.returncode == 2
    (line,) = errors(done.stderr)
    assert "config_invalid BRIDGE_LOG_LEVEL='LOUD'" in line


CHILD = """\
import signal, sys, time
def on_term(signum, frame):
    open(sys.argv[1], "w").write("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(sys.argv[1] + ".ready", "w").close()
time.sleep(60)
"""

PARENT = """\
import functools, os, signal, subprocess, sys
from shared.process import die_with_parent
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], sys.argv[2]],
    preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()),
)
print(child.pid, flush=True)
sys.stdin.read()  # until the test closes stdin: then this parent ends without its child
"""


def wait_file(path: Path, timeout_s: float = 20) -> str:
    end = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_the_child_gets_sigterm_when_its_parent_ends(tmp_path: Path) -> None:
    marker = tmp_path / "child"
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(marker)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=bridge_env(),
    ) as parent:
        assert parent.stdout is not None and parent.stdin is not None
        child_pid = int(parent.stdout.readline())
        try:
            wait_file(Path(f"{marker}.ready"))
            assert not marker.exists()  # the child runs while its parent does
            parent.stdin.close()
            assert parent.wait(20) == 0
            assert wait_file(marker) == "SIGTERM"
        finally:
            if parent.poll() is None:
                parent.kill()
            if not marker.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child_pid, signal.SIGKILL)


def test_a_parent_already_gone_means_sigterm_at_once(tmp_path: Path) -> None:
    """`parent` no longer this process's parent (it ended before the request took effect):
    the signal is sent at once rather than never."""
    script = textwrap.dedent("""\
        import os, signal, time
        from shared.process import die_with_parent
        die_with_parent(signal.SIGTERM, parent=os.getppid() + 1_000_000)
        time.sleep(30)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], env=bridge_env(), capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGTERM
