"""The card facade against the in-process virtual card: caching, APDU counts, PIN policy,
removal, and that the PIN is asked for outside any transaction and never logged."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging

import pytest
from agent_fakes import PIN, KeyAlgorithm, ReaderConnection, VirtualReader, make_test_profile
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding

from careid_agent.apdu import TRACE
from careid_agent.card import CardService, PinPolicy, PinRequest
from careid_agent.errors import (
    CardRemovedError,
    CertificateMalformedError,
    NoCardError,
    PinBlockedError,
    WrongPinError,
)
from careid_protocol.errors import ErrorCode
from careid_protocol.piv import Algorithm

DIGEST = hashlib.sha256(b"TBS").digest()


class Pins:
    """A PIN provider that records each request and checks no transaction is held."""

    def __init__(self, reader: VirtualReader, *answers: str | bytearray) -> None:
        self.reader = reader
        self.answers = list(answers) or [PIN]
        self.requests: list[PinRequest] = []
        self.given: list[str | bytearray] = []

    def __call__(self, request: PinRequest) -> str | bytearray:
        # Windows resets a card whose transaction idles for 5 s: never prompt inside one.
        assert not any(c.in_transaction for c in self.reader.connections)
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.given.append(answer)
        return answer


def _service(
    reader: VirtualReader, **options: object
) -> tuple[CardService, list[ReaderConnection]]:
    return CardService(reader.connect, **options), reader.connections  # type: ignore[arg-type]


def _reader(algorithm: KeyAlgorithm = KeyAlgorithm.P256) -> VirtualReader:
    reader = VirtualReader()
    reader.insert(make_test_profile(algorithm))
    return reader


def _ins(connection: ReaderConnection) -> list[int]:
    return [apdu[1] for apdu in connection.commands]


SELECT, GET_DATA, VERIFY, GA, GET_RESPONSE = 0xA4, 0xCB, 0x20, 0x87, 0xC0


def test_status_reads_the_card_once_per_insertion() -> None:
    reader = _reader()
    later: list[dt.datetime] = []
    service = CardService(
        reader.connect, clock=lambda: later[0] if later else dt.datetime.now(dt.UTC)
    )
    status = service.status()
    assert status.reader == "Virtual Test Reader 00"
    assert status.holder_name == "Alex Morgan"
    assert status.uuid == "555000000001"
    assert "Alex Morgan" in status.issuer  # self-signed test certificate
    assert status.algorithm is Algorithm.ECC_P256 and status.key_description == "ECC P-256"
    assert (status.pin_tries_left, status.pin_verified, status.pin_blocked) == (3, False, False)
    assert status.card_id is not None and len(status.card_id) == 36
    assert status.certificate_valid is True
    first = _ins(reader.connections[0])
    assert first[0] == SELECT and first.count(GET_DATA) == 2 and first[-1] == VERIFY
    later.append(status.not_after + dt.timedelta(seconds=1))
    assert service.status().certificate_valid is False  # the injected clock decides
    assert _ins(reader.connections[1]) == [SELECT, VERIFY]  # cached: 2 APDUs
    assert all(c.closed for c in reader.connections)
    assert status.to_json()["uuid"] == "555000000001"
    assert status.to_json()["notAfter"].endswith("Z")


def test_a_new_insertion_reads_the_card_again() -> None:
    reader = _reader()
    service = CardService(reader.connect)
    service.status()
    reader.remove()
    with pytest.raises(NoCardError):
        service.status()
    reader.insert(make_test_profile(KeyAlgorithm.P384, uuid="555000000002"))
    status = service.status()
    assert status.uuid == "555000000002" and status.algorithm is Algorithm.ECC_P384
    assert GET_DATA in _ins(reader.connections[-1])


@pytest.mark.parametrize(
    ("key_type", "hash_algorithm", "cached_apdus"),
    [
        (KeyAlgorithm.P256, hashes.SHA256(), [SELECT, VERIFY, GA]),
        (KeyAlgorithm.P384, hashes.SHA384(), [SELECT, VERIFY, GA]),
        # RSA: the 266-byte request is chained and the 264-byte answer needs GET RESPONSE.
        (KeyAlgorithm.RSA2048, hashes.SHA256(), [SELECT, VERIFY, GA, GA, GET_RESPONSE]),
    ],
)
def test_sign_fresh_then_cached(
    key_type: KeyAlgorithm, hash_algorithm: hashes.HashAlgorithm, cached_apdus: list[int]
) -> None:
    reader = _reader(key_type)
    service = CardService(reader.connect)
    pins = Pins(reader)
    digest = hashlib.new(hash_algorithm.name, b"TBS").digest()
    result = service.sign(digest, hash_algorithm, pins)
    fresh = _ins(reader.connections[0])
    assert fresh[0] == SELECT and GET_DATA in fresh and fresh[-len(cached_apdus) :] == cached_apdus
    key = result.identity.certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(result.signature, digest, ec.ECDSA(Prehashed(hash_algorithm)))
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(result.signature, b"TBS", padding.PKCS1v15(), hash_algorithm)
    assert result.identity.uuid == "555000000001" and result.reader == reader.name

    again = service.sign(digest, hash_algorithm, pins)
    assert _ins(reader.connections[1]) == cached_apdus
    assert again.identity is result.identity
    assert reader.connections[1].transactions == 1
    assert pins.requests[0] == PinRequest(
        reader=reader.name, holder_name="Alex Morgan", uuid="555000000001", retries_left=None
    )


def test_a_fresh_insertion_reads_then_signs_in_two_transactions() -> None:
    reader = _reader(KeyAlgorithm.P256)
    CardService(reader.connect).sign(DIGEST, hashes.SHA256(), Pins(reader))
    connection = reader.connections[0]
    # Certificate (in two pieces) and CHUID; then, after the PIN prompt, the sign-in.
    assert _ins(connection) == [SELECT, GET_DATA, GET_RESPONSE, GET_DATA, SELECT, VERIFY, GA]
    assert connection.transactions == 2 and connection.closed


def test_once_per_insertion_skips_the_pin_until_the_card_forgets_it() -> None:
    reader = _reader()
    service = CardService(reader.connect, pin_policy=PinPolicy.ONCE_PER_INSERTION)
    pins = Pins(reader)
    service.sign(DIGEST, hashes.SHA256(), pins)
    service.sign(DIGEST, hashes.SHA256(), pins)
    assert _ins(reader.connections[1]) == [SELECT, GA]  # 2 APDUs, no PIN
    assert len(pins.requests) == 1
    assert reader.card is not None
    reader.card.reset()  # another program reset the card: the PIN state is gone
    service.sign(DIGEST, hashes.SHA256(), pins)
    assert _ins(reader.connections[2]) == [SELECT, GA, SELECT, VERIFY, GA]
    assert len(pins.requests) == 2


def test_once_per_insertion_asks_again_for_another_site() -> None:
    reader = _reader()
    service = CardService(reader.connect, pin_policy=PinPolicy.ONCE_PER_INSERTION)
    pins = Pins(reader)

    def sign_for(site: str) -> None:
        service.sign_with(lambda _identity: (DIGEST, hashes.SHA256()), pins, requester=site)

    sign_for("https://sso.trust-a.nhs.uk")
    sign_for("https://sso.trust-a.nhs.uk")  # the same site: no PIN
    assert len(pins.requests) == 1
    sign_for("https://sso.trust-b.nhs.uk")  # another site: its own consent
    assert len(pins.requests) == 2
    assert pins.requests[1].requester == "https://sso.trust-b.nhs.uk"
    sign_for("https://sso.trust-a.nhs.uk")  # and the PIN now stands for the last one
    assert len(pins.requests) == 3


def test_every_sign_policy_asks_each_time() -> None:
    reader = _reader()
    service = CardService(reader.connect)
    pins = Pins(reader)
    for _ in range(3):
        service.sign(DIGEST, hashes.SHA256(), pins)
    assert len(pins.requests) == 3


def test_wrong_pin_then_blocked() -> None:
    reader = _reader()
    service = CardService(reader.connect)
    pins = Pins(reader, "111111", "222222", "333333", PIN)
    with pytest.raises(WrongPinError) as caught:
        service.sign(DIGEST, hashes.SHA256(), pins)
    assert caught.value.retries_left == 2
    with pytest.raises(WrongPinError):
        service.sign(DIGEST, hashes.SHA256(), pins)
    assert pins.requests[1].retries_left == 2  # the prompt can say how many are left
    with pytest.raises(PinBlockedError):
        service.sign(DIGEST, hashes.SHA256(), pins)
    with pytest.raises(PinBlockedError):
        service.sign(DIGEST, hashes.SHA256(), pins)  # refused before the right PIN is asked
    assert len(pins.requests) == 3
    status = service.status()
    assert status.pin_blocked and status.pin_tries_left == 0


def test_a_blocked_pin_is_refused_without_asking_for_it() -> None:
    reader = VirtualReader()
    applet = reader.insert(make_test_profile(KeyAlgorithm.P256))
    service = CardService(reader.connect)
    pins = Pins(reader, "111111", "222222", "333333")
    for _ in range(3):
        with pytest.raises((WrongPinError, PinBlockedError)):
            service.sign(DIGEST, hashes.SHA256(), pins)
    assert service.status().pin_blocked
    # No prompt (a PIN typed for nothing, a PIN pad waiting for one): refused at once.
    for _ in range(2):
        with pytest.raises(PinBlockedError):
            service.sign(DIGEST, hashes.SHA256(), pins)
    assert len(pins.requests) == 3
    # The Registration Authority unblocks the card while it stays in: asked again.
    puk = applet.profile.puk.encode().ljust(8, b"\xff") + PIN.encode().ljust(8, b"\xff")
    assert reader.card is not None
    assert reader.card.transmit(bytes([0x00, 0x2C, 0x00, 0x80, 16]) + puk)[1] == 0x9000
    service.sign(DIGEST, hashes.SHA256(), Pins(reader, PIN))


def test_removal_mid_operation() -> None:
    reader = _reader()
    pull_after: list[int] = []

    def connect(name: str | None = None) -> ReaderConnection:
        connection = reader.connect(name)
        if pull_after:
            connection.remove_after = pull_after.pop()
        return connection

    service = CardService(connect)
    service.status()  # the identity is cached: a sign-in is SELECT, VERIFY, GA
    pull_after.append(2)  # the card is pulled after SELECT and VERIFY
    with pytest.raises(CardRemovedError):
        service.sign(DIGEST, hashes.SHA256(), Pins(reader))
    assert _ins(reader.connections[-1]) == [SELECT, VERIFY]
    assert reader.connections[-1].closed


def test_removal_during_pin_entry() -> None:
    reader = _reader()
    service = CardService(reader.connect)

    def pull_the_card(request: PinRequest) -> str:
        reader.remove()
        return PIN

    with pytest.raises(CardRemovedError):
        service.sign(DIGEST, hashes.SHA256(), pull_the_card)
    assert reader.connections[-1].closed


def test_pin_entry_failure_sends_nothing_and_closes() -> None:
    reader = _reader()
    service = CardService(reader.connect)
    service.status()

    class Cancelled(Exception):
        pass

    def cancel(request: PinRequest) -> str:
        raise Cancelled

    with pytest.raises(Cancelled):
        service.sign(DIGEST, hashes.SHA256(), cancel)
    assert reader.connections[-1].commands == [] and reader.connections[-1].closed


def test_a_bytearray_pin_is_wiped_and_no_pin_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    reader = _reader()
    service = CardService(reader.connect)
    pin = bytearray(PIN.encode())
    with caplog.at_level(TRACE):
        service.sign(DIGEST, hashes.SHA256(), lambda request: pin)
    assert pin == bytearray(len(PIN))
    text = caplog.text.replace(" ", "").lower()
    assert PIN not in text and PIN.encode().hex() not in text
    assert "redacted" in caplog.text
    assert any(r.levelno == TRACE for r in caplog.records)
    assert logging.getLevelName(TRACE) == "TRACE"


def test_digest_length_is_checked_before_touching_the_card() -> None:
    reader = _reader()
    with pytest.raises(ValueError):
        CardService(reader.connect).sign(DIGEST[:20], hashes.SHA256(), Pins(reader))
    assert reader.connections == []


def test_forget_drops_the_cache() -> None:
    reader = _reader()
    service = CardService(reader.connect)
    identity = service.read_identity()
    assert _ins(reader.connections[0]).count(GET_DATA) == 2
    assert service.read_identity() is identity
    assert _ins(reader.connections[1]) == [SELECT]
    service.forget(identity.insertion_id)
    assert service.read_identity() == identity
    assert _ins(reader.connections[2]).count(GET_DATA) == 2


@pytest.mark.parametrize("operation", ["status", "read_identity", "sign"])
def test_a_certificate_with_a_bad_name_is_malformed_not_a_crash(operation: str) -> None:
    # DER that parses, with a name that does not: cryptography reads names only when
    # first asked, so the agent reads them at once and refuses the card with a code.
    profile = make_test_profile(KeyAlgorithm.P256, name="ZZZZZZZZ")
    good = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
    bad = good.public_bytes(Encoding.DER).replace(b"ZZZZZZZZ", b"\xff" * 8)
    assert x509.load_der_x509_certificate(bad)  # the structure is fine
    pem = x509.load_der_x509_certificate(bad).public_bytes(Encoding.PEM).decode()
    reader = VirtualReader()
    reader.insert(dataclasses.replace(profile, certificate_pem=pem))
    service, _ = _service(reader)
    act = {
        "status": service.status,
        "read_identity": service.read_identity,
        "sign": lambda: service.sign(DIGEST, hashes.SHA256(), Pins(reader)),
    }[operation]
    with pytest.raises(CertificateMalformedError) as raised:
        act()
    assert raised.value.code is ErrorCode.CERTIFICATE_MALFORMED
