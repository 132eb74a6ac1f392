"""Revocation and the issuing CA's CRL (RFC 5280 §5)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki_fixtures import NOW, PIN, card_cert

from careid_devkit.codes import DevkitCode
from careid_devkit.pki import Pki, PkiError, init_pki
from careid_protocol.errors import ErrorCode


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", now=NOW)


def _crl_on_disk(pki: Pki) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(pki.paths.crl_der.read_bytes())


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def test_init_publishes_an_empty_signed_crl(pki: Pki) -> None:
    crl = _crl_on_disk(pki)
    assert len(crl) == 0
    assert _number(crl) == 1
    assert crl.issuer == pki.issuing_certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + timedelta(hours=24)
    assert crl.is_signature_valid(pki.issuing_certificate.public_key())  # type: ignore[arg-type]


def test_revoke_one_uuid_lists_all_its_certificates_with_reason(pki: Pki) -> None:
    first = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    second = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p384", pin=PIN))
    bystander = card_cert(pki.issue_card(uuid="555000000002", name="B", algorithm="p256", pin=PIN))
    when = NOW + timedelta(hours=3)
    revoked = pki.revoke(uuid="555000000001", reason="keyCompromise", now=when, next_update_hours=6)
    assert {r.serial for r in revoked} == {first.serial_number, second.serial_number}

    crl = _crl_on_disk(pki)
    assert _number(crl) == 2
    assert crl.last_update_utc == when
    assert crl.next_update_utc == when + timedelta(hours=6)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.issuing_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.value.digest
    entries = {entry.serial_number: entry for entry in crl}
    assert set(entries) == {first.serial_number, second.serial_number}
    assert bystander.serial_number not in entries
    for entry in entries.values():
        assert entry.revocation_date_utc == when
        assert _reason(entry) is x509.ReasonFlags.key_compromise
    assert crl.is_signature_valid(pki.issuing_certificate.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(pki.root_certificate.public_key())  # type: ignore[arg-type]
    pem = x509.load_pem_x509_crl(pki.paths.crl_pem.read_bytes())
    assert pem.public_bytes(serialization.Encoding.DER) == pki.paths.crl_der.read_bytes()


def test_revoke_one_serial_and_unspecified_reason_is_omitted(pki: Pki) -> None:
    keep = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    drop = card_cert(pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN))
    (revocation,) = pki.revoke(uuid="555000000001", serial=drop.serial_number, now=NOW)
    assert revocation.reason is x509.ReasonFlags.unspecified
    (entry,) = list(_crl_on_disk(pki))
    assert entry.serial_number == drop.serial_number
    assert _reason(entry) is None  # RFC 5280 §5.3.1: unspecified is written by omission
    assert pki.state().revocation_of(keep.serial_number) is None


def test_revoking_again_changes_nothing_but_the_crl_number(pki: Pki) -> None:
    pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN)
    first = pki.revoke(uuid="555000000001", reason="superseded", now=NOW)
    again = pki.revoke(uuid="555000000001", reason="keyCompromise", now=NOW + timedelta(hours=1))
    assert len(first) == 1 and again == ()
    (entry,) = list(_crl_on_disk(pki))
    assert _reason(entry) is x509.ReasonFlags.superseded
    assert entry.revocation_date_utc == NOW
    assert _number(_crl_on_disk(pki)) == 3


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"uuid": "555000000099"}, DevkitCode.DEVKIT_CARD_NOT_FOUND),
        ({"uuid": "555000000001", "serial": 12345}, DevkitCode.DEVKIT_CARD_NOT_FOUND),
        ({"uuid": "5550000001"}, DevkitCode.DEVKIT_INVALID_ARGUMENT),
        ({"uuid": "555000000001", "reason": "removeFromCRL"}, DevkitCode.DEVKIT_INVALID_ARGUMENT),
        ({"uuid": "555000000001", "reason": "lostIt"}, DevkitCode.DEVKIT_INVALID_ARGUMENT),
    ],
)
def test_revoke_refusals(pki: Pki, kwargs: dict[str, object], code: ErrorCode) -> None:
    pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN)
    with pytest.raises(PkiError) as caught:
        pki.revoke(**kwargs)  # type: ignore[arg-type]
    assert caught.value.code is code
    assert pki.state().revocations == ()


def test_write_crl_increments_the_number_and_refuses_a_past_next_update(pki: Pki) -> None:
    crl = pki.write_crl(next_update_hours=48, now=NOW + timedelta(minutes=1))
    assert _number(crl) == 2
    assert crl.next_update_utc == NOW + timedelta(minutes=1, hours=48)
    assert _number(_crl_on_disk(pki)) == 2
    for hours in (0, -1, float("nan"), float("inf"), 400 * 24):
        with pytest.raises(PkiError) as caught:
            pki.write_crl(next_update_hours=hours)
        assert caught.value.code is DevkitCode.DEVKIT_INVALID_ARGUMENT
    assert _number(_crl_on_disk(pki)) == 2


def test_revoke_with_a_bad_crl_lifetime_writes_nothing(pki: Pki) -> None:
    pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN)
    with pytest.raises(PkiError):
        pki.revoke(uuid="555000000001", next_update_hours=0)
    assert pki.state().revocations == ()
    assert len(_crl_on_disk(pki)) == 0


def test_current_crl_is_reused_while_fresh_and_remade_when_needed(pki: Pki) -> None:
    fresh = pki.current_crl(now=NOW + timedelta(hours=1))
    assert _number(fresh) == 1  # still the one init wrote
    near_expiry = pki.current_crl(now=NOW + timedelta(hours=23, minutes=30))
    assert _number(near_expiry) == 2
    assert near_expiry.last_update_utc == NOW + timedelta(hours=23, minutes=30)

    # A CRL on disk that lags behind the state (revocation written, CRL file stale).
    pki.issue_card(uuid="555000000001", name="A", algorithm="p256", pin=PIN)
    stale = pki.paths.crl_der.read_bytes()
    pki.revoke(uuid="555000000001", now=NOW + timedelta(hours=24))
    pki.paths.crl_der.write_bytes(stale)
    current = pki.current_crl(now=NOW + timedelta(hours=24, minutes=1))
    assert len(current) == 1
    assert pki.paths.crl_der.read_bytes() == current.public_bytes(serialization.Encoding.DER)

    # A CRL signed by some other key is replaced, never served.
    other = init_pki(pki.directory.parent / "other", now=NOW)
    pki.paths.crl_der.write_bytes(other.paths.crl_der.read_bytes())
    replaced = pki.current_crl(now=NOW + timedelta(hours=24, minutes=2))
    assert replaced.is_signature_valid(pki.issuing_certificate.public_key())  # type: ignore[arg-type]
