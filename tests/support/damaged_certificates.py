"""Certificates that load but cannot be fully read: DER edited in place.

cryptography reads a certificate's outer structure when it loads it, but its names only
when they are first asked for, so these load cleanly and fail later. Each helper checks
that its edit did what it says, so a test cannot pass for some other reason. The
signature no longer matches: nothing that reads these should get as far as the chain.
"""

from __future__ import annotations

from typing import Literal

from cryptography import x509

_UTF8_STRING = 0x0C
_VERSION_V3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2


def unreadable_name(der: bytes, field: Literal["issuer", "subject"]) -> bytes:
    """`der` with a UTF8String value in its issuer or subject made bytes that are not
    UTF-8 (cryptography checks other string types when it loads the certificate, but
    decodes UTF8Strings only when the name is first read)."""
    certificate = x509.load_der_x509_certificate(der)
    issuer = certificate.issuer.public_bytes()
    start = der.index(issuer)
    if field == "subject":  # after the issuer: they may be the same name
        start = der.index(certificate.subject.public_bytes(), start + len(issuer))
    name = getattr(certificate, field)
    end = start + len(name.public_bytes())
    for attribute in name:
        value = str(attribute.value).encode()
        at = der.find(bytes([_UTF8_STRING, len(value)]) + value, start, end)
        if at >= 0:
            break
    else:
        raise AssertionError(f"no short UTF8String in the {field}")
    damaged = der[: at + 2] + b"\xff" * len(value) + der[at + 2 + len(value) :]
    loaded = x509.load_der_x509_certificate(damaged)
    try:
        getattr(loaded, field)
    except ValueError:
        return damaged
    raise AssertionError(f"the {field} still decodes")


def with_version(der: bytes, version: int) -> bytes:
    """`der` with its version field set to `version` (v3 is 2 on the wire)."""
    at = der.index(_VERSION_V3)
    assert at < 12, "the version is not where a v3 TBSCertificate keeps it"
    return der[:at] + _VERSION_V3[:-1] + bytes([version]) + der[at + len(_VERSION_V3) :]


def with_negative_serial(der: bytes) -> bytes:
    """`der` with its serial number's top bit set: negative, which RFC 5280 §4.1.2.2
    forbids."""
    at = der.index(_VERSION_V3) + len(_VERSION_V3)
    assert der[at] == 0x02 and der[at + 1] < 0x80, "no short serial number after the version"
    first = at + 2
    return der[:first] + bytes([der[first] | 0x80]) + der[first + 1 :]
