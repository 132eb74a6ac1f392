"""The development PKI's HTTP server: OCSP (RFC 6960 Appendix A), the CRL, CA certificates.

`start_pki_server` serves `OcspResponder` (careid_devkit.pki.ocsp) over HTTP — POST /ocsp
and GET /ocsp/<base64> — with the issuing CA's current CRL at /crl/issuing-ca.crl and the
root CA's at /crl/root-ca.crl (each re-signed when its revocations change or its
nextUpdate nears) and the CA certificates under /ca/. One log line
per request. DEMO/TEST MATERIAL: this is not a production responder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from careid_devkit.pki import Pki, PkiError
from careid_devkit.pki.authority import check_crl_hours
from careid_devkit.pki.ocsp import (
    DEFAULT_RESPONSE_VALIDITY,
    Clock,
    OcspAnswer,
    OcspResponder,
    decode_get_path,
    system_clock,
)

__all__ = [
    "DEFAULT_RESPONSE_VALIDITY",
    "Clock",
    "OcspAnswer",
    "OcspResponder",
    "PkiServer",
    "decode_get_path",
    "start_pki_server",
    "system_clock",
]

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 64 * 1024
_CA_FILES: dict[str, Callable[[Pki], x509.Certificate]] = {
    "root-ca": lambda pki: pki.root_certificate,
    "issuing-ca": lambda pki: pki.issuing_certificate,
    "ocsp-signer": lambda pki: pki.ocsp_certificate,
}

_CrlMaker = Callable[..., x509.CertificateRevocationList]
#: The CRLs served, by path (DER, and a PEM copy): the issuing CA's of cards, the root
#: CA's of the issuing CA (named by its certificate's distribution point).
_CRLS: dict[str, Callable[[Pki], _CrlMaker]] = {
    "/crl/issuing-ca.crl": lambda pki: pki.current_crl,
    "/crl/issuing-ca.crl.pem": lambda pki: pki.current_crl,
    "/crl/root-ca.crl": lambda pki: pki.current_root_crl,
    "/crl/root-ca.crl.pem": lambda pki: pki.current_root_crl,
}


class _PkiHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-answer is routine; keep tracebacks out of the log.
        logger.warning(
            "request from %s failed", client_address, exc_info=logger.isEnabledFor(logging.DEBUG)
        )

    def __init__(
        self,
        address: tuple[str, int],
        *,
        responder: OcspResponder,
        clock: Clock,
        crl_next_update_hours: float,
    ) -> None:
        super().__init__(address, _Handler)
        self.responder = responder
        self.clock = clock
        self.crl_next_update_hours = crl_next_update_hours
        self.counts_lock = threading.Lock()
        self.requests_served = 0
        self.ocsp_requests_served = 0

    def count(self, *, ocsp_request: bool) -> None:
        with self.counts_lock:
            self.requests_served += 1
            if ocsp_request:
                self.ocsp_requests_served += 1


class _Handler(BaseHTTPRequestHandler):
    server: _PkiHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "careid-devkit-pki/1"
    sys_version = ""

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length_text = self.headers.get("Content-Length", "")
        length = int(length_text) if length_text.isdigit() else None
        if path not in ("/ocsp", "/ocsp/"):
            self._refuse(404, b"not found\n", path)
        elif length is None:
            self._refuse(411, b"Content-Length required\n", path)
        elif length > MAX_REQUEST_BODY:
            self._refuse(413, b"request too large\n", path)
        else:
            self._ocsp(self.rfile.read(length), log=path)

    def _refuse(self, status: int, body: bytes, path: str) -> None:
        # The unread body would be taken for the next request on this connection.
        self.close_connection = True
        self._send(status, body, "text/plain", log=path)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/ocsp/"):
            encoded = path[len("/ocsp/") :]
            log = f"/ocsp/<{len(encoded)} chars>"
            try:
                request_der = decode_get_path(encoded)
            except ValueError:
                request_der = b""  # answered as malformedRequest, as RFC 6960 wants
            self._ocsp(request_der, log=log)
        elif path in _CRLS:
            self._crl(path)
        elif path.startswith("/ca/"):
            self._ca(path)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain", log=path)
        else:
            self._send(404, b"not found\n", "text/plain", log=path)

    def _ocsp(self, request_der: bytes, *, log: str) -> None:
        answer = self.server.responder.answer(request_der)
        self._send(200, answer.der, "application/ocsp-response", log=log, detail=answer.summary)

    def _crl(self, path: str) -> None:
        try:
            crl = _CRLS[path](self.server.responder.pki)(
                now=self.server.clock(), next_update_hours=self.server.crl_next_update_hours
            )
        except (OSError, PkiError) as exc:
            logger.error("cannot produce the CRL: %s", exc)
            self._send(503, b"CRL unavailable\n", "text/plain", log=path)
            return
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        detail = f"CRL number {number}, {len(crl)} revoked"
        if path.endswith(".pem"):
            pem = crl.public_bytes(serialization.Encoding.PEM)
            self._send(200, pem, "application/x-pem-file", log=path, detail=detail)
        else:
            der = crl.public_bytes(serialization.Encoding.DER)
            self._send(200, der, "application/pkix-crl", log=path, detail=detail)

    def _ca(self, path: str) -> None:
        name, _, extension = path[len("/ca/") :].rpartition(".")
        pki = self.server.responder.pki
        if name == "chain" and extension == "pem":
            body = b"".join(
                cert.public_bytes(serialization.Encoding.PEM)
                for cert in (pki.issuing_certificate, pki.root_certificate)
            )
            self._send(200, body, "application/x-pem-file", log=path)
        elif name in _CA_FILES and extension in ("crt", "cer", "der"):
            # RFC 5280 §4.2.2.1: caIssuers over HTTP is a single DER certificate.
            body = _CA_FILES[name](pki).public_bytes(serialization.Encoding.DER)
            self._send(200, body, "application/pkix-cert", log=path)
        elif name in _CA_FILES and extension == "pem":
            body = _CA_FILES[name](pki).public_bytes(serialization.Encoding.PEM)
            self._send(200, body, "application/x-pem-file", log=path)
        else:
            self._send(404, b"not found\n", "text/plain", log=path)

    def _send(
        self, status: int, body: bytes, content_type: str, *, log: str, detail: str = ""
    ) -> None:
        # Counted before the body goes out, so a client that has its answer sees the count.
        self.server.count(ocsp_request=log.startswith("/ocsp"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # Revocations take effect at once here; a cached answer would hide them.
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        logger.info(
            "%s %s %s -> %d%s",
            self.client_address[0],
            self.command,
            log,
            status,
            f" {detail}" if detail else "",
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: `_send` logs one line per request with what was answered."""

    def log_message(self, format: str, *args: object) -> None:
        logger.warning("%s: %s", self.client_address[0], format % args)


