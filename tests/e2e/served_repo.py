"""A git repository served over HTTPS from the host, for the e2e run that clones by URL.

The product accepts ``https://`` and ``ssh://`` URLs only, so the test serves a bare repository
with git's "dumb HTTP" protocol (static files after ``git update-server-info``) over TLS, with a
certificate for ``10.0.2.2`` (the host as seen from a QEMU user-networking guest) and
``127.0.0.1``, signed by a TEST CA that only the test guest image trusts (tests/e2e/image.py
bakes ``e2e_ca_certificate()`` into it). The CA is made once and kept in the test cache.

    with serve_repository(bare_repo_dir) as server:
        url = server.url_for_guest   # https://10.0.2.2:PORT/<name>.git
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import http.server
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.docker_engine import cache_dir, file_lock

GUEST_HOST_ADDRESS = "10.0.2.2"


def _ca_paths() -> tuple[Path, Path]:
    folder = cache_dir() / "test-ca"
    return folder / "ca.pem", folder / "ca.key"


def e2e_ca_certificate() -> Path:
    """The test CA's certificate (PEM), created on first use and kept in the cache."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = _ca_paths()
    if cert_path.is_file() and key_path.is_file():
        return cert_path
    with file_lock(cert_path.parent / "lock"):
        if cert_path.is_file() and key_path.is_file():
            return cert_path
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bivy e2e test CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _server_credentials(folder: Path) -> tuple[Path, Path]:
    """A fresh server certificate for 10.0.2.2 and 127.0.0.1, signed by the test CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert_path = e2e_ca_certificate()
    _, ca_key_path = _ca_paths()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [
        x509.IPAddress(ipaddress.ip_address(GUEST_HOST_ADDRESS)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GUEST_HOST_ADDRESS)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class ServedRepository:
    """A bare repository served over HTTPS.

    Attributes:
        port: the port on all interfaces; path: the URL path (``/<name>.git``);
        requests: request lines seen (to prove the guest fetched from here).
    """

    port: int
    path: str
    requests: list[str]

    @property
    def url_for_guest(self) -> str:
        return f"https://{GUEST_HOST_ADDRESS}:{self.port}{self.path}"

    @property
    def url_for_host(self) -> str:
        return f"https://127.0.0.1:{self.port}{self.path}"


@contextlib.contextmanager
def serve_repository(bare_repo: Path) -> Iterator[ServedRepository]:
    """Serve ``bare_repo`` (a bare git repository) by dumb HTTPS until the block ends."""
    import subprocess

    subprocess.run(["git", "-C", str(bare_repo), "update-server-info"], check=True)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(format % args)

    handler = functools.partial(Handler, directory=str(bare_repo.parent))
    # QEMU user networking maps the guest's 10.0.2.2 to the host's loopback: nothing wider.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with tempfile.TemporaryDirectory(prefix="bivy-e2e-tls-") as tls:
        cert_file, key_file = _server_credentials(Path(tls))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield ServedRepository(
                port=server.server_address[1], path=f"/{bare_repo.name}", requests=requests
            )
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
