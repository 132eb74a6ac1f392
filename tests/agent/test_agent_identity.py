"""The Care Identity UUID rule (`careid_protocol.identity`), shared by agent and broker."""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from careid_protocol.identity import (
    DEFAULT_RULE,
    IdentityRule,
    holder_name,
    uuid_from_certificate,
)


@functools.cache
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(_key().public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(_key(), hashes.SHA256())
    )


CN, SERIAL, UID = NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER, NameOID.USER_ID


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (((CN, "Alex Morgan"), (SERIAL, "555000000001")), "555000000001"),
        # serialNumber first, even when CN also holds a UUID.
        (((CN, "555000000002"), (SERIAL, "555000000001")), "555000000001"),
        # serialNumber present but not a UUID: CN is tried next.
        (((CN, "555000000002"), (SERIAL, "ABC")), "555000000002"),
        (((CN, "Alex Morgan"),), None),
        (((CN, "Alex Morgan"), (SERIAL, "55500000000")), None),  # 11 digits
        (((CN, "Alex Morgan"), (SERIAL, "5550000000011")), None),  # 13 digits
        # `$` alone would accept a trailing newline; the rule matches the whole value.
        (((CN, "555000000001\n"),), None),
        (((SERIAL, "555000000001"), (SERIAL, "555000000001")), "555000000001"),
        # Two different UUIDs in one attribute: ambiguous, so no identity at all.
        (((SERIAL, "555000000001"), (SERIAL, "555000000009"), (CN, "555000000002")), None),
    ],
)
def test_default_rule(
    attributes: tuple[tuple[x509.ObjectIdentifier, str], ...], expected: str | None
) -> None:
    assert uuid_from_certificate(_cert(*attributes)) == expected
    assert uuid_from_certificate(_cert(*attributes), DEFAULT_RULE) == expected


def test_configured_rule_from_names_and_oids() -> None:
    cert = _cert((CN, "Alex Morgan"), (UID, "nhs-1234"), (SERIAL, "555000000001"))
    by_name = IdentityRule.from_config(["UID"], r"nhs-[0-9]{4}")
    by_oid = IdentityRule.from_config(["0.9.2342.19200300.100.1.1"], r"nhs-[0-9]{4}")
    assert uuid_from_certificate(cert, by_name) == "nhs-1234"
    assert by_oid == by_name
    assert IdentityRule.from_config() == DEFAULT_RULE
    only_cn = IdentityRule.from_config(["CN"])
    assert uuid_from_certificate(cert, only_cn) is None


@pytest.mark.parametrize(
    ("attributes", "pattern"), [(["nonsense"], None), ([], None), (["CN"], "([0-9")]
)
def test_invalid_rules_are_refused(attributes: list[str], pattern: str | None) -> None:
    with pytest.raises(ValueError):
        IdentityRule.from_config(attributes, pattern)


def test_holder_name_is_the_cn_else_the_subject() -> None:
    assert holder_name(_cert((CN, " Alex Morgan "), (SERIAL, "555000000001"))) == "Alex Morgan"
    no_cn = _cert((NameOID.ORGANIZATION_NAME, "NHS"), (SERIAL, "555000000001"))
    assert holder_name(no_cn) == "2.5.4.5=555000000001,O=NHS"