class PkiServer:
    """A running PKI server (OCSP, CRL, CA certificates) on a daemon thread."""

    def __init__(self, httpd: _PkiHttpServer) -> None:
        self._httpd = httpd
        # A short poll interval makes close() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="careid-pki-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """`http://host:port` of the server (the real port when 0 was asked for)."""
        host, port = self._httpd.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://[{text}]:{port}" if ":" in text else f"http://{text}:{port}"

    @property
    def responder(self) -> OcspResponder:
        """The OCSP responder behind the server."""
        return self._httpd.responder

    @property
    def requests_served(self) -> int:
        """Requests answered so far, of every kind."""
        with self._httpd.counts_lock:
            return self._httpd.requests_served

    @property
    def ocsp_requests_served(self) -> int:
        """OCSP requests answered so far (POST and GET)."""
        with self._httpd.counts_lock:
            return self._httpd.ocsp_requests_served

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PkiServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_pki_server(
    pki_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 5080,
    *,
    clock: Clock = system_clock,
    response_validity: timedelta = DEFAULT_RESPONSE_VALIDITY,
    crl_next_update_hours: float = 24.0,
) -> PkiServer:
    """Serve the PKI at http://host:port (port 0: a free port) until `close()`."""
    check_crl_hours(crl_next_update_hours)
    responder = OcspResponder(pki_dir, clock=clock, response_validity=response_validity)
    httpd = _PkiHttpServer(
        (host, port),
        responder=responder,
        clock=clock,
        crl_next_update_hours=crl_next_update_hours,
    )
    server = PkiServer(httpd)
    logger.info("serving development PKI %s at %s", pki_dir, server.url)
    return server
