"""The PKI server over real HTTP on 127.0.0.1: OCSP POST/GET, the CRL, CA certificates."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from pki_fixtures import (
    NOW,
    PIN,
    card_cert,
    nonce_of,
    ocsp_request_der,
    verify_ocsp_signature,
)

from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pki import Pki, init_pki
from support.clock import FakeClock

TIMEOUT = 5


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", now=NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW + timedelta(minutes=1))


@pytest.fixture
def server(pki: Pki, clock: FakeClock) -> Iterator[PkiServer]:
    with start_pki_server(pki.directory, "127.0.0.1", 0, clock=clock) as running:
        yield running


def _post(url: str, body: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(  # noqa: S310 - loopback http only
        url, data=body, headers={"Content-Type": "application/ocsp-request"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:  # noqa: S310 - loopback
        return reply.status, reply.headers["Content-Type"], reply.read()


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:  # noqa: S310 - loopback
        return reply.status, reply.headers["Content-Type"], reply.read()


def test_ocsp_post_good_then_revoked_live(pki: Pki, server: PkiServer) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    nonce = os.urandom(16)
    der = ocsp_request_der(cert, pki.issuing_certificate, nonce=nonce)
    status, content_type, body = _post(server.url + "/ocsp", der)
    assert (status, content_type) == (200, "application/ocsp-response")
    response = ocsp.load_der_ocsp_response(body)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert nonce_of(response) == nonce
    verify_ocsp_signature(response, response.certificates[0])
    assert response.certificates == [pki.ocsp_certificate]

    Pki.open(pki.directory).revoke(uuid="555000000001", reason="cessationOfOperation", now=NOW)
    response = ocsp.load_der_ocsp_response(_post(server.url + "/ocsp", der)[2])
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.cessation_of_operation
    assert server.ocsp_requests_served == 2


def test_ocsp_get_with_url_encoded_base64(pki: Pki, server: PkiServer) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p384", pin=PIN))
    der = ocsp_request_der(cert, pki.issuing_certificate, nonce=b"g" * 16)
    path = quote(base64.b64encode(der).decode(), safe="")
    status, content_type, body = _get(f"{server.url}/ocsp/{path}")
    assert (status, content_type) == (200, "application/ocsp-response")
    response = ocsp.load_der_ocsp_response(body)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert nonce_of(response) == b"g" * 16


def test_unknown_serial_over_http(pki: Pki, server: PkiServer, tmp_path: Path) -> None:
    other = init_pki(tmp_path / "other", now=NOW)
    foreign = card_cert(other.issue_card(uuid="555000000001", name="O", algorithm="p256", pin=PIN))
    der = ocsp_request_der(foreign, other.issuing_certificate)
    response = ocsp.load_der_ocsp_response(_post(server.url + "/ocsp", der)[2])
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


@pytest.mark.parametrize("how", ["post-junk", "get-junk", "get-not-base64"])
def test_malformed_requests_over_http(server: PkiServer, how: str) -> None:
    if how == "post-junk":
        status, content_type, body = _post(server.url + "/ocsp", b"\x30\x80junk")
    elif how == "get-junk":
        status, content_type, body = _get(server.url + "/ocsp/" + quote(base64.b64encode(b"x")))
    else:
        status, content_type, body = _get(server.url + "/ocsp/%25%25%25")
    assert (status, content_type) == (200, "application/ocsp-response")
    response = ocsp.load_der_ocsp_response(body)
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_crl_is_served_and_follows_revocations(
    pki: Pki, server: PkiServer, clock: FakeClock
) -> None:
    status, content_type, body = _get(server.url + "/crl/issuing-ca.crl")
    assert (status, content_type) == (200, "application/pkix-crl")
    first = x509.load_der_x509_crl(body)
    assert len(first) == 0
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    # Revoke, then put the old CRL file back: the server must notice and re-sign.
    old = pki.paths.crl_der.read_bytes()
    pki.revoke(uuid="555000000001", now=NOW)
    pki.paths.crl_der.write_bytes(old)
    clock.advance(timedelta(minutes=1))
    crl = x509.load_der_x509_crl(_get(server.url + "/crl/issuing-ca.crl")[2])
    assert [entry.serial_number for entry in crl] == [cert.serial_number]
    assert crl.is_signature_valid(pki.issuing_certificate.public_key())  # type: ignore[arg-type]
    assert crl.last_update_utc == clock.now
    pem = _get(server.url + "/crl/issuing-ca.crl.pem")[2]
    assert x509.load_pem_x509_crl(pem) == crl


def test_the_root_crl_is_served_and_follows_the_issuing_cas_revocation(
    pki: Pki, server: PkiServer, clock: FakeClock
) -> None:
    status, content_type, body = _get(server.url + "/crl/root-ca.crl")
    assert (status, content_type) == (200, "application/pkix-crl")
    assert len(x509.load_der_x509_crl(body)) == 0
    pki.revoke_issuing_ca(now=NOW)
    crl = x509.load_der_x509_crl(_get(server.url + "/crl/root-ca.crl")[2])
    assert [entry.serial_number for entry in crl] == [pki.issuing_certificate.serial_number]
    assert crl.issuer == pki.root_certificate.subject
    assert crl.is_signature_valid(pki.root_certificate.public_key())  # type: ignore[arg-type]
    pem = _get(server.url + "/crl/root-ca.crl.pem")[2]
    assert x509.load_pem_x509_crl(pem) == crl


def test_crl_is_resigned_when_next_update_is_near(
    pki: Pki, server: PkiServer, clock: FakeClock
) -> None:
    first = x509.load_der_x509_crl(_get(server.url + "/crl/issuing-ca.crl")[2])
    assert first.next_update_utc is not None
    clock.now = first.next_update_utc - timedelta(minutes=5)
    second = x509.load_der_x509_crl(_get(server.url + "/crl/issuing-ca.crl")[2])
    assert second.last_update_utc == clock.now
    assert second.next_update_utc == clock.now + timedelta(hours=24)


def test_ca_certificates_are_served(pki: Pki, server: PkiServer) -> None:
    status, content_type, body = _get(server.url + "/ca/issuing-ca.crt")
    assert (status, content_type) == (200, "application/pkix-cert")
    assert x509.load_der_x509_certificate(body) == pki.issuing_certificate
    assert x509.load_der_x509_certificate(_get(server.url + "/ca/root-ca.crt")[2]) == (
        pki.root_certificate
    )
    assert x509.load_pem_x509_certificate(_get(server.url + "/ca/ocsp-signer.pem")[2]) == (
        pki.ocsp_certificate
    )
    chain = x509.load_pem_x509_certificates(_get(server.url + "/ca/chain.pem")[2])
    assert chain == [pki.issuing_certificate, pki.root_certificate]
    assert pki.issuing_certificate.public_bytes(serialization.Encoding.DER) == body


@pytest.mark.parametrize("path", ["/", "/ca/root-ca.key", "/ca/nothing.crt", "/crl/other.crl"])
def test_unknown_paths_are_404(server: PkiServer, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        _get(server.url + path)
    assert caught.value.code == 404
    caught.value.close()


def test_post_elsewhere_and_oversized_bodies_are_refused(server: PkiServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        _post(server.url + "/crl/issuing-ca.crl", b"x")
    assert caught.value.code == 404
    caught.value.close()
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        connection.putrequest("POST", "/ocsp")
        connection.putheader("Content-Length", str(10**6))
        connection.endheaders()
        assert connection.getresponse().status == 413
    finally:
        connection.close()


def test_http_keep_alive_serves_several_ocsp_requests_on_one_connection(
    pki: Pki, server: PkiServer
) -> None:
    cert = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        for index in range(3):
            nonce = bytes([index]) * 16
            der = ocsp_request_der(cert, pki.issuing_certificate, nonce=nonce)
            connection.request(
                "POST", "/ocsp", body=der, headers={"Content-Type": "application/ocsp-request"}
            )
            reply = connection.getresponse()
            assert reply.status == 200
            assert nonce_of(ocsp.load_der_ocsp_response(reply.read())) == nonce
        # A refused request with a body closes the connection rather than misread it.
        connection.request("POST", "/nowhere", body=b"x" * 10)
        reply = connection.getresponse()
        assert reply.status == 404 and reply.getheader("Connection") == "close"
        reply.read()
    finally:
        connection.close()


def test_requests_are_counted_and_close_frees_the_port(pki: Pki, clock: FakeClock) -> None:
    server = start_pki_server(pki.directory, "127.0.0.1", 0, clock=clock)
    try:
        assert server.requests_served == 0
        _get(server.url + "/healthz")
        _get(server.url + "/ca/root-ca.crt")
        _post(server.url + "/ocsp", b"junk")
        assert (server.requests_served, server.ocsp_requests_served) == (3, 1)
        port = int(server.url.rsplit(":", 1)[1])
    finally:
        server.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
