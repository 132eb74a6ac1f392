"""Card sign-in, I/O-free: is this `careid-auth:1` token good, and may its card sign in?

The checks run in DESIGN.md's order ("Verification order"), in one straight line here:
token format → challenge (consumed atomically, so a replayed or raced token gets
`challenge_used` however fast it comes back) → certificate, chain, validity, usage,
policies, revocation (`CertificateValidator.trust`, which stops there) → signature over
TBS rebuilt from the broker's OWN origin and its own stored challenge
(`careid_protocol.verify_signature`) → UUID (`identify`) → registration → directory.
Cheap and single-use first: the slow revocation check only ever runs for a challenge
this request has just burned.

Every refusal is a `CardRefusal` carrying the stable code and what was known of the card
by then (`AttemptFacts`), so the caller can audit issuer, serial and UUID even for a
card that was never validated. The dependencies (challenges, validator, registrations,
directory) come through the constructor; nothing here touches Flask or HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from careid_broker.codes import BrokerCode, Code
from careid_broker.directory import CareIdentity, Directory, MailAccount
from careid_broker.errors import AuthorityRevokedError, BrokerError, CertificateRevokedError
from careid_broker.pki import (
    TrustedCertificate,
    ValidatedCertificate,
    identify,
    parse_certificate,
)
from careid_broker.pki.crl import RevokedHandler
from careid_broker.signin.standing import check_card_is_accounts, check_registered_entry
from careid_broker.store import (
    CardChallenges,
    ChallengeOutcome,
    LinkMode,
    RegistrationRecord,
    Registrations,
)
from careid_protocol.errors import ErrorCode
from careid_protocol.identity import DEFAULT_RULE, IdentityRule, uuid_from_certificate
from careid_protocol.token import (
    UNREADABLE_CERTIFICATE,
    ProtocolError,
    is_valid_challenge,
    parse_token,
    verify_signature,
)

log = logging.getLogger(__name__)


class CertificateChecker(Protocol):
    """What card sign-in needs of `careid_broker.pki.CertificateValidator`."""

    def trust(self, certificate: bytes | x509.Certificate) -> TrustedCertificate:
        """Every certificate check up to revocation; raises the first failure's BrokerError."""
        ...


@dataclass(frozen=True, kw_only=True)
class AttemptFacts:
    """What an attempt revealed about the card, for the audit trail.

    Until `validated` the issuer, serial and UUID are only what the certificate claims:
    recorded, because a refused card is exactly what an investigator wants to trace.
    """

    cert_issuer: str | None = None
    cert_serial: str | None = None
    uuid: str | None = None
    validated: bool = False
    revocation: str | None = None
    soft_fail: bool = False
    revoked_ca_subject: str | None = None
    """The CA certificate of the card's chain found revoked on its issuer's CRL."""
    revoked_ca_serial: str | None = None
    account_mail: str | None = None
    org_code: str | None = None

    def audit_details(self) -> dict[str, object]:
        """The facts as audit details (known values only)."""
        details: dict[str, object] = {"certificate_validated": self.validated}
        for key, value in (
            ("cert_issuer", self.cert_issuer),
            ("cert_serial", self.cert_serial),
            ("uuid", self.uuid),
            ("revocation", self.revocation),
            ("revoked_ca_subject", self.revoked_ca_subject),
            ("revoked_ca_serial", self.revoked_ca_serial),
        ):
            if value is not None:
                details[key] = value
        if self.soft_fail:
            details["revocation_soft_fail"] = True
        return details


class CardRefusal(BrokerError):
    """A card attempt refused with a stable code; `facts` is what was known by then."""

    def __init__(self, code: Code, *, facts: AttemptFacts, detail: str | None = None) -> None:
        super().__init__(code, detail=detail)
        self.facts = facts


@dataclass(frozen=True, kw_only=True)
class VerifiedCard:
    """A token whose challenge, certificate and signature all checked out."""

    certificate: ValidatedCertificate
    facts: AttemptFacts

    @property
    def uuid(self) -> str:
        """The Care Identity UUID the validated certificate names."""
        return self.certificate.uuid


@dataclass(frozen=True, kw_only=True)
class CardSigninDecision:
    """A card that may sign in: its registration, the account and the Care Identity."""

    card: VerifiedCard
    registration: RegistrationRecord
    account: MailAccount
    identity: CareIdentity
    facts: AttemptFacts


def with_revoked_authority(facts: AttemptFacts, error: CertificateRevokedError) -> AttemptFacts:
    """`facts` naming the revoked CA, where a CA of the card's chain (not the card) was
    found revoked: an investigator must see which CA, not only that the card was refused."""
    if not isinstance(error, AuthorityRevokedError):
        return facts
    return replace(facts, revoked_ca_subject=error.ca_subject, revoked_ca_serial=error.ca_serial)


