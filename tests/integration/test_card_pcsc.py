"""The agent's card layer against the virtual card through the real PC/SC stack."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.hashes import HashAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from smartcard import scard

from careid_agent.card import CardIdentity, CardService
from careid_agent.errors import (
    CardRemovedError,
    NoCardError,
    PinBlockedError,
    ReaderBusyError,
    WrongPinError,
)
from careid_agent.transport import abandoned_pcsc_waits, connect
from careid_devkit.card_profile import CardProfile, KeyAlgorithm, load_profile
from careid_protocol.errors import ErrorCode
from careid_protocol.piv import Ins
from careid_protocol.token import (
    AuthToken,
    SignatureAlgorithm,
    algorithm_for_key,
    digest_to_sign,
    ecdsa_der_to_raw,
    verify_token,
)

from .conftest import PIN, READER, VPCD_PORT, inserted, wait_for_reader

pytestmark = pytest.mark.pcsc

ORIGIN = "https://broker.example.nhs.uk"
CHALLENGE = base64.urlsafe_b64encode(bytes(range(1, 33))).rstrip(b"=").decode()

IssueCard = Callable[..., tuple[CardProfile, Path]]


def _service() -> CardService:
    return CardService(lambda: connect(READER))


def _pin(value: str = PIN) -> Callable[[object], bytearray]:
    return lambda _request: bytearray(value.encode())


def _signed_token(service: CardService, pin: str = PIN) -> dict[str, str]:
    """What `/v1/authenticate` does, minus HTTP: sign the contract's digest."""
    algs: list[SignatureAlgorithm] = []

    def prepare(identity: CardIdentity) -> tuple[bytes, HashAlgorithm]:
        alg = algorithm_for_key(identity.certificate.public_key())
        algs.append(alg)
        return digest_to_sign(ORIGIN, CHALLENGE, alg), alg.hash()

    result = service.sign_with(prepare, _pin(pin))
    alg = algs[0]
    signature = result.signature
    if alg is not SignatureAlgorithm.RS256:
        signature = ecdsa_der_to_raw(signature, alg)
    return AuthToken(
        certificate=result.identity.certificate_der,
        algorithm=alg,
        signature=signature,
        agent_version="test",
    ).to_json()


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_status_and_signature_through_pcscd(
    pcsc: object, issue_card: IssueCard, algorithm: KeyAlgorithm
) -> None:
    profile, _ = issue_card(algorithm)
    with inserted(profile) as card:
        service = _service()
        status = service.status()
        assert status.reader == READER
        assert status.holder_name == "Alex Morgan"
        assert status.uuid == "555000000001"
        assert status.pin_tries_left == 3
        assert "Care Identity Issuing CA (development)" in status.issuer

        token = _signed_token(service)
        certificate = verify_token(token, ORIGIN, CHALLENGE)
        assert certificate.public_bytes(Encoding.PEM).decode() == profile.certificate_pem

        # The certificate was read once for this insertion: the next sign-in is only
        # SELECT + VERIFY + GENERAL AUTHENTICATE (RSA-2048 needs command and response
        # chaining for its 256-byte block, so two more).
        before = card.counters.commands
        verify_token(_signed_token(service), ORIGIN, CHALLENGE)
        expected = 5 if algorithm is KeyAlgorithm.RSA2048 else 3
        assert card.counters.commands - before == expected


def test_wrong_pin_counts_down_then_blocks_and_stays_blocked(
    pcsc: object, issue_card: IssueCard
) -> None:
    profile, path = issue_card()
    saved: list[CardProfile] = []
    with inserted(profile, on_counters_changed=saved.append):
        service = _service()
        for left in (2, 1):
            with pytest.raises(WrongPinError) as wrong:
                _signed_token(service, pin="999999")
            assert wrong.value.retries_left == left
            assert wrong.value.code is ErrorCode.WRONG_PIN
            assert f"{left} tr" in wrong.value.message
        with pytest.raises(PinBlockedError) as blocked:
            _signed_token(service, pin="999999")
        assert "Registration Authority" in blocked.value.message
        # The right PIN no longer helps.
        with pytest.raises(PinBlockedError):
            _signed_token(service)
        assert service.status().pin_blocked
    assert saved and saved[-1].pin_retries_left == 0


