"""`python -m ops.tether [--signal NAME] -- COMMAND ...`

Exec COMMAND in this process (same PID, so supervisord's signals reach it) with the request to
get SIGTERM (or --signal) when its parent ends. The demo runs the IB Gateway simulator this way
(the simulator imports nothing of the product): a supervisord killed -9 leaves it no orphan.
"""

from __future__ import annotations

import os
import signal
import sys

from shared.process import die_with_parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sig = signal.SIGTERM
    if argv[:1] == ["--signal"] and len(argv) > 1:
        try:
            sig = signal.Signals[f"SIG{argv[1].upper().removeprefix('SIG')}"]
        except KeyError:
            print(f"tether: unknown signal {argv[1]!r}", file=sys.stderr)
            return 2
        argv = argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        print("usage: python -m ops.tether [--signal NAME] -- COMMAND ...", file=sys.stderr)
        return 2
    die_with_parent(sig)
    command = argv[1:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
