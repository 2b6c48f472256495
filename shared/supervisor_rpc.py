"""A small, typed client of supervisord's XML-RPC interface (unix:// or http:// URLs), with a
timeout on every call. Used by `bridge status`, the supervisor event listener and the
watchdog."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from typing import Any, cast
from urllib.parse import urlsplit

DEFAULT_TIMEOUT_S = 5.0
# errors that mean "supervisord is not there or not answering"
RPC_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    xmlrpc.client.Fault,
    xmlrpc.client.ProtocolError,
    http.client.HTTPException,
)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _Transport(xmlrpc.client.Transport):
    def __init__(self, timeout_s: float, unix_path: str | None) -> None:
        super().__init__()
        self._timeout_s = timeout_s
        self._unix_path = unix_path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            self.close()
            conn: http.client.HTTPConnection = _UnixConnection(self._unix_path, self._timeout_s)
            self._connection = (host, conn)
            return conn
        conn = super().make_connection(host)
        conn.timeout = self._timeout_s
        return conn


class Supervisor:
    """supervisord at `url`: `unix:///path/to/supervisor.sock` or `http://[user:pw@]host:port`."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = parts.path if not parts.netloc else f"/{parts.netloc}{parts.path}"
            endpoint, transport = "http://localhost/RPC2", _Transport(timeout_s, path)
        elif parts.scheme == "http":
            endpoint = url.rstrip("/")
            if not endpoint.endswith("/RPC2"):
                endpoint += "/RPC2"
            transport = _Transport(timeout_s, None)
        else:
            raise ValueError(f"unsupported supervisord URL scheme {parts.scheme!r}")
        self._transport = transport
        self._proxy = xmlrpc.client.ServerProxy(endpoint, transport=transport, allow_none=True)

    def call(self, method: str, *args: Any) -> Any:
        """One call on its own connection, closed afterwards (no socket outlives a call)."""
        target: Any = self._proxy
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        finally:
            self._transport.close()

    def all_process_info(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.call("supervisor.getAllProcessInfo"))

    def process_info(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("supervisor.getProcessInfo", name))

    def tail_stdout(self, name: str, length: int = 4000) -> str:
        text, _offset, _overflow = self.call("supervisor.tailProcessStdoutLog", name, 0, length)
        return str(text)

    def stop(self, name: str, wait: bool = True) -> bool:
        return bool(self.call("supervisor.stopProcess", name, wait))

    def start(self, name: str, wait: bool = True) -> bool:
        return bool(self.call("supervisor.startProcess", name, wait))

    def state(self) -> str:
        info = cast(dict[str, Any], self.call("supervisor.getState"))
        return str(info.get("statename", "UNKNOWN"))


def full_name(info: dict[str, Any]) -> str:
    """`group:name` as supervisorctl shows it (just `name` when the group has the same name)."""
    group, name = str(info.get("group", "")), str(info.get("name", ""))
    return name if not group or group == name else f"{group}:{name}"
