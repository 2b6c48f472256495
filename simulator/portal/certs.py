"""A self-signed certificate for the simulator, generated at start with the `openssl` CLI
(the `cryptography` package is not a dependency of the project)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    cert: Path  # PEM: give it to clients as their CA file (IBKR_CA_FILE)
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def generate(directory: Path, common_name: str = "localhost", days: int = 7) -> CertPair:
    """Write cert.pem and key.pem (RSA 2048, SAN localhost and 127.0.0.1) into `directory`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make the simulator's certificate")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
         "-days", str(days), "-keyout", str(key), "-out", str(cert),
         "-subj", f"/CN={common_name}/O=Client Portal Simulator",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=60,
    )
    key.chmod(0o600)
    return CertPair(cert, key)
