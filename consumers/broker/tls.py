"""Certificates for the local broker's TLS listener, made with openssl: a private CA and a server
certificate for 127.0.0.1/localhost signed by it. Kafka reads the PEM files directly."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import BrokerError
from .jars import require_tool


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_certificates(directory: Path, *, days: int = 825) -> TlsFiles:
    """Creates the CA and the server certificate once; later calls return the same files."""
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if all(p.exists() for p in (files.ca_cert, files.server_cert, files.server_key)):
        return files
    openssl = require_tool("openssl", "Install OpenSSL (apt-get install openssl) to create the broker's certificates.")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", files.ca_cert,
         "-days", str(days), "-subj", "/CN=dify-events local CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files.server_key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", files.ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-out", files.server_cert, "-days", str(days), "-extfile", ext],
    ]
    for step in steps:
        result = subprocess.run([openssl, *map(str, step)], capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerError(f"openssl {step[0]} failed while making the broker's certificates:\n{result.stderr}")
    for path in (ca_key, files.server_key):
        path.chmod(0o600)
    return files
