"""`UrllibFetcher` over real sockets on 127.0.0.1: answers, limits, timeouts, redirects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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
