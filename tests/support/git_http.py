"""A bare git repository served by git's own ``git http-backend`` (smart HTTP, push enabled)
over TLS on 127.0.0.1, behind HTTP basic auth that accepts one token, for tests.

    with serve_git_http(bare_dir, token="t0k") as server:
        server.url_for("project.git")   # https://127.0.0.1:PORT/project.git
        server.ca_file                   # the self-signed certificate: GIT_SSL_CAINFO
        server.authorized / server.refused   # requests that carried the token / did not

Every request without the right ``Authorization: Basic`` (any user name, the token as the
password, as GitHub accepts ``x-access-token:TOKEN``) gets 401 with a ``WWW-Authenticate``
challenge, which is what makes git ask its askpass helper.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_EXEC_PATH = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True)
GIT_HTTP_BACKEND = Path(_EXEC_PATH.stdout.strip()) / "git-http-backend"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
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
class GitHttpServer:
    """A running server; see the module docstring."""

    port: int
    ca_file: Path
    authorized: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def url_for(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def serve_git_http(root: Path, *, token: str) -> Iterator[GitHttpServer]:
    """Serve every bare repository under ``root`` until the block ends."""
    assert GIT_HTTP_BACKEND.exists(), f"git http-backend is missing ({GIT_HTTP_BACKEND})"
    expected = token

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _password(self) -> str | None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except ValueError:
                return None
            return decoded.split(":", 1)[1] if ":" in decoded else None

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body() if self.command == "POST" else b""
            line = f"{self.command} {self.path}"
            if self._password() != expected:
                server.refused.append(line)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="bivy-test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            server.authorized.append(line)
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": "bivy-test",
                "REMOTE_ADDR": "127.0.0.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_CONFIG_NOSYSTEM": "1",
                "HOME": str(root),
            }
            done = subprocess.run(
                [str(GIT_HTTP_BACKEND)], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = done.stdout.partition(b"\n\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for raw in head.decode("latin-1").splitlines():
                key, _, value = raw.partition(":")
                if key.lower() == "status":
                    status = int(value.strip().split()[0])
                elif key:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    folder = Path(tempfile.mkdtemp(prefix="bivy-git-http-"))
    try:
        cert_file, key_file = _self_signed(folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        server = GitHttpServer(port=httpd.server_address[1], ca_file=cert_file)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
