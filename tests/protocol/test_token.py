from __future__ import annotations

import base64
import datetime as dt
import hashlib
import warnings
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from careid_protocol.errors import ErrorCode
from careid_protocol.token import (
    FORMAT,
    AuthToken,
    ProtocolError,
    SignatureAlgorithm,
    algorithm_for_key,
    digest_to_sign,
    ecdsa_der_to_raw,
    is_valid_challenge,
    is_valid_origin,
    load_certificate,
    parse_token,
    to_be_signed,
    verify_token,
)
from support.damaged_certificates import unreadable_name, with_negative_serial, with_version

ORIGIN = "https://broker.example.nhs.uk"
CHALLENGE = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _key(alg: SignatureAlgorithm) -> PrivateKey:
    if alg is SignatureAlgorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg is SignatureAlgorithm.ES384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(key: PrivateKey) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Alex Morgan"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "555000000001"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _sign(key: PrivateKey, alg: SignatureAlgorithm, origin: str, challenge: str) -> bytes:
    """Sign as a card does: the private-key operation over H(TBS), prehashed."""
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    digest = digest_to_sign(origin, challenge, alg)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        der = key.sign(digest, ec.ECDSA(Prehashed(alg.hash())))
        return ecdsa_der_to_raw(der, alg)
    return key.sign(digest, padding.PKCS1v15(), Prehashed(alg.hash()))


def _token(
    alg: SignatureAlgorithm, origin: str = ORIGIN, challenge: str = CHALLENGE
) -> dict[str, str]:
    key = _key(alg)
    cert = _cert(key)
    from cryptography.hazmat.primitives.serialization import Encoding

    return AuthToken(
        certificate=cert.public_bytes(Encoding.DER),
        algorithm=alg,
        signature=_sign(key, alg, origin, challenge),
        agent_version="0.1.0",
    ).to_json()


def test_tbs_is_hash_of_origin_then_hash_of_challenge_text() -> None:
    # Independent computation with hashlib: the challenge is hashed as text.
    expected = (
        hashlib.sha384(ORIGIN.encode()).digest() + hashlib.sha384(CHALLENGE.encode()).digest()
    )
    assert to_be_signed(ORIGIN, CHALLENGE, SignatureAlgorithm.ES384) == expected
    assert len(to_be_signed(ORIGIN, CHALLENGE, SignatureAlgorithm.RS256)) == 64
    assert (
        digest_to_sign(ORIGIN, CHALLENGE, SignatureAlgorithm.ES256)
        == hashlib.sha256(
            hashlib.sha256(ORIGIN.encode()).digest() + hashlib.sha256(CHALLENGE.encode()).digest()
        ).digest()
    )


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_round_trip_each_algorithm(alg: SignatureAlgorithm) -> None:
    token = _token(alg)
    cert = verify_token(token, ORIGIN, CHALLENGE)
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "555000000001"
    if alg is not SignatureAlgorithm.RS256:
        assert len(base64.b64decode(token["signature"])) == (96 if alg.value == "ES384" else 64)


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_another_origin_or_challenge_fails(alg: SignatureAlgorithm) -> None:
    token = _token(alg)
    other = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    for origin, challenge in [("https://evil.example", CHALLENGE), (ORIGIN, other)]:
        with pytest.raises(ProtocolError) as err:
            verify_token(token, origin, challenge)
        assert err.value.code is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_a_signature_by_another_key_fails_with_a_valid_certificate(
    alg: SignatureAlgorithm,
) -> None:
    # A stolen certificate (public, sent with every sign-in) with a signature made by
    # the thief's own key of the same type: right origin, right challenge, right form.
    token = _token(alg)
    thief = _key(alg)
    token["signature"] = base64.b64encode(_sign(thief, alg, ORIGIN, CHALLENGE)).decode()
    with pytest.raises(ProtocolError) as err:
        verify_token(token, ORIGIN, CHALLENGE)
    assert err.value.code is ErrorCode.SIGNATURE_INVALID


def test_algorithm_must_match_key() -> None:
    token = _token(SignatureAlgorithm.ES256)
    token["algorithm"] = "ES384"
    with pytest.raises(ProtocolError) as err:
        verify_token(token, ORIGIN, CHALLENGE)
    assert err.value.code is ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"format": "careid-auth:1.1"}, ErrorCode.TOKEN_UNSUPPORTED_FORMAT),
        ({"format": "careid-auth:10"}, ErrorCode.TOKEN_UNSUPPORTED_FORMAT),
        ({"format": None}, ErrorCode.TOKEN_UNSUPPORTED_FORMAT),
        ({"algorithm": "none"}, ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM),
        ({"algorithm": "HS256"}, ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM),
        ({"extra": "x"}, ErrorCode.TOKEN_MALFORMED),
        ({"signature": "!!notbase64"}, ErrorCode.TOKEN_MALFORMED),
        ({"signature": ""}, ErrorCode.TOKEN_MALFORMED),
        ({"certificate": 12}, ErrorCode.TOKEN_MALFORMED),
        ({"certificate": "A" * 20000}, ErrorCode.TOKEN_MALFORMED),
        (
            {"certificate": base64.b64encode(b"not a cert").decode()},
            ErrorCode.CERTIFICATE_MALFORMED,
        ),
        ({"agentVersion": ""}, ErrorCode.TOKEN_MALFORMED),
        ({"agentVersion": "x\n"}, ErrorCode.TOKEN_MALFORMED),
    ],
)
def test_strict_format(change: dict[str, Any], code: ErrorCode) -> None:
    token: dict[str, Any] = dict(_token(SignatureAlgorithm.ES256))
    token.update(change)
    with pytest.raises(ProtocolError) as err:
        verify_token(token, ORIGIN, CHALLENGE)
    assert err.value.code is code