def test_blocked_pin_persists_across_reinsertion_by_the_cli(
    pcsc: object, issue_card: IssueCard, tmp_path: Path
) -> None:
    _, path = issue_card()
    cli = [sys.executable, "-m", "careid_devkit.cli"]

    def insert() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*cli, "card", "insert", str(path), "--vpcd-port", str(VPCD_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_reader(True, timeout=15)
        return proc

    def remove(proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()  # SIGTERM = the card leaves the reader
        assert proc.wait(timeout=10) == 0
        wait_for_reader(False)

    proc = insert()
    try:
        service = _service()
        for _ in range(3):
            with pytest.raises((WrongPinError, PinBlockedError)):
                _signed_token(service, pin="135791")
    finally:
        remove(proc)
    assert load_profile(path).pin_retries_left == 0

    proc = insert()
    try:
        service = _service()
        assert service.status().pin_blocked
        with pytest.raises(PinBlockedError):
            _signed_token(service, pin=PIN)
    finally:
        remove(proc)


def test_card_removed_while_signing(pcsc: object, issue_card: IssueCard) -> None:
    profile, _ = issue_card()

    def yank_on_sign(apdu: bytes) -> bool:
        return apdu[1] != Ins.GENERAL_AUTHENTICATE

    with inserted(profile, on_command=yank_on_sign):
        with pytest.raises(CardRemovedError) as removed:
            _signed_token(_service())
        assert removed.value.code is ErrorCode.CARD_REMOVED


@contextmanager
def _held_by_another_program(reader: str = READER) -> Iterator[None]:
    """A PC/SC transaction on the card through a handle of its own, as another
    program (a browser's PKCS#11 module, a second middleware) would hold one."""
    rv, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert rv == scard.SCARD_S_SUCCESS
    rv, handle, _protocol = scard.SCardConnect(
        context, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
    )
    assert rv == scard.SCARD_S_SUCCESS
    assert scard.SCardBeginTransaction(handle) == scard.SCARD_S_SUCCESS
    try:
        yield
    finally:
        scard.SCardEndTransaction(handle, scard.SCARD_LEAVE_CARD)
        scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
        scard.SCardReleaseContext(context)


def test_another_programs_transaction_is_waited_for_a_bounded_time(
    pcsc: object, issue_card: IssueCard
) -> None:
    """pcsc-lite's SCardBeginTransaction waits, uncancellably, for as long as another
    program holds the card. The agent gives up after its wait with `reader_busy`,
    leaves the abandoned wait to end by itself, and works again once the card is free."""
    profile, _ = issue_card()
    with inserted(profile):
        service = CardService(lambda: connect(READER, transaction_wait=0.5))
        with _held_by_another_program():
            started = time.monotonic()
            with pytest.raises(ReaderBusyError) as busy:
                service.status()
            waited = time.monotonic() - started
            assert busy.value.code is ErrorCode.READER_BUSY
            assert "another program" in busy.value.message
            assert 0.5 <= waited < 5
            # Still held: a second try is refused the same way, not stuck behind the
            # first one's abandoned wait.
            with pytest.raises(ReaderBusyError):
                service.status()
        # Taken by the other program after the agent has connected: the transaction
        # waits the same bounded time.
        connection = connect(READER, transaction_wait=0.5)
        with _held_by_another_program():
            started = time.monotonic()
            with pytest.raises(ReaderBusyError):
                connection.begin_transaction()
            assert 0.5 <= time.monotonic() - started < 5
            connection.close()  # the abandoned call's to do: returns at once
        # Released: the abandoned calls take the card, give it straight back and close.
        assert service.status().holder_name == "Alex Morgan"
        verify_token(_signed_token(service), ORIGIN, CHALLENGE)
        deadline = time.monotonic() + 5
        while abandoned_pcsc_waits() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert abandoned_pcsc_waits() == 0


def test_no_card(pcsc: object) -> None:
    with pytest.raises(NoCardError) as missing:
        _service().status()
    assert missing.value.code is ErrorCode.NO_CARD


def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "careid_agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_agent_cli_readers_and_status(pcsc: object, issue_card: IssueCard) -> None:
    profile, _ = issue_card(KeyAlgorithm.P384, uuid="555000000002", name="Sam Patel")
    result = _agent("status", "--reader", READER)
    assert result.returncode != 0
    assert "no_card" in result.stderr

    with inserted(profile):
        readers = _agent("readers")
        assert readers.returncode == 0, readers.stderr
        line = next(ln for ln in readers.stdout.splitlines() if READER in ln)
        assert "card" in line.lower()

        status = _agent("status", "--reader", READER, "--json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["uuid"] == "555000000002"
        assert data["holderName"] == "Sam Patel"
        assert data["pinTriesLeft"] == 3
        assert data["keyAlgorithm"].endswith("P-384")
