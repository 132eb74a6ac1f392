"""Names, object identifiers, lifetimes and file names of the development PKI.

DEMO/TEST MATERIAL: nothing here may be trusted outside a development machine.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

#: The project's own private OID arc, made from a random UUID generated once
#: (bbe82c68-9691-4494-b597-4a511c6f6aa4) under the ITU-T/ISO `2.25` UUID arc (X.667), so
#: it can never collide with a real registered policy.
DEV_OID_ARC: Final = "2.25.249771148795309179980990607366946777764"
#: `.1` = certificate policies; `.1.1` = development card authentication. A broker that
#: requires this policy accepts only devkit cards; production config names the real one.
DEV_CARD_AUTH_POLICY_OID: Final = x509.ObjectIdentifier(f"{DEV_OID_ARC}.1.1")
DEV_POLICY_NOTICE: Final = "Care Identity development PKI: DEMO/TEST MATERIAL, never trust it."

ROOT_CA_COMMON_NAME: Final = "Care Identity Root CA (development)"
ISSUING_CA_COMMON_NAME: Final = "Care Identity Issuing CA (development)"
OCSP_SIGNER_COMMON_NAME: Final = "Care Identity OCSP Responder (development)"
CARD_ORGANIZATION: Final = "Care Identity Development PKI"
CARD_ORGANIZATIONAL_UNIT: Final = "DEMO TEST MATERIAL"

ROOT_CA_NAME: Final = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CA_COMMON_NAME)])
ISSUING_CA_NAME: Final = x509.Name(
    [x509.NameAttribute(NameOID.COMMON_NAME, ISSUING_CA_COMMON_NAME)]
)
OCSP_SIGNER_NAME: Final = x509.Name(
    [x509.NameAttribute(NameOID.COMMON_NAME, OCSP_SIGNER_COMMON_NAME)]
)

DEFAULT_BASE_URL: Final = "http://127.0.0.1:5080"

ROOT_CA_LIFETIME: Final = timedelta(days=20 * 365 + 5)
ISSUING_CA_LIFETIME: Final = timedelta(days=10 * 365 + 2)
#: RFC 6960 §4.2.2.2.1: a responder certificate with id-pkix-ocsp-nocheck cannot itself be
#: revoked, so it should be short-lived; two years keeps a demo PKI usable.
OCSP_SIGNER_LIFETIME: Final = timedelta(days=2 * 365)
CARD_LIFETIME: Final = timedelta(days=3 * 365)
#: CAs start a week in the past so that `--expired` cards (whose validity ended a day ago)
#: still lie inside their issuer's validity, as a real expired card would.
CA_BACKDATE: Final = timedelta(days=7)
#: Cards start a few minutes in the past to absorb clock skew between machines.
CARD_BACKDATE: Final = timedelta(minutes=5)

#: URL paths served by the OCSP responder / PKI server and written into certificates.
OCSP_PATH: Final = "/ocsp"
CRL_PATH: Final = "/crl/issuing-ca.crl"
#: The root CA's CRL: the distribution point in the issuing CA's certificate.
ROOT_CRL_PATH: Final = "/crl/root-ca.crl"
CA_ISSUERS_PATH: Final = "/ca/issuing-ca.crt"
