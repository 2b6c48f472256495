"""libfaketime for tests: a real process whose system clock reads a chosen time.

The preloaded library shifts the wall clock of the whole process (and so `shared.clock.utcnow`);
the monotonic clock stays real so that asyncio's timers and timeouts are undisturbed.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

LIBRARY = "libfaketime.so.1"
PATTERNS = (
    f"/usr/lib/*/faketime/{LIBRARY}",
    f"/usr/lib/faketime/{LIBRARY}",
    f"/usr/local/lib/faketime/{LIBRARY}",
    f"/usr/local/lib/{LIBRARY}",
)


def find_libfaketime() -> Path | None:
    """The library of the Debian package `libfaketime` (dpkg -L), else a usual place."""
    if shutil.which("dpkg"):
        listed = subprocess.run(
            ["dpkg", "-L", "libfaketime"], capture_output=True, text=True, check=False
        )
        for line in listed.stdout.splitlines():
            if line.endswith(f"/{LIBRARY}") and Path(line).is_file():
                return Path(line)
    for pattern in PATTERNS:
        for found in sorted(glob.glob(pattern)):
            return Path(found)
    return None


LIBFAKETIME = find_libfaketime()

requires_libfaketime = pytest.mark.skipif(
    LIBFAKETIME is None,
    reason="libfaketime is not installed (Debian/Ubuntu: apt-get install -y libfaketime; "
    ".ci/run installs it when it runs as root)",
)


def clock_at(at: datetime) -> dict[str, str]:
    """Environment for a process whose wall clock starts at `at` (aware, whole seconds) when the
    process starts and runs on at the real speed."""
    assert LIBFAKETIME is not None, "use @requires_libfaketime"
    assert at.tzinfo is not None
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "TZ": "UTC",  # FAKETIME's absolute time is read in the process's local time zone
        "FAKETIME": "@" + at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