def test_missing_field_is_malformed() -> None:
    token = _token(SignatureAlgorithm.ES256)
    del token["agentVersion"]
    with pytest.raises(ProtocolError) as err:
        parse_token(token)
    assert err.value.code is ErrorCode.TOKEN_MALFORMED


def test_format_constant() -> None:
    assert FORMAT == "careid-auth:1"


@pytest.mark.parametrize(
    ("challenge", "ok"),
    [
        (CHALLENGE, True),
        (CHALLENGE[:-1], False),
        (CHALLENGE + "A", False),
        (CHALLENGE[:-1] + "=", False),
        (CHALLENGE[:-1] + "+", False),
        ("A" * 42 + "B", False),  # non-zero spare bits: not a canonical encoding
        (None, False),
        (43, False),
    ],
)
def test_challenge_validation(challenge: object, ok: bool) -> None:
    assert is_valid_challenge(challenge) is ok


@pytest.mark.parametrize(
    ("origin", "dev", "ok"),
    [
        ("https://broker.example.nhs.uk", False, True),
        ("https://broker.example.nhs.uk:8443", False, True),
        ("https://broker.example.nhs.uk/", False, False),
        ("https://broker.example.nhs.uk/login", False, False),
        ("https://user@broker.example.nhs.uk", False, False),
        ("https://BROKER.example.nhs.uk", False, False),
        ("http://broker.example.nhs.uk", False, False),
        ("http://localhost:5000", False, False),
        ("http://localhost:5000", True, True),
        ("http://127.0.0.1:5000", True, True),
        ("http://evil.example:5000", True, False),
        ("https://broker.example.nhs.uk:99999", False, False),
        ("null", False, False),
        ("", False, False),
        (" https://broker.example.nhs.uk", False, False),
    ],
)
def test_origin_validation(origin: str, dev: bool, ok: bool) -> None:
    assert is_valid_origin(origin, allow_dev_http=dev) is ok


def test_algorithm_for_small_rsa_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(ProtocolError):
        algorithm_for_key(key.public_key())


def _with_duplicate_extension(key: PrivateKey) -> bytes:
    """A certificate carrying one private extension twice (RFC 5280 §4.2 forbids it)."""
    first, second = (x509.ObjectIdentifier(f"1.3.6.1.4.1.99999.{n}") for n in (1, 2))
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alex Morgan")])
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.UnrecognizedExtension(first, b"\x05\x00"), critical=False)
        .add_extension(x509.UnrecognizedExtension(second, b"\x05\x00"), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )
    return der.replace(b"\x86\x8d\x1f\x02", b"\x86\x8d\x1f\x01")  # 99999.2 -> 99999.1


@pytest.mark.parametrize(
    "damage",
    [
        lambda der, key: unreadable_name(der, "issuer"),
        lambda der, key: unreadable_name(der, "subject"),
        lambda der, key: with_version(der, 3),  # "v4": no such version
        lambda der, key: with_version(der, 1),  # "v2": cryptography reads only v1 and v3
        lambda der, key: with_negative_serial(der),
        lambda der, key: _with_duplicate_extension(key),
    ],
    ids=["issuer", "subject", "v4", "v2", "negative-serial", "duplicate-extension"],
)
def test_a_certificate_that_cannot_be_fully_read_is_malformed(damage: Any) -> None:
    # Each loads, or nearly: cryptography finds the damage only when the field is read,
    # or raises something other than ValueError. Either way it is CERTIFICATE_MALFORMED
    # here, never an exception from whichever check touches the field first.
    key = _key(SignatureAlgorithm.ES256)
    der = damage(_cert(key).public_bytes(Encoding.DER), key)
    with pytest.raises(ProtocolError) as raised:
        load_certificate(der)
    assert raised.value.code is ErrorCode.CERTIFICATE_MALFORMED


def test_a_serial_that_is_not_positive_is_malformed_where_warnings_are_only_warnings() -> None:
    # The suite turns warnings into errors, and cryptography only warns about a serial
    # that is not positive: in production the serial check itself is what refuses it.
    key = _key(SignatureAlgorithm.ES256)
    der = with_negative_serial(_cert(key).public_bytes(Encoding.DER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ProtocolError) as raised:
            load_certificate(der)
    assert raised.value.code is ErrorCode.CERTIFICATE_MALFORMED
    assert "serial" in str(raised.value.detail)


def test_a_whole_certificate_loads() -> None:
    certificate = _cert(_key(SignatureAlgorithm.ES256))
    assert load_certificate(certificate.public_bytes(Encoding.DER)) == certificate
