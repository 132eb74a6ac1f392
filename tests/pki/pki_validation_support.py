"""Helpers for the certificate-validation tests (imported by tests/pki modules).

`PkiEnv` is one development PKI with the devkit's real OCSP/CRL HTTP server on
127.0.0.1, sharing a settable clock with the validators under test.
"""

from __future__ import annotations

import itertools
import socket
import uuid as uuid_module
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from careid_broker.pki import CertificateValidator, HttpFetcher, PkiConfig, UrllibFetcher
from careid_broker.pki.sharing import PROCESS_ONLY, RevocationSharing
from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pki import DEV_CARD_AUTH_POLICY_OID, Pki, init_pki, load_issuer_key
from careid_devkit.pki.certs import build_issuing_ca
from support.clock import FakeClock

#: A fixed "now": the PKI is made at NOW and tests start a minute later.
NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)
START = NOW + timedelta(minutes=1)
PIN = "246810"
DEV_POLICY = DEV_CARD_AUTH_POLICY_OID.dotted_string

_uuids = itertools.count(1)


def next_uuid() -> str:
    """A fresh 12-digit Care Identity UUID, so tests never share (or revoke) a card."""
    return f"5551{next(_uuids):08d}"


@dataclass(kw_only=True)
class PkiEnv:
    """One PKI folder, its running HTTP server and the clock they share."""

    pki: Pki
    server: PkiServer
    clock: FakeClock
    work: Path
    _without_crl_point: tuple[Path, x509.Certificate] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def directory(self) -> Path:
        return self.pki.directory

    def issue(self, **kwargs: Any) -> x509.Certificate:
        """A card certificate from this PKI (defaults: fresh UUID, P-256, issued at NOW)."""
        kwargs.setdefault("uuid", next_uuid())
        kwargs.setdefault("name", "Alex Morgan")
        kwargs.setdefault("algorithm", "p256")
        kwargs.setdefault("pin", PIN)
        kwargs.setdefault("now", NOW)
        profile = self.pki.issue_card(**kwargs)
        return x509.load_pem_x509_certificate(profile.certificate_pem.encode("ascii"))

    def mapping(self, **overrides: Any) -> dict[str, Any]:
        """A `[pki]` table trusting this PKI; overrides replace keys (tables merged)."""
        data: dict[str, Any] = {
            "trust_anchors": ["root-ca.pem"],
            "intermediates": ["issuing-ca.pem"],
            "revocation": "ocsp",
            "ocsp": {"timeout_seconds": 2},
            "crl": {"timeout_seconds": 2},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return data

    def issuing_ca_without_crl_point(self) -> tuple[Path, x509.Certificate]:
        """The issuing CA's certificate as devkit PKIs made before the root published a
        CRL had it (the same name and key, no CRL distribution point), in a file; one
        per PKI, so that validators using it share CRLs (keyed by issuer certificate)."""
        if self._without_crl_point is not None:
            return self._without_crl_point
        issuing = self.pki.issuing_certificate
        old = build_issuing_ca(
            key_public=self.pki.issuing_key.public_key(),
            name=issuing.subject,
            issuer=self.pki.root_certificate,
            issuer_key=self.root_key(),
            not_before=issuing.not_valid_before_utc,
            not_after=issuing.not_valid_after_utc,
        )
        path = self.work / f"issuing-ca-without-cdp-{old.serial_number:X}.pem"
        path.write_bytes(old.public_bytes(serialization.Encoding.PEM))
        self._without_crl_point = (path, old)
        return path, old

    def card_crls_only(self) -> dict[str, Any]:
        """Overrides that chain cards through `issuing_ca_without_crl_point`: for tests of
        the card's own CRL, whose fetches and counts the root's CRL would otherwise join
        (the CA step has tests of its own: test_validation_ca_revocation.py)."""
        path, _ = self.issuing_ca_without_crl_point()
        return {"intermediates": [str(path)]}

    def root_key(self) -> CertificateIssuerPrivateKeyTypes:
        """The root CA's private key (DEMO/TEST MATERIAL, read from the PKI folder)."""
        return load_issuer_key(self.pki.paths.root_key.read_bytes(), source="root key")

    def config(self, **overrides: Any) -> PkiConfig:
        return PkiConfig.from_mapping(self.mapping(**overrides), base_dir=self.directory)

    def validator(
        self,
        *,
        http: HttpFetcher | None = None,
        sharing: RevocationSharing = PROCESS_ONLY,
        **overrides: Any,
    ) -> CertificateValidator:
        return CertificateValidator(
            self.config(**overrides),
            clock=self.clock,
            http=http if http is not None else UrllibFetcher(),
            sharing=sharing,
        )

    def craft(
        self,
        *,
        key_usage: x509.KeyUsage | None = None,
        eku: list[x509.ObjectIdentifier] | None = None,
        san: bool = True,
        subject: x509.Name | None = None,
        ocsp_url: bool = True,
        signer_key: CertificateIssuerPrivateKeyTypes | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        subject_key: CertificatePublicKeyTypes | None = None,
        crl_urls: Sequence[str] | None = None,
    ) -> x509.Certificate:
        """A card-like certificate signed by the issuing CA, with chosen extensions.

        Its CRL distribution point is the PKI's CRL unless `crl_urls` names others (one
        point each; none: no CRL distribution points extension).

        Not recorded in the PKI's state: OCSP answers "unknown" for it, the CRL does not
        list it — use `revocation = "crl"` to test the other checks on it.
        """
        issuer = self.pki.issuing_certificate
        key = subject_key or ec.generate_private_key(ec.SECP256R1()).public_key()
        uuid = next_uuid()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                subject
                if subject is not None
                else x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, "Crafted Card"),
                        x509.NameAttribute(NameOID.SERIAL_NUMBER, uuid),
                    ]
                )
            )
            .issuer_name(issuer.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - timedelta(minutes=5))
            .not_valid_after(not_after or NOW + timedelta(days=365))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.pki.issuing_key.public_key()
                ),
                critical=False,
            )
        )
        points = [self.pki.urls.crl] if crl_urls is None else crl_urls
        if points:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(url)], None, None, None
                        )
                        for url in points
                    ]
                ),
                critical=False,
            )
        builder = builder.add_extension(
            key_usage if key_usage is not None else key_usage_for(digital_signature=True),
            critical=True,
        )
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if san:
            urn = uuid_module.uuid4().urn
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(urn)]), critical=False
            )
        if ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(self.pki.urls.ocsp),
                        )
                    ]
                ),
                critical=False,
            )
        return builder.sign(signer_key or self.pki.issuing_key, hashes.SHA256())


