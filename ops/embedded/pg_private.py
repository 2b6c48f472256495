"""Where PostgreSQL lives when it runs as another user (as root: postgres refuses root).

That user must reach its data folder and its binaries, but the repository (the demo's
`.demo/pg/data`, the binaries in `.venv`) may sit under folders it cannot traverse, such as a
private home folder. No folder's mode is changed to let it in. Instead, a private folder is
made for it in the system's temporary folder, `<tmp>/bridge-pg-private-XXXXXXXX` (mode 0700,
owned by that user), holding the cluster (`data/`) and the server's files (`pkg/`: the
wheel's pginstall/ bin, lib and share, and its bundled libraries, pgserver.libs/, in the same
layout as in site-packages, since the binaries find those by a relative rpath; hard-linked
when on the same filesystem and readable by others, else copied). The data folder asked for
becomes a symbolic link to `<private>/data`, which records where it is; `remove` deletes both
(`make clean` runs it: python -m ops.embedded.clean DATA_DIR).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PREFIX = "bridge-pg-private-"
MARKER = ".bridge-pg-private"  # written by us (owner: our uid): proof that we made the folder
PACKAGE = "pgserver"
PGINSTALL_PARTS = ("bin", "lib", "share")  # what initdb and postgres use (not include/)
LIBS = f"{PACKAGE}.libs"  # next to the package in site-packages: $ORIGIN/../../../pgserver.libs


@dataclass(frozen=True)
class Place:
    """The private folder of one cluster: `home` holds `data/` and `pkg/`."""

    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def bin_dir(self) -> Path:
        return self.home / "pkg" / PACKAGE / "pginstall" / "bin"


def _ours(home: Path) -> bool:
    """`home` is a private folder we made (its name, our marker in it)."""
    try:
        marker = (home / MARKER).lstat()
    except OSError:
        return False
    return (
        home.name.startswith(PREFIX)
        and stat.S_ISREG(marker.st_mode)
        and (marker.st_uid == os.geteuid())
    )


def linked(data_dir: Path) -> Place | None:
    """The private folder `data_dir` links to, when it is one of ours."""
    if not data_dir.is_symlink():
        return None
    target = Path(os.readlink(data_dir))
    if target.name != "data" or not target.is_absolute():
        return None
    place = Place(target.parent)
    return place if _ours(place.home) else None


def unreachable_parent(folder: Path) -> Path | None:
    """The first folder from `folder` up to / that other users cannot traverse (no o+x)."""
    for p in [folder, *folder.parents]:
        if not p.stat().st_mode & stat.S_IXOTH:
            return p
    return None


def _readable_by_others(st: os.stat_result) -> bool:
    need = stat.S_IROTH | (stat.S_IXOTH if st.st_mode & stat.S_IXUSR else 0)
    return st.st_mode & need == need


def _link_or_copy(user: pwd.struct_passwd) -> Callable[[str, str], None]:
    """copytree's copy function: a hard link (no bytes copied, same inode, same mode) when
    the file is readable by others; else a copy owned by `user`."""

    def copy(src: str, dst: str) -> None:
        st = os.stat(src)
        if _readable_by_others(st):
            with contextlib.suppress(OSError):  # another filesystem: copy instead
                os.link(src, dst)
                return
        shutil.copy2(src, dst)
        if not _readable_by_others(st):
            os.chown(dst, user.pw_uid, user.pw_gid)

    return copy


def create(data_dir: Path, pginstall: Path, user: pwd.struct_passwd) -> Place:
    """A new private folder for `user` with the server's files; `data_dir` becomes a link to
    its `data/` (an existing data folder is moved there first)."""
    base = Path(tempfile.gettempdir()).resolve()
    blocked = unreachable_parent(base)
    if blocked is not None:
        raise RuntimeError(
            f"PostgreSQL runs as {user.pw_name!r} and could not reach a folder in {base}: "
            f"{blocked} is not traversable by other users. Set TMPDIR to a folder they can "
            "traverse (such as /tmp); no folder's mode is changed for it."
        )
    home = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))  # mode 0700
    try:
        (home / MARKER).write_text(f"the private PostgreSQL folder of {data_dir}\n")
        place = Place(home)
        site, pkg = pginstall.parent.parent, home / "pkg"
        copies = [(pginstall / part, place.bin_dir.parent / part) for part in PGINSTALL_PARTS]
        if (site / LIBS).is_dir():
            copies.append((site / LIBS, pkg / LIBS))
        for src, dst in copies:
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy(user))
        if data_dir.is_dir() and not data_dir.is_symlink():
            shutil.move(data_dir, place.data)  # a cluster of an earlier layout keeps its data
        else:
            place.data.mkdir(mode=0o700)
        os.chown(place.data, user.pw_uid, user.pw_gid)
        os.chown(home, user.pw_uid, user.pw_gid)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        if data_dir.is_symlink():
            data_dir.unlink()  # pointing at a folder that is gone (a reboot emptied /tmp)
        data_dir.symlink_to(place.data)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    return place


def ensure(data_dir: Path, pginstall: Path, user: pwd.struct_passwd) -> tuple[Place, bool]:
    """The private folder of `data_dir` (made when absent); True when it was just made."""
    place = linked(data_dir)
    if place is not None and (place.bin_dir / "postgres").exists() and place.data.is_dir():
        return place, False
    return create(data_dir, pginstall, user), True


def server_running(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(exe.removesuffix(" (deleted)")).name == "postgres"


def remove(data_dir: Path) -> Path | None:
    """Delete the private folder `data_dir` links to, and the link; the folder removed."""
    place = linked(data_dir)
    if place is None:
        return None
    shutil.rmtree(place.home)
    data_dir.unlink()
    return place.home
