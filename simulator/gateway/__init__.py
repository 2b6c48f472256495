"""A stand-in for IB Gateway speaking the real TWS socket protocol (server version 178).

`GatewaySimulator` is the server (in process); `ControlServer` exposes its controls on a
line-based loopback port for other processes; `python -m simulator.gateway` runs both.
"""

from simulator.gateway.control import ControlServer, send_command, send_command_sync
from simulator.gateway.server import GatewaySimulator

__all__ = ["ControlServer", "GatewaySimulator", "send_command", "send_command_sync"]
