"""A loopback HTTP file server for the pull tests (stdlib ``http.server`` on a thread).

It serves byte strings by path with ``Range`` / ``If-Range`` support and an ETag, and can
misbehave on purpose: cut the connection after N bytes (once), redirect, announce a wrong
``Content-Length``, send no length at all, or trickle a body slowly. Every request's path and
headers are recorded.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]


@dataclass
class PullServer:
    """Files and misbehaviours, by path."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    #: path -> bytes to send before closing the connection, for the next request only.
    cut_once: dict[str, int] = field(default_factory=dict)
    #: path -> the Content-Length to announce (the whole file is sent anyway).
    announce: dict[str, int] = field(default_factory=dict)
    #: paths sent without Content-Length, delimited by closing the connection.
    unsized: set[str] = field(default_factory=set)
    #: path -> seconds to sleep after each 64 KiB.
    slow: dict[str, float] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    #: paths whose response was broken off by the client going away.
    client_gone: list[str] = field(default_factory=list)
    #: serve HTTPS with this server-side context.
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        serve = lambda: self._httpd.serve_forever(poll_interval=0.05)  # noqa: E731
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The URL of ``path`` here."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def requests_for(self, path: str) -> list[Recorded]:
        """The requests of ``path``, in order."""
        return [r for r in self.requests if r.path == path]

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path
        self.requests.append(Recorded(path, {k.lower(): v for k, v in handler.headers.items()}))
        if path in self.redirects:
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = self.files.get(path)
        if data is None:
            handler.send_error(404)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start = _range_start(handler, etag)
        if start is not None and start >= len(data):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = data[start or 0 :]
        handler.send_response(206 if start else 200)
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if path not in self.unsized:
            handler.send_header("Content-Length", str(self.announce.get(path, len(body))))
        handler.end_headers()
        cut = self.cut_once.pop(path, None)
        try:
            self._write(handler, body if cut is None else body[:cut], self.slow.get(path))
        except (BrokenPipeError, ConnectionResetError):
            self.client_gone.append(path)
            return
        if cut is not None:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _write(handler: http.server.BaseHTTPRequestHandler, body: bytes, delay: float | None):
        step = 64 * 1024
        for offset in range(0, len(body), step):
            handler.wfile.write(body[offset : offset + step])
            if delay:
                handler.wfile.flush()
                time.sleep(delay)
        handler.wfile.flush()


def _range_start(handler: http.server.BaseHTTPRequestHandler, etag: str) -> int | None:
    """Where a ``Range: bytes=N-`` request starts, unless ``If-Range`` names another version."""
    header = handler.headers.get("Range")
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    if_range = handler.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        return None
    value = header.removeprefix("bytes=").removesuffix("-")
    return int(value) if value.isdigit() else None


def small_gguf(tensor_bytes: int = 3 * 1024 * 1024, *, license: str = "mit") -> bytes:
    """A valid GGUF file with the metadata a manifest reads and ``tensor_bytes`` of data."""
    from tests.unit.test_gguf_check import U32, gguf_file, gguf_kv, gguf_string

    kvs = [
        gguf_kv("general.architecture", 8, gguf_string("llama")),
        gguf_kv("general.file_type", 4, U32.pack(15)),
        gguf_kv("general.license", 8, gguf_string(license)),
        gguf_kv("llama.context_length", 4, U32.pack(4096)),
        gguf_kv("tokenizer.chat_template", 8, gguf_string("{{ messages }}")),
    ]
    return gguf_file(kvs=kvs, tensors=[("weights", [tensor_bytes // 4])])


def self_signed_tls(
    directory: Path, host: str = "localhost"
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for ``host`` (and 127.0.0.1) signed by itself: the server's context, and a
    client context that trusts it and nothing else."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
