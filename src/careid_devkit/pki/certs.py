"""Certificate builders for the development PKI (RFC 5280 profiles), pure: no files."""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from careid_devkit.codes import DevkitCode
from careid_devkit.pki.constants import (
    CA_ISSUERS_PATH,
    CARD_ORGANIZATION,
    CARD_ORGANIZATIONAL_UNIT,
    CRL_PATH,
    DEV_CARD_AUTH_POLICY_OID,
    DEV_POLICY_NOTICE,
    OCSP_PATH,
    ROOT_CRL_PATH,
)
from careid_devkit.pki.errors import PkiError
from careid_devkit.pki.keys import issuer_public_key, signature_hash


@dataclass(frozen=True, kw_only=True)
class PkiUrls:
    """Where relying parties fetch the CRL, ask OCSP and find the issuer certificate."""

    base_url: str

    @property
    def ocsp(self) -> str:
        return self.base_url + OCSP_PATH

    @property
    def crl(self) -> str:
        return self.base_url + CRL_PATH

    @property
    def root_crl(self) -> str:
        """The root CA's CRL, named by the issuing CA's certificate."""
        return self.base_url + ROOT_CRL_PATH

    @property
    def ca_issuers(self) -> str:
        return self.base_url + CA_ISSUERS_PATH


def normalise_base_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash, or `PkiError`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PkiError(
            DevkitCode.DEVKIT_INVALID_ARGUMENT,
            f"base URL {url!r} must look like http://127.0.0.1:5080",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise PkiError(
            DevkitCode.DEVKIT_INVALID_ARGUMENT,
            f"base URL {url!r} must not have a query, fragment or user name",
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _key_usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def crl_distribution_point(url: str) -> x509.CRLDistributionPoints:
    """One full-CRL distribution point at `url` (RFC 5280 §4.2.1.13)."""
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI naming `issuer`'s key, from its SKI when it has one (RFC 5280 §4.2.1.1)."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key(issuer))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_root_ca(
    *,
    key: CertificateIssuerPrivateKeyTypes,
    name: x509.Name,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A self-signed root: CA with pathLen 1 (one issuing CA below it)."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, signature_hash(key))
    )


def _subordinate(
    *,
    key_public: CertificatePublicKeyTypes,
    name: x509.Name,
    issuer: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """What every certificate our issuing chain signs for itself starts with: names,
    key, a random serial, validity, and the key identifiers path building needs."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject)
        .public_key(key_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key_public), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
    )


def build_issuing_ca(
    *,
    key_public: CertificatePublicKeyTypes,
    name: x509.Name,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    not_before: datetime,
    not_after: datetime,
    crl_url: str | None = None,
) -> x509.Certificate:
    """An intermediate CA that may sign end-entity certificates only (pathLen 0), naming
    its issuer's CRL at `crl_url` (None: no distribution point, as devkit PKIs made before
    the root published a CRL)."""
    builder = (
        _subordinate(
            key_public=key_public,
            name=name,
            issuer=issuer,
            not_before=not_before,
            not_after=not_after,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
    )
    if crl_url is not None:
        builder = builder.add_extension(crl_distribution_point(crl_url), critical=False)
    return builder.sign(issuer_key, signature_hash(issuer_key))


def build_ocsp_signer(
    *,
    key_public: CertificatePublicKeyTypes,
    name: x509.Name,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A delegated OCSP responder certificate (RFC 6960 §4.2.2.2)."""
    return (
        _subordinate(
            key_public=key_public,
            name=name,
            issuer=issuer,
            not_before=not_before,
            not_after=not_after,
        )
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        # id-pkix-ocsp-nocheck: clients need not ask about the responder's own status.
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .sign(issuer_key, signature_hash(issuer_key))
    )


@dataclass(frozen=True, kw_only=True)
class CardCertificateRequest:
    """What goes into a PIV Authentication certificate."""

    uuid: str
    name: str
    public_key: CertificatePublicKeyTypes
    card_guid: bytes
    serial: int
    not_before: datetime
    not_after: datetime
    client_auth: bool
    urls: PkiUrls


def card_subject(*, uuid: str, name: str) -> x509.Name:
    """`O=…, OU=…, CN=<name>, serialNumber=<Care Identity UUID>`."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CARD_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CARD_ORGANIZATIONAL_UNIT),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, uuid),
        ]
    )


def build_card_certificate(
    request: CardCertificateRequest,
    *,
    issuer_name: x509.Name,
    issuer_aki: x509.AuthorityKeyIdentifier,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate:
    """A PIV Authentication certificate in the FIPS 201 shape, for a Care Identity."""
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if request.client_auth else []
    if not usages:
        # A "wrong purpose" card: an S/MIME-only certificate must be refused for sign-in.
        usages = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    policy = x509.PolicyInformation(
        DEV_CARD_AUTH_POLICY_OID, [x509.UserNotice(None, DEV_POLICY_NOTICE)]
    )
    # FIPS 201-3 §4.2.2: the PIV Authentication certificate's SAN names the card by its
    # UUID (the CHUID GUID) as a urn:uuid URI; webpki-style verifiers also require a SAN.
    card_urn = uuid_module.UUID(bytes=request.card_guid).urn
    return (
        x509.CertificateBuilder()
        .subject_name(card_subject(uuid=request.uuid, name=request.name))
        .issuer_name(issuer_name)
        .public_key(request.public_key)
        .serial_number(request.serial)
        .not_valid_before(request.not_before)
        .not_valid_after(request.not_after)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.CertificatePolicies([policy]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(card_urn)]),
            critical=False,
        )
        .add_extension(crl_distribution_point(request.urls.crl), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(request.urls.ocsp),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(request.urls.ca_issuers),
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False
        )
        .add_extension(issuer_aki, critical=False)
        .sign(issuer_key, signature_hash(issuer_key))
    )
