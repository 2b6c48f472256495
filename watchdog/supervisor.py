"""Restart the collector through supervisord's XML-RPC interface (blocking calls in a thread).

`BRIDGE_SUPERVISOR_URL` is `unix:///path/to/supervisor.sock` or `http://127.0.0.1:9001`
(credentials, if any, in the URL: `http://user:pw@127.0.0.1:9001`; never logged). A frozen
collector (SIGSTOP) would not act on SIGTERM, so the restart first sends it SIGCONT, then
`stopProcess` (supervisord escalates to SIGKILL after the program's `stopwaitsecs`), then
`startProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from shared.config import mask_url
from shared.supervisor_rpc import Supervisor

CALL_TIMEOUT_S = 60.0  # stopProcess waits for the process to stop (stopwaitsecs + margin)

# supervisor.xmlrpc.Faults, copied so a missing `supervisor` package is reported clearly
BAD_NAME = 10
NOT_RUNNING = 70
ALREADY_STARTED = 60


class SupervisorUnavailable(Exception):
    """Not running under supervisord: no URL, or supervisord cannot be reached."""


class RestartFailed(Exception):
    """supervisord answered but could not restart the process."""


class NotRestarted(Exception):
    """The process is not RUNNING under supervisord: it is not the watchdog's to restart."""

    def __init__(self, state: str, description: str = "") -> None:
        super().__init__(f"state {state}" + (f" ({description})" if description else ""))
        self.state = state


@dataclass(frozen=True)
class RestartResult:
    pid_before: int | None
    pid_after: int | None
    state_after: str


class SupervisorClient:
    def __init__(self, url: str, process: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.url = url
        self.process = process
        self.timeout_s = timeout_s

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def where(self) -> str:
        return mask_url(self.url) or "(BRIDGE_SUPERVISOR_URL not set)"

    async def restart(self) -> RestartResult:
        """SIGCONT, stop, start a RUNNING process; raises SupervisorUnavailable, NotRestarted
        or RestartFailed."""
        if not self.url:
            raise SupervisorUnavailable("BRIDGE_SUPERVISOR_URL is not set")
        return await asyncio.to_thread(self._restart_blocking)

    def info(self) -> dict[str, Any]:
        """supervisord's getProcessInfo for the collector (blocking: call it in a thread)."""
        return dict(
            self._call(
                Supervisor(self.url, self.timeout_s), "supervisor.getProcessInfo", self.process
            )
        )

    def _restart_blocking(self) -> RestartResult:
        server = Supervisor(self.url, self.timeout_s)
        info = self._call(server, "supervisor.getProcessInfo", self.process)
        pid_before = int(info.get("pid") or 0) or None
        state = str(info.get("statename", ""))
        if state != "RUNNING":
            # STOPPED: an operator stopped it; STARTING/BACKOFF: supervisord is on it;
            # FATAL: it cannot start (its log says why). Not the watchdog's to override.
            raise NotRestarted(state, str(info.get("description", "")))
        # a frozen process must run again to act on SIGTERM; a fault here (it died
        # meanwhile) is left to stopProcess below to report
        with contextlib.suppress(_Fault):
            self._call(server, "supervisor.signalProcess", self.process, "CONT")
        try:
            self._call(server, "supervisor.stopProcess", self.process, True)
        except _Fault as exc:
            if exc.code != NOT_RUNNING:
                raise RestartFailed(f"stopProcess({self.process}): {exc}") from None
        try:
            self._call(server, "supervisor.startProcess", self.process, True)
        except _Fault as exc:
            if exc.code != ALREADY_STARTED:
                raise RestartFailed(f"startProcess({self.process}): {exc}") from None
        after = self._call(server, "supervisor.getProcessInfo", self.process)
        return RestartResult(
            pid_before, int(after.get("pid") or 0) or None, str(after.get("statename", ""))
        )

    def _call(self, server: Supervisor, method: str, *args: Any) -> Any:
        try:
            return server.call(method, *args)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == BAD_NAME:
                raise RestartFailed(f"supervisord has no process named {self.process!r}") from None
            raise _Fault(exc.faultCode, exc.faultString) from None
        except xmlrpc.client.ProtocolError as exc:
            raise SupervisorUnavailable(
                f"{self.where()}: HTTP {exc.errcode} {exc.errmsg}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise SupervisorUnavailable(f"{self.where()} unreachable: {exc!r}") from None


class _Fault(RestartFailed):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"fault {code}: {text}")
        self.code = code
