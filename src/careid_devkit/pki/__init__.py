"""The development PKI: root and issuing CAs, card certificates, CRLs, OCSP signer.

DEMO/TEST MATERIAL: keys are stored unencrypted and nothing here may be trusted outside
a development machine. `init_pki` creates a PKI folder; `Pki.open` loads one.
"""

from __future__ import annotations

from careid_devkit.pki.authority import DEFAULT_CRL_HOURS, Pki
from careid_devkit.pki.cards import REVOCATION_REASONS, expired_validity, not_yet_valid_validity
from careid_devkit.pki.certs import PkiUrls
from careid_devkit.pki.chuid import Chuid, ChuidError, ChuidTag, Fascn
from careid_devkit.pki.constants import (
    CARD_LIFETIME,
    DEFAULT_BASE_URL,
    DEV_CARD_AUTH_POLICY_OID,
    DEV_OID_ARC,
    ISSUING_CA_NAME,
    OCSP_SIGNER_NAME,
    ROOT_CA_NAME,
)
from careid_devkit.pki.create import init_pki
from careid_devkit.pki.errors import PkiError
from careid_devkit.pki.files import PkiPaths
from careid_devkit.pki.keys import load_certificate, load_issuer_key
from careid_devkit.pki.state import IssuedCertificate, PkiState, Revocation

__all__ = [
    "CARD_LIFETIME",
    "DEFAULT_BASE_URL",
    "DEFAULT_CRL_HOURS",
    "DEV_CARD_AUTH_POLICY_OID",
    "DEV_OID_ARC",
    "ISSUING_CA_NAME",
    "OCSP_SIGNER_NAME",
    "REVOCATION_REASONS",
    "ROOT_CA_NAME",
    "Chuid",
    "ChuidError",
    "ChuidTag",
    "Fascn",
    "IssuedCertificate",
    "Pki",
    "PkiError",
    "PkiPaths",
    "PkiState",
    "PkiUrls",
    "Revocation",
    "expired_validity",
    "init_pki",
    "load_certificate",
    "load_issuer_key",
    "not_yet_valid_validity",
]
