"""`init_pki`: a new development PKI (root CA, issuing CA, OCSP signer) in a folder."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from careid_devkit.codes import DevkitCode
from careid_devkit.pki.authority import DEFAULT_CRL_HOURS, Pki, now_utc, write_cert, write_key
from careid_devkit.pki.certs import (
    PkiUrls,
    build_issuing_ca,
    build_ocsp_signer,
    build_root_ca,
    normalise_base_url,
)
from careid_devkit.pki.constants import (
    CA_BACKDATE,
    CARD_BACKDATE,
    DEFAULT_BASE_URL,
    ISSUING_CA_LIFETIME,
    ISSUING_CA_NAME,
    OCSP_SIGNER_LIFETIME,
    OCSP_SIGNER_NAME,
    ROOT_CA_LIFETIME,
    ROOT_CA_NAME,
)
from careid_devkit.pki.errors import PkiError
from careid_devkit.pki.files import README_TEXT, PkiPaths, locked, pem_with_header, write_atomic
from careid_devkit.pki.state import PkiState, save_state

logger = logging.getLogger(__name__)

_PEM = serialization.Encoding.PEM


def init_pki(
    directory: Path | str,
    *,
    base_url: str = DEFAULT_BASE_URL,
    now: datetime | None = None,
    force: bool = False,
) -> Pki:
    """Create a root CA, an issuing CA and an OCSP signer in `directory`, and both CAs'
    first CRLs."""
    paths = PkiPaths(directory=Path(directory))
    base_url = normalise_base_url(base_url)
    if paths.directory.exists() and not paths.directory.is_dir():
        raise PkiError(DevkitCode.DEVKIT_INVALID_ARGUMENT, f"{paths.directory} is not a folder")
    if not force and (paths.state.exists() or paths.root_key.exists()):
        raise PkiError(DevkitCode.DEVKIT_PKI_EXISTS, f"{paths.directory} already holds a PKI")
    moment = now_utc(now)
    ca_start = moment - CA_BACKDATE
    root_key = ec.generate_private_key(ec.SECP384R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    ocsp_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(
        key=root_key, name=ROOT_CA_NAME, not_before=ca_start, not_after=moment + ROOT_CA_LIFETIME
    )
    issuing = build_issuing_ca(
        key_public=issuing_key.public_key(),
        name=ISSUING_CA_NAME,
        issuer=root,
        issuer_key=root_key,
        not_before=ca_start,
        not_after=moment + ISSUING_CA_LIFETIME,
        crl_url=PkiUrls(base_url=base_url).root_crl,
    )
    ocsp_signer = build_ocsp_signer(
        key_public=ocsp_key.public_key(),
        name=OCSP_SIGNER_NAME,
        issuer=issuing,
        issuer_key=issuing_key,
        not_before=moment - CARD_BACKDATE,
        not_after=moment + OCSP_SIGNER_LIFETIME,
    )
    paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(paths):
        paths.crl_directory.mkdir(exist_ok=True)
        paths.issued_directory.mkdir(exist_ok=True)
        # --force: what the old PKI issued is meaningless under the new keys.
        for old in (
            *paths.issued_directory.glob("*.pem"),
            paths.crl_der,
            paths.crl_pem,
            paths.root_crl_der,
            paths.root_crl_pem,
        ):
            old.unlink(missing_ok=True)
        write_atomic(paths.readme, README_TEXT.encode("ascii"))
        write_key(paths.root_key, root_key, "root CA private key")
        write_key(paths.issuing_key, issuing_key, "issuing CA private key")
        write_key(paths.ocsp_key, ocsp_key, "OCSP signer private key")
        write_cert(paths.root_certificate, root, "root CA certificate")
        write_cert(paths.issuing_certificate, issuing, "issuing CA certificate")
        write_cert(paths.ocsp_certificate, ocsp_signer, "OCSP signer certificate")
        chain = issuing.public_bytes(_PEM) + root.public_bytes(_PEM)
        write_atomic(paths.chain, pem_with_header(chain, "issuing CA then root CA"))
        state = PkiState(
            base_url=base_url, created_at=moment, ocsp_signer_serial=ocsp_signer.serial_number
        )
        save_state(paths, state)
    pki = Pki.open(paths.directory)
    # CRLs from the start, so the distribution points in every card and in the issuing
    # CA's certificate resolve at once.
    pki.write_crl(now=moment, next_update_hours=DEFAULT_CRL_HOURS)
    pki.write_root_crl(now=moment, next_update_hours=DEFAULT_CRL_HOURS)
    logger.info("created development PKI in %s (base URL %s)", paths.directory, base_url)
    return pki
