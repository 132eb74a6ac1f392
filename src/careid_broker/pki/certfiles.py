"""Reading certificates and CRLs from files: PEM bundles, single DER files, folders."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

#: File names taken from a trust-anchor or intermediates folder; anything else there
#: (README files, keys, CRLs) is ignored rather than misread.
CERTIFICATE_SUFFIXES = (".pem", ".crt", ".cer", ".der")

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_CRL = b"-----BEGIN X509 CRL-----"


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, or the one in a DER file; ValueError if none."""
    if _PEM_CERTIFICATE in data:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ValueError(f"{source}: not a valid PEM certificate bundle ({exc})") from exc
    else:
        try:
            certificates = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise ValueError(f"{source}: holds no PEM or DER certificate") from exc
    for certificate in certificates:
        # Parsing is lazy: touch the extensions now so a damaged one is a load-time error.
        try:
            certificate.extensions  # noqa: B018
        except ValueError as exc:
            raise ValueError(f"{source}: a certificate has a malformed extension ({exc})") from exc
    return certificates


def load_certificate_paths(path: Path) -> list[tuple[Path, list[x509.Certificate]]]:
    """The certificates of a file, or of each certificate file in a folder (sorted).

    Raises OSError when the path cannot be read and ValueError when a file holds no
    certificate, naming the file.
    """
    if path.is_dir():
        files = sorted(
            child
            for child in path.iterdir()
            if child.is_file() and child.suffix.lower() in CERTIFICATE_SUFFIXES
        )
        if not files:
            raise ValueError(f"{path}: folder holds no {'/'.join(CERTIFICATE_SUFFIXES)} files")
    else:
        files = [path]
    return [(file, parse_certificates(file.read_bytes(), source=str(file))) for file in files]


def parse_crl(data: bytes, *, source: str) -> x509.CertificateRevocationList:
    """A CRL in DER (what distribution points serve) or PEM (what people keep in files)."""
    try:
        if _PEM_CRL in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        crl.extensions  # noqa: B018 - parsed lazily; fail here, not mid-lookup
    except ValueError as exc:
        raise ValueError(f"{source}: not a valid CRL ({exc})") from exc
    return crl
