"""`bridge demo --stop` (ops/demo_run.stop_demo) with real processes but no whole demo: what a
folder's killed supervisord left running is ended, and --stop returns only once the folder's
`bridge demo` let its lock go; a supervisord that outlives the wait is reported, exit 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.demo_run import DemoLock, stop_demo
from ops.embedded import free_port
from shared.supervisor_rpc import Supervisor
from tests.helpers import supervisord_with_collector

# a `bridge demo` as --stop meets it: it holds the folder's lock and ends (letting the lock go)
# once its programs are gone
HOLDER = """\
import sys, time
from pathlib import Path
from ops.demo_owned import alive
from ops.demo_run import DemoLock
lock = DemoLock(Path(sys.argv[1]))
assert lock.acquire()
print("ready", flush=True)
while alive(int(sys.argv[2])):
    time.sleep(0.5)
"""

IGNORES_SIGTERM = """\
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path(sys.argv[1]).touch()
time.sleep(600)
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_stop_without_supervisord_ends_the_leftovers_and_waits_for_the_lock(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    waiting = ["-m", "ops.waitfor", f"127.0.0.1:{free_port()}", "--timeout", "120", "--", "true"]
    leftover = subprocess.Popen([sys.executable, *waiting], cwd=folder)
    procs.append(leftover)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(leftover.pid)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    procs.append(holder)
    assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"

    assert stop_demo(folder, timeout_s=5) == 0
    assert leftover.wait(5) == -signal.SIGTERM
    lock = DemoLock(folder)
    assert lock.acquire(), "--stop returned while the folder's `bridge demo` still held it"
    lock.release()
    assert holder.wait(5) == 0
    assert f"demo: stopped (nothing of it runs in {folder})" in capsys.readouterr().out


def test_a_supervisord_still_running_after_the_wait_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its program ignores SIGTERM (stopwaitsecs=30): supervisord is still stopping it when
    --stop's wait ends."""
    script, ready = tmp_path / "slow.py", tmp_path / "ready"
    script.write_text(IGNORES_SIGTERM)
    program = f"command={sys.executable} {script} {ready}\nstartsecs=0\nstopwaitsecs=30"
    with supervisord_with_collector(program) as (proc, folder, sock):
        end = time.monotonic() + 20
        while not ready.exists():  # SIGTERM ignored from then on
            assert proc.poll() is None and time.monotonic() < end, "the program never started"
            time.sleep(0.05)
        pid = int(Supervisor(f"unix://{sock}").process_info("bridge:collector")["pid"])
        try:
            assert stop_demo(folder, timeout_s=1.0) == 1
        finally:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(20) == 0  # its shutdown ends with the program
    captured = capsys.readouterr()
    assert f"demo: stopping supervisord pid {proc.pid}" in captured.out
    assert f"demo: still running after 1 s; see {folder}/logs/" in captured.err
