"""`python -m ops.embedded.clean DATA_DIR`: delete the private PostgreSQL folder that
DATA_DIR links to (as root: ops/embedded/pg_private.py), and the link; what `make clean` runs.
Refused while a PostgreSQL runs on it. Standard library only: it also runs without the venv."""

from __future__ import annotations

import sys
from pathlib import Path

from ops.embedded import pg_private


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ops.embedded.clean DATA_DIR", file=sys.stderr)
        return 2
    data_dir = Path(argv[0]).absolute()
    if pg_private.server_running(data_dir):
        print(f"PostgreSQL still runs on {data_dir}: stop it first", file=sys.stderr)
        return 1
    home = pg_private.remove(data_dir)
    if home is not None:
        print(f"removed {home} (the private PostgreSQL folder of {data_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
