"""The portal simulator's self-signed certificate: made with `cryptography`, or with the
openssl command where that package is missing, and usable by a verifying TLS client."""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import sys
import threading
from pathlib import Path

import pytest

from simulator.portal.certs import CertPair, generate

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def handshake(pair: CertPair, host: str) -> str:
    """A TLS handshake over loopback, the client verifying against the cert as its CA file;
    returns the server name the client checked."""
    server_ctx = pair.server_context()
    client_ctx = ssl.create_default_context(cafile=str(pair.cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(10)
        assert not errors, errors
    return host


@needs_openssl
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_openssl_fallback_when_cryptography_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # `import cryptography` fails
    pair = generate(tmp_path / "certs", common_name="sim.test", days=2)
    assert pair.cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600  # the private key: owner only
    assert handshake(pair, host) == host


def test_cryptography_certificate_verifies(tmp_path: Path) -> None:
    pair = generate(tmp_path)
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    assert handshake(pair, "localhost") == "localhost"


def test_neither_cryptography_nor_openssl_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match=r"cryptography package .* or the openssl command"):
        generate(tmp_path / "certs")
    assert not (tmp_path / "certs" / "key.pem").exists()
