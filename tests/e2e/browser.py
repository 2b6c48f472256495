"""Headless Chromium (Debian's `chromium` and `chromium-driver` packages) driven by Selenium,
for the web console's browser tests. Skips, saying why, where Chromium is not installed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

NOT_INSTALLED = (
    "headless Chromium is not installed here: the browser test needs Debian's `chromium` and "
    "`chromium-driver` packages (.ci/run installs them when it runs as root with apt-get)"
)


def _found() -> tuple[str, str] | None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@contextlib.contextmanager
def chromium(tmp_path: Path, width: int = 1500, height: int = 1050) -> Iterator[Any]:
    """A headless Chromium; its console messages are kept for `console_errors`. Its profile and
    temporary files are in a short folder of its own (a unix socket path must stay under 108
    bytes), removed afterwards; the driver's log goes under `tmp_path`."""
    found = _found()
    if found is None:
        pytest.skip(NOT_INSTALLED)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = found
    scratch = Path(tempfile.mkdtemp(prefix="bw-"))
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root, and in containers without user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={scratch / 'profile'}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {**os.environ, "TMPDIR": str(scratch), "HOME": str(scratch)}
    service = Service(
        executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"), env=env
    )
    try:
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The browser's console messages of level SEVERE since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        with contextlib.suppress(Exception):  # an element replaced while it was read
            last = predicate()
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def shown(driver: Any, element_id: str) -> tuple[str, str | None]:
    """(text, data-value) of an element of the page."""
    element = driver.find_element("id", element_id)
    return element.text, element.get_attribute("data-value")


def chart(driver: Any, greek: str) -> dict[str, str]:
    svg = driver.find_element("id", f"chart-{greek}")
    return {k: svg.get_attribute(f"data-{k}") or "" for k in ("points", "last-t", "last-value")}
