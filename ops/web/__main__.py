"""`python -m ops.web`: the web console under supervisord (`bridge web` from a shell)."""

from __future__ import annotations

from ops.cli import supervisor_url
from ops.web.server import serve
from shared.config import Settings
from shared.process import run_main


async def main(settings: Settings) -> int:
    return await serve(settings, supervisor_url(settings))


if __name__ == "__main__":
    run_main("web", main)