@contextmanager
def served_pki(work: Path) -> Iterator[PkiEnv]:
    """A new PKI in `work`, whose certificates point at its own running server, and a
    clock at START that the server shares."""
    directory = work / "pki"
    clock = FakeClock(START)
    # The certificates must carry the server's URL, which is known only once it listens
    # on its free port: start it on a first PKI, then remake the PKI with that base URL.
    # The responder rereads the folder whenever ca.json changes, so it serves the new one.
    init_pki(directory, now=NOW)
    with start_pki_server(directory, "127.0.0.1", 0, clock=clock) as server:
        pki = init_pki(directory, base_url=server.url, now=NOW, force=True)
        yield PkiEnv(pki=pki, server=server, clock=clock, work=work)


def key_usage_for(
    *, digital_signature: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


class RecordingFetcher:
    """Forwards to a real fetcher (or a replacement per call) and records what was asked."""

    def __init__(
        self,
        inner: HttpFetcher | None = None,
        *,
        on_post: Callable[[str, bytes], bytes] | None = None,
        on_get: Callable[[str], bytes] | None = None,
    ) -> None:
        self.inner = inner if inner is not None else UrllibFetcher()
        self.on_post = on_post
        self.on_get = on_get
        self.posts: list[tuple[str, bytes]] = []
        self.gets: list[str] = []

    def post(self, url: str, body: bytes, content_type: str, timeout: float) -> bytes:
        assert content_type == "application/ocsp-request"
        self.posts.append((url, body))
        if self.on_post is not None:
            return self.on_post(url, body)
        return self.inner.post(url, body, content_type, timeout)

    def get(self, url: str, timeout: float) -> bytes:
        self.gets.append(url)
        if self.on_get is not None:
            return self.on_get(url)
        return self.inner.get(url, timeout)


def request_nonce(body: bytes) -> bytes | None:
    """The nonce in a DER OCSP request, if any."""
    request = ocsp.load_der_ocsp_request(body)
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def signed_crl(
    env: PkiEnv,
    *,
    root: bool = False,
    this_update: datetime = START,
    next_update: datetime | None = None,
    revoked: Sequence[int] = (),
    key: CertificateIssuerPrivateKeyTypes | None = None,
    extensions: Sequence[x509.ExtensionType] = (),
    pem: bool = False,
    issuer_name: x509.Name | None = None,
) -> bytes:
    """A CRL in the issuing CA's name (the root CA's with `root`), signed by that CA's
    key unless `key` is given, good a day from `this_update` unless `next_update` says."""
    issuer = env.pki.root_certificate if root else env.pki.issuing_certificate
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name or issuer.subject)
        .last_update(this_update)
        .next_update(next_update or this_update + timedelta(hours=24))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    signer = key or (env.root_key() if root else env.pki.issuing_key)
    crl = builder.sign(signer, hashes.SHA384() if root else hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@contextmanager
def silent_port() -> Iterator[str]:
    """A URL on 127.0.0.1 that accepts connections (the backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/ocsp"


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ocsp"
