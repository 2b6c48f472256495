"""Rules across variables that one parser alone cannot check: TLS to the Client Portal.

`IBKR_CA_FILE`, when given, must be a readable PEM file of certificates in any mode: it was
given, so a typo is reported at start rather than at the first request (or never, in SOCKET
mode, until someone switches to PORTAL). `IBKR_TLS_VERIFY=0` is refused in PORTAL mode unless
the gateway is on loopback: without verification anyone on the path can read the session and
the account. For the same reason an `http://` gateway (no TLS at all) must be on loopback.
In SOCKET mode the portal variables are unused and not checked against each other.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from shared.config.parsers import ConfigError, mask_url

LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as an IPv4-mapped address) or `localhost`; any other name is
    not (a name could resolve anywhere)."""
    host = host.strip("[]").rstrip(".").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_ca_file(ca_file: Path | None) -> None:
    """Raise ConfigError unless `ca_file` is None or loads as CA certificates."""
    if ca_file is None:
        return
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError:
        raise ConfigError("IBKR_CA_FILE", str(ca_file), "no such file: give a PEM file") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            "IBKR_CA_FILE",
            str(ca_file),
            f"not a readable PEM file of certificates ({reason})",
        ) from None


def check_tls_verify(api_mode: str, gateway_url: str, tls_verify: bool) -> None:
    """Raise ConfigError for a PORTAL gateway off loopback reached without verified TLS:
    IBKR_TLS_VERIFY=0, or an http:// URL."""
    if api_mode != "PORTAL":
        return
    parts = urlsplit(gateway_url)
    host = parts.hostname or ""
    if is_loopback_host(host):
        return
    if parts.scheme == "http":
        raise ConfigError(
            "IBKR_GATEWAY_URL",
            mask_url(gateway_url),
            f"https:// for a gateway off loopback (not {host or 'empty'}): http:// sends the "
            "session in clear text; use https:// and give the gateway's certificate in "
            "IBKR_CA_FILE",
        )
    if tls_verify:
        return
    raise ConfigError(
        "IBKR_TLS_VERIFY",
        "0",
        f"0 only when IBKR_GATEWAY_URL's host is loopback (127.0.0.0/8, ::1, localhost), "
        f"not {host or 'empty'}: keep IBKR_TLS_VERIFY=1 and give the gateway's certificate "
        "in IBKR_CA_FILE",
    )
