"""The private folder PostgreSQL runs from as root (ops/embedded/pg_private.py), on real files,
a real unprivileged user and a server-files tree laid out as pgserver's wheel: made once and
reused, replaced when it vanished (a reboot emptied /tmp), an existing data folder moved in,
trusted (and deleted) only when our marker proves we made it, never half made, and a clear
error when the temporary folder is out of that user's reach."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.embedded import pg_private
from ops.embedded.common import pg_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a private folder is made as root")


@pytest.fixture
def user() -> pwd.struct_passwd:
    made = pg_user()
    assert made is not None
    return made


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temporary folder private folders are made in (traversable, as /tmp is)."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-test-tmp-", dir="/tmp"))
    folder.chmod(0o711)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def work(base: Path) -> Path:
    """The test's own files (pytest's tmp_path would be made in the patched folder)."""
    folder = base / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def pginstall(base: Path) -> Path:
    """site-packages/pgserver/pginstall with a binary, a library only its owner may read, and
    a shared file."""
    root = base / "site" / "pgserver" / "pginstall"
    for part in pg_private.PGINSTALL_PARTS:
        (root / part).mkdir(parents=True)
    (root / "bin" / "postgres").write_text("#!/bin/sh\n")
    (root / "bin" / "postgres").chmod(0o755)
    (root / "lib" / "private.so").write_text("secret")
    (root / "lib" / "private.so").chmod(0o600)
    (root / "share" / "postgres.bki").write_text("data")
    (root / "share" / "postgres.bki").chmod(0o644)
    return root


def homes(base: Path) -> list[Path]:
    return sorted(base.glob(f"{pg_private.PREFIX}*"))


def test_made_once_then_reused(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    data_dir = work / "pgdata"
    place, made = pg_private.ensure(data_dir, pginstall, user)
    assert made
    assert homes(base) == [place.home]
    assert data_dir.is_symlink() and data_dir.resolve() == place.data
    home_st = place.home.stat()
    assert stat.S_IMODE(home_st.st_mode) == 0o700
    assert (home_st.st_uid, place.data.stat().st_uid) == (user.pw_uid, user.pw_uid)
    assert (place.home / pg_private.MARKER).stat().st_uid == os.geteuid()
    # files others may read are hard links; the one only its owner reads is a copy for `user`
    postgres = place.bin_dir / "postgres"
    assert postgres.stat().st_ino == (pginstall / "bin" / "postgres").stat().st_ino
    private_lib = place.bin_dir.parent / "lib" / "private.so"
    assert private_lib.stat().st_ino != (pginstall / "lib" / "private.so").stat().st_ino
    assert private_lib.stat().st_uid == user.pw_uid
    assert private_lib.read_text() == "secret"
    assert not (place.home / "pkg" / pg_private.LIBS).exists()  # none in this site-packages

    again, made_again = pg_private.ensure(data_dir, pginstall, user)
    assert (again, made_again) == (place, False)
    assert homes(base) == [place.home]


def test_the_bundled_libraries_are_taken_along(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    libs = pginstall.parent.parent / pg_private.LIBS
    libs.mkdir()
    (libs / "libicu.so").write_text("icu")
    place, _ = pg_private.ensure(work / "pgdata", pginstall, user)
    assert (place.home / "pkg" / pg_private.LIBS / "libicu.so").read_text() == "icu"


def test_a_vanished_private_folder_is_replaced(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    data_dir = work / "pgdata"
    first, _ = pg_private.ensure(data_dir, pginstall, user)
    shutil.rmtree(first.home)  # a reboot emptied /tmp: the link dangles
    second, made = pg_private.ensure(data_dir, pginstall, user)
    assert made
    assert second.home != first.home
    assert homes(base) == [second.home]
    assert data_dir.resolve() == second.data


def test_an_existing_data_folder_is_moved_in(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    data_dir = work / "pgdata"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("16\n")
    place, _ = pg_private.ensure(data_dir, pginstall, user)
    assert data_dir.is_symlink()
    assert (place.data / "PG_VERSION").read_text() == "16\n"
    assert place.data.stat().st_uid == user.pw_uid


def test_a_folder_is_trusted_only_with_our_marker(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    data_dir = work / "pgdata"
    place, _ = pg_private.ensure(data_dir, pginstall, user)
    marker = place.home / pg_private.MARKER
    os.chown(marker, user.pw_uid, user.pw_gid)  # written by another user: no proof
    assert pg_private.linked(data_dir) is None
    assert pg_private.remove(data_dir) is None  # not ours: left alone
    assert place.home.is_dir() and data_dir.is_symlink()
    marker.unlink()  # no marker at all
    assert pg_private.linked(data_dir) is None
    replaced, made = pg_private.ensure(data_dir, pginstall, user)
    assert made and replaced.home != place.home
    assert place.home.is_dir()  # the untrusted folder is not deleted either


def test_links_to_anything_but_a_private_data_folder_are_not_ours(base: Path, work: Path) -> None:
    plain = work / "plain"
    plain.mkdir()
    assert pg_private.linked(plain) is None
    relative = work / "relative"
    relative.symlink_to(Path("somewhere") / "data")
    assert pg_private.linked(relative) is None
    home = base / f"{pg_private.PREFIX}x"
    (home / "other").mkdir(parents=True)
    (home / pg_private.MARKER).write_text("ours\n")
    not_data = work / "not-data"
    not_data.symlink_to(home / "other")
    assert pg_private.linked(not_data) is None
    unprefixed = base / "someone-else"
    (unprefixed / "data").mkdir(parents=True)
    (unprefixed / pg_private.MARKER).write_text("ours\n")
    foreign = work / "foreign"
    foreign.symlink_to(unprefixed / "data")
    assert pg_private.linked(foreign) is None
    assert pg_private.remove(foreign) is None
    assert unprefixed.is_dir()


def test_remove_deletes_the_private_folder_and_the_link(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    data_dir = work / "pgdata"
    place, _ = pg_private.ensure(data_dir, pginstall, user)
    assert pg_private.remove(data_dir) == place.home
    assert not place.home.exists()
    assert not data_dir.is_symlink() and not data_dir.exists()
    assert homes(base) == []


def test_a_temporary_folder_out_of_reach_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    closed = Path(tempfile.mkdtemp(prefix="bridge-test-closed-", dir="/tmp"))  # mode 0700
    try:
        (closed / "tmp").mkdir(mode=0o777)
        monkeypatch.setattr(tempfile, "tempdir", str(closed / "tmp"))
        with pytest.raises(RuntimeError, match=f"{closed} is not traversable by other users"):
            pg_private.create(work / "pgdata", pginstall, user)
        assert list((closed / "tmp").iterdir()) == []
        assert pg_private.unreachable_parent(closed / "tmp") == closed
    finally:
        shutil.rmtree(closed)
    assert pg_private.unreachable_parent(Path("/tmp")) is None


def test_a_failure_midway_leaves_no_half_made_folder(
    base: Path, pginstall: Path, user: pwd.struct_passwd, work: Path
) -> None:
    parent = work / "a-file"
    parent.write_text("")  # the data folder's parent cannot be made
    with pytest.raises(OSError):
        pg_private.ensure(parent / "pgdata", pginstall, user)
    assert homes(base) == []


def test_server_running_only_for_a_live_postgres(work: Path) -> None:
    assert not pg_private.server_running(work)  # no postmaster.pid
    pid_file = work / "postmaster.pid"
    pid_file.write_text("garbage\n")
    assert not pg_private.server_running(work)
    pid_file.write_text(f"{os.getpid()}\n{work}\n")  # alive, but python
    assert not pg_private.server_running(work)
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid_file.write_text(f"{ended.stdout.strip()}\n")  # a process that is gone
    assert not pg_private.server_running(work)
