"""`CardSignin` against in-process fakes: the order of the checks (the challenge is burned
before anything slow; nothing slow runs for a malformed token) and what each refusal
tells the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from card_support import ALEX, ISSUER, CardPki, SimulatedAgent
from cryptography import x509

from careid_broker.card.service import CardRefusal, CardSignin
from careid_broker.errors import CertificateRevokedError
from careid_broker.pki import CertificateValidator, PkiConfig, TrustedCertificate, UrllibFetcher
from careid_broker.store import (
    AuthorizationRequest,
    CardChallenges,
    ChallengeOutcome,
    LoginTransactions,
    Registrations,
    Store,
    create_store,
    upgrade,
)
from careid_protocol.errors import ErrorCode
from careid_protocol.identity import IdentityRule


@dataclass
class RecordingValidator:
    """Wraps the real validator; records calls and whether the challenge was still live."""

    real: CertificateValidator
    challenges: CardChallenges
    calls: list[str] = field(default_factory=list)
    challenge: str = ""
    transaction: str = ""
    fail_with: Exception | None = None

    def trust(self, certificate: bytes | x509.Certificate) -> TrustedCertificate:
        # By now the challenge must be used up: a second consume must say so.
        outcome = self.challenges.consume(self.challenge, self.transaction)
        self.calls.append(outcome.value)
        if self.fail_with is not None:
            raise self.fail_with
        return self.real.trust(certificate)


class NoDirectory:
    """`verify` never needs the directory; `decide` is tested through the app."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the directory was used ({name})")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    created = create_store(url)
    yield created
    created.dispose()


@pytest.fixture
def parts(store: Store, card_pki: CardPki) -> tuple[CardSignin, RecordingValidator, str]:
    transactions = LoginTransactions(store)
    challenges = CardChallenges(store, transactions=transactions)
    config = PkiConfig.from_mapping(card_pki.pki_settings(), base_dir=Path("/"))
    real = CertificateValidator(config, clock=store.now, http=UrllibFetcher())
    validator = RecordingValidator(real=real, challenges=challenges)
    transaction = transactions.create(
        AuthorizationRequest(client_id="rp", redirect_uri="https://rp/cb", scope="openid")
    )
    validator.transaction = transaction.transaction_id
    signin = CardSignin(
        origin=ISSUER,
        challenges=challenges,
        validator=validator,
        registrations=Registrations(store),
        directory=NoDirectory(),  # type: ignore[arg-type]
    )
    return signin, validator, transaction.transaction_id


def _issue(signin: CardSignin, validator: RecordingValidator, tx: str) -> str:
    issued = signin._challenges.issue(tx)  # the service's own repository
    assert issued is not None
    validator.challenge = issued.challenge
    return issued.challenge


def test_the_challenge_is_burned_before_the_certificate_is_checked(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    signin, validator, tx = parts
    agent = card_pki.agent("alex")
    challenge = _issue(signin, validator, tx)
    card = signin.verify(agent.sign(challenge), challenge=challenge, transaction_id=tx)
    assert validator.calls == [ChallengeOutcome.USED.value]
    assert card.uuid == ALEX[1] and card.facts.validated
    assert card.facts.revocation == "ocsp" and card.facts.cert_serial == agent.serial_hex


def test_a_malformed_token_costs_no_challenge_and_no_validation(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    signin, validator, tx = parts
    challenge = _issue(signin, validator, tx)
    token = {**card_pki.agent("alex").sign(challenge), "format": "careid-auth:9"}
    with pytest.raises(CardRefusal) as raised:
        signin.verify(token, challenge=challenge, transaction_id=tx)
    assert raised.value.code is ErrorCode.TOKEN_UNSUPPORTED_FORMAT
    assert validator.calls == []
    # The challenge is still good for the real token.
    signin.verify(card_pki.agent("alex").sign(challenge), challenge=challenge, transaction_id=tx)


def test_a_refusal_carries_what_the_certificate_claimed(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    signin, validator, tx = parts
    agent: SimulatedAgent = card_pki.agent("alex_revoked")
    validator.fail_with = CertificateRevokedError(detail="on the CRL")
    challenge = _issue(signin, validator, tx)
    with pytest.raises(CardRefusal) as raised:
        signin.verify(agent.sign(challenge), challenge=challenge, transaction_id=tx)
    refusal = raised.value
    assert refusal.code is ErrorCode.CERTIFICATE_REVOKED and refusal.detail == "on the CRL"
    facts = refusal.facts
    assert (facts.uuid, facts.cert_serial, facts.validated) == (ALEX[1], agent.serial_hex, False)
    assert facts.cert_issuer == agent.certificate.issuer.rfc4514_string()
    assert facts.audit_details()["certificate_validated"] is False


def test_the_signature_is_checked_against_the_broker_s_own_origin(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    signin, validator, tx = parts
    challenge = _issue(signin, validator, tx)
    token = card_pki.agent("alex").sign(challenge, origin="https://broker.other.example")
    with pytest.raises(CardRefusal) as raised:
        signin.verify(token, challenge=challenge, transaction_id=tx)
    assert raised.value.code is ErrorCode.SIGNATURE_INVALID
    assert raised.value.facts.uuid == ALEX[1]


def test_a_non_object_token_or_a_missing_challenge_is_refused_without_the_store(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    signin, validator, tx = parts
    with pytest.raises(CardRefusal) as raised:
        signin.verify(["not", "a", "token"], challenge="x", transaction_id=tx)
    assert raised.value.code is ErrorCode.TOKEN_MALFORMED
    token = card_pki.agent("alex").sign("A" * 43)
    with pytest.raises(CardRefusal) as raised:
        signin.verify(token, challenge=None, transaction_id=tx)
    assert raised.value.code is ErrorCode.CHALLENGE_UNKNOWN
    assert validator.calls == []


def test_revocation_is_checked_before_the_signature(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    # A revoked card whose token is also signed for another origin: the card is refused
    # as revoked, so its holder learns the card itself is the problem.
    signin, validator, tx = parts
    challenge = _issue(signin, validator, tx)
    token = card_pki.agent("alex_revoked").sign(challenge, origin="https://elsewhere.example")
    with pytest.raises(CardRefusal) as raised:
        signin.verify(token, challenge=challenge, transaction_id=tx)
    assert raised.value.code is ErrorCode.CERTIFICATE_REVOKED


def test_the_signature_is_checked_before_the_uuid(
    parts: tuple[CardSignin, RecordingValidator, str], card_pki: CardPki
) -> None:
    # An identity rule no certificate meets: a bad signature is refused as such first,
    # and only a good one gets as far as the UUID.
    signin, validator, tx = parts
    strict = CardSignin(
        origin=ISSUER,
        challenges=signin._challenges,
        validator=validator,
        registrations=signin._registrations,
        directory=NoDirectory(),  # type: ignore[arg-type]
        identity_rule=IdentityRule(pattern=r"no-such-uuid"),
    )
    agent = card_pki.agent("alex")
    challenge = _issue(signin, validator, tx)
    with pytest.raises(CardRefusal) as raised:
        strict.verify(
            agent.sign(challenge, origin="https://elsewhere.example"),
            challenge=challenge,
            transaction_id=tx,
        )
    assert raised.value.code is ErrorCode.SIGNATURE_INVALID
    challenge = _issue(signin, validator, tx)
    with pytest.raises(CardRefusal) as raised:
        strict.verify(agent.sign(challenge), challenge=challenge, transaction_id=tx)
    assert raised.value.code is ErrorCode.IDENTITY_MISSING
