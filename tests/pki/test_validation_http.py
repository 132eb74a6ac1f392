"""`UrllibFetcher` over real sockets on 127.0.0.1: answers, limits, timeouts, redirects."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pki_validation_support import PkiEnv, closed_port_url, silent_port

from careid_broker.pki import HttpFetchError, UrllibFetcher


class _Redirector(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def redirect_to() -> Iterator[tuple[str, type[_Redirector]]]:
    handler = type("Handler", (_Redirector,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/crl", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_get_and_post_against_the_pki_server(env: PkiEnv) -> None:
    fetcher = UrllibFetcher()
    crl = x509.load_der_x509_crl(fetcher.get(env.pki.urls.crl, 2))
    assert crl.issuer == env.pki.issuing_certificate.subject

    cert = env.issue()
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, env.pki.issuing_certificate, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    body = fetcher.post(env.pki.urls.ocsp, request, "application/ocsp-request", 2)
    assert ocsp.load_der_ocsp_response(body).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_an_http_error_status_is_a_fetch_error(env: PkiEnv) -> None:
    with pytest.raises(HttpFetchError, match="HTTP 404"):
        UrllibFetcher().get(env.server.url + "/nothing-here", 2)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.crl", "http:///x"])
def test_only_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(HttpFetchError, match="not an http"):
        UrllibFetcher().get(url, 1)


def test_an_answer_over_the_size_limit_is_refused(env: PkiEnv) -> None:
    with pytest.raises(HttpFetchError, match="too large"):
        UrllibFetcher(max_bytes=64).get(env.pki.urls.crl, 2)


def test_a_refused_connection_is_a_fetch_error() -> None:
    with pytest.raises(HttpFetchError):
        UrllibFetcher().get(closed_port_url(), 1)


def test_a_silent_server_times_out() -> None:
    with silent_port() as url:
        started = time.monotonic()
        with pytest.raises(HttpFetchError):
            UrllibFetcher().post(url, b"x", "application/ocsp-request", 0.3)
    assert time.monotonic() - started < 3


@contextmanager
def _dripping(sent: bytes, dripped: bytes, every: float = 0.1) -> Iterator[str]:
    """A URL on 127.0.0.1 whose server answers `sent` at once, then `dripped` one byte
    every `every` seconds (never long enough apart for a socket timeout), then closes."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)

    def answer(connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                connection.sendall(sent)
                for byte in dripped:
                    if stop.wait(every):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/issuing-ca.crl"
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize(
    ("sent", "dripped"),
    [
        # A body announced in full and sent a byte at a time.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x" * 50),
        # Headers sent a byte at a time.
        (b"HTTP/1.1 200 OK\r\n", b"X-Padding: " + b"a" * 40 + b"\r\n\r\n"),
    ],
    ids=["body", "headers"],
)
def test_a_slow_drip_times_out_at_the_deadline(sent: bytes, dripped: bytes) -> None:
    timeout = 0.5
    with _dripping(sent, dripped) as url:
        started = time.monotonic()
        with pytest.raises(HttpFetchError) as caught:
            UrllibFetcher().get(url, timeout)
        elapsed = time.monotonic() - started
    # The drip lasts 5 s or more; the fetch must end near its timeout, not with it.
    assert elapsed < 5 * timeout
    assert "timed out" in str(caught.value)


def test_redirects_are_followed_to_http_only(
    env: PkiEnv, redirect_to: tuple[str, type[_Redirector]]
) -> None:
    url, handler = redirect_to
    handler.target = env.pki.urls.crl
    crl = x509.load_der_x509_crl(UrllibFetcher().get(url, 2))
    assert crl.issuer == env.pki.issuing_certificate.subject

    # urllib itself refuses file: (as HTTP 302); ftp: it would follow, so we refuse it.
    handler.target = "file:///etc/passwd"
    with pytest.raises(HttpFetchError, match="302"):
        UrllibFetcher().get(url, 2)
    handler.target = "ftp://127.0.0.1/issuing-ca.crl"
    with pytest.raises(HttpFetchError, match="not an http"):
        UrllibFetcher().get(url, 2)
