"""The demo run as root changes nothing outside the repository's folder but what it says.

A clone of this repository's HEAD in a folder of mode 0700 (as a clone under a private home
folder), its demo run with this test's Python, the clone's code and a copy of the PostgreSQL
wheel inside the clone's `.venv` first on PYTHONPATH (as `make demo` there would have them):
rows arrive, `--stop` ends it; then `make clean`. Before and after, every folder from the
clone, and from those binaries, up to / keeps its mode, owner and group; nothing beside the
clone appears in its parent. As root PostgreSQL runs as `pgserver` from a
private folder (mode 0700, owned by it), which the demo names in its first lines and which
`make clean` removes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.embedded import pg_private
from ops.embedded.common import PG_USER_AS_ROOT, pg_bin_dir
from tests.e2e.test_demo_lifecycle import Processes, wait_new_row
from tests.helpers import bridge_env

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only root runs PostgreSQL as another user, which is what could open private folders",
)


def modes_up_to_root(path: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, uid, gid) of `path` and of every folder above it."""
    out = {}
    for p in [path, *path.parents]:
        st = p.stat()
        out[str(p)] = (st.st_mode, st.st_uid, st.st_gid)
    return out


def snapshot(clone: Path, bins: Path) -> dict[str, tuple[int, int, int]]:
    return {**modes_up_to_root(clone), **modes_up_to_root(bins)}


def wheel_copy(site: Path) -> Path:
    """The pgserver package and its bundled libraries hard-linked into `site` (the binaries
    find those libraries by a relative path); its binaries' folder."""
    package = pg_bin_dir().parents[1]
    for name in (package.name, f"{package.name}.libs"):
        if (package.parent / name).is_dir():
            shutil.copytree(package.parent / name, site / name, copy_function=os.link)
    return site / package.name / "pginstall" / "bin"


@pytest.fixture
def private_parent() -> Iterator[Path]:
    """A folder of mode 0700 outside pytest's basetemp, as a private home folder would be."""
    parent = Path(tempfile.mkdtemp(prefix="bridge-private-home-"))
    parent.chmod(0o700)
    try:
        yield parent
    finally:
        pg_private.remove(parent / "clone" / ".demo" / "pg" / "data")
        shutil.rmtree(parent, ignore_errors=True)


def test_demo_as_root_opens_no_folder_above_the_clone(private_parent: Path) -> None:
    clone = private_parent / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
        check=True,
        capture_output=True,
    )
    site = clone / ".venv" / "lib" / "site-packages"
    bins = wheel_copy(site)
    demo_dir, log = clone / ".demo", private_parent / "demo.out"
    env = bridge_env(PYTHONPATH=f"{clone}{os.pathsep}{site}")
    demo_cmd = [sys.executable, "-m", "ops.cli", "demo", "--dir", str(demo_dir)]
    before, before_clone = snapshot(clone, bins), modes_up_to_root(clone)
    log.touch()
    beside = sorted(os.listdir(private_parent))

    procs = Processes()
    try:
        since = datetime.now(UTC)
        with log.open("ab") as out:
            demo = subprocess.Popen(
                demo_cmd,
                cwd=clone,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal gives
            )
        procs.procs.append(demo)
        wait_new_row(demo_dir, since, log)
        procs.watch(demo)
        stop = subprocess.run(
            [*demo_cmd, "--stop"], cwd=clone, env=env, capture_output=True, text=True, timeout=180
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert demo.wait(60) == 0, log.read_text()[-3000:]
    finally:
        procs.close()

    assert snapshot(clone, bins) == before
    assert sorted(os.listdir(private_parent)) == beside
    assert (private_parent.stat().st_mode & 0o777) == 0o700

    # what it made outside the repository: one private folder, said before the servers start
    place = pg_private.linked(demo_dir / "pg" / "data")
    assert place is not None
    home = place.home.stat()
    assert home.st_mode & 0o777 == 0o700
    assert home.st_uid == pwd.getpwnam(PG_USER_AS_ROOT).pw_uid
    assert private_parent not in place.home.parents
    assert (place.bin_dir / "postgres").stat().st_ino == (bins / "postgres").stat().st_ino
    said = log.read_text()
    first_start = said.index("demo: PostgreSQL 127.0.0.1")
    assert f"`{PG_USER_AS_ROOT}`" in said[:first_start], said[:2000]
    assert str(place.home) in said[:first_start], said[:2000]

    clean = subprocess.run(
        ["make", "clean", f"PYTHON={sys.executable}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not place.home.exists() and not demo_dir.exists() and not site.exists()
    assert modes_up_to_root(clone) == before_clone
    assert sorted(os.listdir(private_parent)) == beside