def claimed_facts(certificate: x509.Certificate, rule: IdentityRule) -> AttemptFacts:
    """Issuer, serial and UUID as an unvalidated certificate states them: those of them
    that can be read (a damaged certificate is still worth tracing by what it shows)."""
    facts = AttemptFacts(cert_serial=f"{certificate.serial_number:X}")
    with suppress(ValueError):  # an issuer that does not decode
        facts = replace(facts, cert_issuer=certificate.issuer.rfc4514_string())
    with suppress(ValueError):  # a subject that does not decode
        facts = replace(facts, uuid=uuid_from_certificate(certificate, rule))
    return facts


def same_certificate(registration: RegistrationRecord, certificate: ValidatedCertificate) -> bool:
    """Whether the registration's pinned issuer and serial are this certificate's."""
    return (
        registration.cert_issuer_dn == certificate.issuer_dn
        and registration.cert_serial.lower() == certificate.serial_hex.lower()
    )


class CardSignin:
    """Checks `careid-auth:1` tokens and decides whether their card may sign in."""

    def __init__(
        self,
        *,
        origin: str,
        challenges: CardChallenges,
        validator: CertificateChecker,
        registrations: Registrations,
        directory: Directory,
        link_mode: LinkMode = LinkMode.UUID,
        identity_rule: IdentityRule = DEFAULT_RULE,
        on_revoked: RevokedHandler | None = None,
    ) -> None:
        self.origin = origin
        self._on_revoked = on_revoked
        self._challenges = challenges
        self._validator = validator
        self._registrations = registrations
        self._directory = directory
        self._link_mode = link_mode
        self._identity_rule = identity_rule

    def verify(self, token: object, *, challenge: object, transaction_id: str) -> VerifiedCard:
        """Token format, challenge, certificate and signature; raises `CardRefusal`.

        `transaction_id` is the login (or registration) transaction the browser holds:
        a challenge issued for any other is refused, and burned.
        """
        facts = AttemptFacts()
        try:
            if not isinstance(token, Mapping):
                raise ProtocolError(ErrorCode.TOKEN_MALFORMED, "token is not a JSON object")
            parsed = parse_token(token)
            certificate: bytes | x509.Certificate = parsed.certificate
            try:
                certificate = x509.load_der_x509_certificate(parsed.certificate)
            except UNREADABLE_CERTIFICATE:
                pass  # the validator names it certificate_malformed, in its turn
            else:
                # Perhaps not fully readable: the validator reads all of it, in its turn.
                facts = claimed_facts(certificate, self._identity_rule)
            if not isinstance(challenge, str):
                raise ProtocolError(ErrorCode.CHALLENGE_UNKNOWN, "no challenge was sent")
            if not is_valid_challenge(challenge):
                # Not one the broker could have issued: nothing to look up or burn.
                raise ProtocolError(ErrorCode.CHALLENGE_UNKNOWN, "not a challenge of this broker")
            outcome = self._challenges.consume(challenge, transaction_id)
            if outcome is not ChallengeOutcome.OK:
                code = outcome.error_code or ErrorCode.CHALLENGE_UNKNOWN
                raise ProtocolError(code, f"challenge {outcome.value}")
            try:
                trusted = self._validator.trust(certificate)
            except CertificateRevokedError as exc:
                facts = with_revoked_authority(facts, exc)
                self._revoked(certificate)
                raise
            # TBS from the broker's own origin and the challenge it stored and has just
            # consumed: nothing the client sent but the signature itself.
            verify_signature(parsed, trusted.certificate, self.origin, challenge)
            validated = identify(trusted, self._identity_rule)
        except ProtocolError as exc:
            raise CardRefusal(exc.code, facts=facts, detail=exc.detail) from exc
        except BrokerError as exc:
            raise CardRefusal(exc.code, facts=facts, detail=exc.detail) from exc
        method = validated.revocation_method
        return VerifiedCard(
            certificate=validated,
            facts=AttemptFacts(
                cert_issuer=validated.issuer_dn,
                cert_serial=validated.serial_hex,
                uuid=validated.uuid,
                validated=True,
                revocation=method.value if method is not None else None,
                soft_fail=validated.soft_fail_used,
            ),
        )

    def recheck(self, certificate_der: bytes) -> ValidatedCertificate:
        """The certificate checks again, revocation included as a sign-in asks it (an
        answer no older than `[pki]` allows), for a certificate this broker checked a
        while ago (a registration is confirmed up to a quarter of an hour after its card
        was shown); raises `CardRefusal`."""
        facts = AttemptFacts()
        try:
            # Damaged since it was checked: certificate_malformed, like any other.
            certificate = parse_certificate(certificate_der)
            facts = claimed_facts(certificate, self._identity_rule)
            try:
                trusted = self._validator.trust(certificate)
            except CertificateRevokedError as exc:
                facts = with_revoked_authority(facts, exc)
                self._revoked(certificate)
                raise
            return identify(trusted, self._identity_rule)
        except BrokerError as exc:
            raise CardRefusal(exc.code, facts=facts, detail=exc.detail) from exc

    def _revoked(self, certificate: bytes | x509.Certificate) -> None:
        # The chain was verified before revocation was asked: this is a certificate of
        # ours that its CA has revoked (or whose CA its own issuer has revoked, which
        # leaves the card no more valid). Any session it opened ends now, wherever.
        if self._on_revoked is None or not isinstance(certificate, x509.Certificate):
            return
        self._on_revoked(
            certificate.issuer.rfc4514_string(), frozenset({certificate.serial_number})
        )

    def decide(self, card: VerifiedCard) -> CardSigninDecision:
        """Registration, then the account, then the Care Identity; raises `CardRefusal`."""
        facts = card.facts
        try:
            registration = self._registrations.by_uuid(card.uuid)
            if registration is None:
                raise CardRefusal(
                    BrokerCode.CARD_NOT_REGISTERED, facts=facts, detail="no registration"
                )
            facts = replace(
                facts, account_mail=registration.account_mail, org_code=registration.org_code
            )
            pinned = (
                registration.link_mode is LinkMode.CERTIFICATE
                or self._link_mode is LinkMode.CERTIFICATE
            )
            if pinned and not same_certificate(registration, card.certificate):
                raise CardRefusal(
                    BrokerCode.CARD_CERTIFICATE_NOT_REGISTERED,
                    facts=facts,
                    detail=f"registered serial {registration.cert_serial} of"
                    f" {registration.cert_issuer_dn!r}",
                )
            account = self._directory.find_account(registration.account_mail)
            if account is None:
                raise CardRefusal(BrokerCode.CARD_ACCOUNT_MISSING, facts=facts)
            # The registration is the entry's it was made for, not its address's: one
            # given to someone else since must not let the old holder's card in.
            check_registered_entry(registration, account)
            facts = replace(facts, org_code=account.org_code or registration.org_code)
            self._directory.check_account(account)
            # The RP's claims come from the card's Care Identity: the account must name
            # no other, and the directory must not record the card's on another account
            # (a link made before it did, which registration would refuse now).
            check_card_is_accounts(self._directory, account, card.uuid)
            identity = self._directory.check_care_identity(
                self._directory.find_care_identity(card.uuid)
            )
        except CardRefusal:
            raise
        except BrokerError as exc:
            raise CardRefusal(exc.code, facts=facts, detail=exc.detail) from exc
        return CardSigninDecision(
            card=card, registration=registration, account=account, identity=identity, facts=facts
        )

    def record_certificate(self, decision: CardSigninDecision) -> bool:
        """Keep the certificate this sign-in used as the registration's, when it is a
        renewed card's (same identity, new certificate): an administrator's revocation
        check then asks about the card in use, not the one first registered. A
        registration made before certificates were kept gets its DER filled in. True
        when the card was renewed (a change worth auditing)."""
        used = decision.card.certificate
        registration = decision.registration
        same = registration.cert_fingerprint.lower() == used.fingerprint_sha256.lower()
        if same and registration.cert_der is not None:
            return False
        if not same and _issued_before(used.certificate, registration.cert_der):
            # The card the renewed one replaced, still valid: the registration keeps
            # naming the newer certificate (its sessions are tied to this one anyway).
            return False
        changed = self._registrations.record_certificate(
            decision.registration.card_uuid,
            issuer_dn=used.issuer_dn,
            serial_hex=used.serial_hex,
            fingerprint=used.fingerprint_sha256,
            der=used.certificate.public_bytes(Encoding.DER),
        )
        return changed and not same

    def record_entry_id(self, decision: CardSigninDecision) -> bool:
        """Keep the account entry's identifier with a registration made before they were
        kept (revision 0014), now that this sign-in found the entry at the registered
        DN (`decide`): from then on the identifier decides, and the entry may be renamed.
        Call it in the sign-in's transaction. True when recorded."""
        registration, entry_id = decision.registration, decision.account.entry_id
        if registration.account_entry_id is not None or entry_id is None:
            return False
        return self._registrations.record_entry_id(registration, entry_id)

    def signin(
        self, token: object, *, challenge: object, transaction_id: str
    ) -> CardSigninDecision:
        """`verify` then `decide`: the whole card sign-in check."""
        return self.decide(self.verify(token, challenge=challenge, transaction_id=transaction_id))


def _issued_before(certificate: x509.Certificate, registered_der: bytes | None) -> bool:
    """Whether `certificate` was issued before the registration's (if it parses)."""
    if registered_der is None:
        return False
    try:
        registered = x509.load_der_x509_certificate(registered_der)
    except UNREADABLE_CERTIFICATE:
        return False
    return certificate.not_valid_before_utc < registered.not_valid_before_utc
