"""LDAPS and StartTLS against a real slapd: the chain and the host name are checked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from directory_support import NOW, make_directory

from careid_broker.errors import DirectoryUnavailableError
from careid_devkit.slapd import DEMO_USER_PASSWORD, Slapd, SlapdTls

pytestmark = pytest.mark.slapd

ALEX = "alex.morgan@nhs.net"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(folder: Path, label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Test directory CA {label}"))
        .issuer_name(_name(f"Test directory CA {label}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650 * 3))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = folder / f"ca-{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlapdTls, Path, Path]:
    """A server certificate for "localhost" only (no IP address), its CA, and another CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert, ca_path = _ca(folder, "trusted")
    _, _, other_ca_path = _ca(folder, "other")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650 * 3))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SlapdTls(cert_file=cert_path, key_file=key_path), ca_path, other_ca_path


@pytest.fixture(scope="module")
def tls_slapd(
    slapd_factory: Callable[..., Slapd], tls_material: tuple[SlapdTls, Path, Path]
) -> Slapd:
    return slapd_factory(tls=tls_material[0])


def test_ldaps_with_the_right_ca(
    tls_slapd: Slapd, tls_material: tuple[SlapdTls, Path, Path]
) -> None:
    directory = make_directory(
        tls_slapd,
        urls=[f"ldaps://localhost:{tls_slapd.tls_port}"],
        use_tls="ldaps",
        ca_file=str(tls_material[1]),
    )
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX


def test_starttls_with_the_right_ca(
    tls_slapd: Slapd, tls_material: tuple[SlapdTls, Path, Path]
) -> None:
    directory = make_directory(
        tls_slapd,
        urls=[f"ldap://localhost:{tls_slapd.port}"],
        use_tls="starttls",
        ca_file=str(tls_material[1]),
    )
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_an_untrusted_certificate_is_refused(
    tls_slapd: Slapd, tls_material: tuple[SlapdTls, Path, Path], mode: str
) -> None:
    port = tls_slapd.tls_port if mode == "ldaps" else tls_slapd.port
    scheme = "ldaps" if mode == "ldaps" else "ldap"
    directory = make_directory(
        tls_slapd,
        urls=[f"{scheme}://localhost:{port}"],
        use_tls=mode,
        ca_file=str(tls_material[2]),
    )
    with pytest.raises(DirectoryUnavailableError) as caught:
        directory.find_account(ALEX)
    assert "CERTIFICATE_VERIFY_FAILED" in (caught.value.detail or "")


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_a_certificate_for_another_host_is_refused(
    tls_slapd: Slapd, tls_material: tuple[SlapdTls, Path, Path], mode: str
) -> None:
    # The certificate names "localhost"; 127.0.0.1 is the same machine but not that name.
    port = tls_slapd.tls_port if mode == "ldaps" else tls_slapd.port
    scheme = "ldaps" if mode == "ldaps" else "ldap"
    directory = make_directory(
        tls_slapd,
        urls=[f"{scheme}://127.0.0.1:{port}"],
        use_tls=mode,
        ca_file=str(tls_material[1]),
    )
    with pytest.raises(DirectoryUnavailableError) as caught:
        directory.find_account(ALEX)
    assert "CERTIFICATE_VERIFY_FAILED" in (caught.value.detail or "")
