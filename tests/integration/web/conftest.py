"""The web console's fixtures (tests/web_console.py), for every test of this folder."""

from __future__ import annotations

from tests.web_console import start_web, start_web_process

__all__ = ["start_web", "start_web_process"]
