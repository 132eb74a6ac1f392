"""One-time registration, I/O-free: password → card → confirmation → the link.

1. `start`: the email address and password (the password sign-in's own checks and
   throttling), then every account prerequisite, each named (`account_refusals`).
2. `present_card`: the same `careid-auth:1` check as sign-in, with a challenge bound to
   this registration; the Care Identity must be active, must be the account's own when
   the directory names one, and neither side may already be linked elsewhere.
3. `confirm`: the link is stored (the store's unique constraints decide a race), in the
   same database transaction that uses up the registration, so a failure stores nothing.

Every step re-reads the account from the directory: a prerequisite that stops holding
halfway (the account disabled meanwhile) stops the registration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography.hazmat.primitives.serialization import Encoding

from careid_broker.card.service import AttemptFacts, CardRefusal, CardSignin
from careid_broker.codes import BrokerCode
from careid_broker.directory import CareIdentity, Directory, MailAccount, account_refusals
from careid_broker.errors import (
    BrokerError,
    CareIdentityInactiveError,
    CareIdentityNotFoundError,
    InvalidCredentialsError,
)
from careid_broker.registration.state import (
    CardDetails,
    PendingRegistration,
    Stage,
    from_record,
    to_request,
)
from careid_broker.signin.password import PasswordSignin
from careid_broker.signin.standing import check_card_is_accounts
from careid_broker.store import (
    CardChallenges,
    IssuedChallenge,
    LinkMode,
    LoginTransactions,
    NewRegistration,
    RegistrationRecord,
    Registrations,
    Store,
)
from careid_broker.store.subjects import normalise_mail

log = logging.getLogger(__name__)

HOW_SELF_SERVICE = "self-service"
HOW_RENEWAL = "self-service-renewal"


class RegistrationExpiredError(BrokerError):
    """No registration step is pending for this browser (expired, finished, or none)."""

    default_code = BrokerCode.REGISTRATION_EXPIRED


class RegistrationAlreadyDoneError(BrokerError):
    """This card's certificate is already linked to this account (finished in another
    browser meanwhile): nothing to store."""

    default_code = BrokerCode.REGISTRATION_ALREADY_DONE


class PrerequisitesMissingError(BrokerError):
    """The account is not ready for smartcard sign-in; `problems` names each reason."""

    default_code = BrokerCode.REGISTRATION_PREREQUISITES_MISSING

    def __init__(self, problems: tuple[BrokerError, ...]) -> None:
        self.problems = problems
        super().__init__(detail=", ".join(p.code.value for p in problems))


@dataclass(frozen=True, kw_only=True)
class Started:
    """Step 1 done: the stored step, the account, and what it still lacks."""

    pending: PendingRegistration
    account: MailAccount
    problems: tuple[BrokerError, ...]


@dataclass(frozen=True, kw_only=True)
class Confirmed:
    """Step 3 done: the stored link (and the one it replaced, for a renewed card)."""

    registration: RegistrationRecord
    account: MailAccount
    replaced: RegistrationRecord | None
    card_used_at: datetime
    """When the card was used (step 2): the auth_time of the card sign-in this starts.
    Confirming uses no card (a click, perhaps the password typed again), so it is not."""


class RegistrationService:
    """The three steps of one-time registration."""

    def __init__(
        self,
        *,
        issuer: str,
        store: Store,
        password_signin: PasswordSignin,
        directory: Directory,
        transactions: LoginTransactions,
        challenges: CardChallenges,
        registrations: Registrations,
        link_mode: LinkMode,
        clock: Callable[[], datetime],
    ) -> None:
        self._issuer = issuer
        self._store = store
        self._password = password_signin
        self._directory = directory
        self._transactions = transactions
        self._challenges = challenges
        self._registrations = registrations
        self._link_mode = link_mode
        self._clock = clock

    # Step 1 ------------------------------------------------------------------------------

    def start(
        self, mail: str, password: str, *, client_address: str, return_tx: str | None
    ) -> Started:
        """Check the password; store step 1 and name every missing prerequisite.

        Raises what password sign-in raises: `InvalidCredentialsError`,
        `SigninThrottledError`, `PasswordExpiredError`,
        `DirectoryUnavailableError`.
        """
        checked = self._password.check(mail, password, client_address=client_address)
        account = checked.account
        created = self._transactions.create(
            to_request(
                issuer=self._issuer,
                stage=Stage.PASSWORD,
                mail=account.mail,
                dn=account.dn,
                entry_id=account.entry_id,
                display_name=account.display_name,
                org_code=account.org_code or "",
                return_tx=return_tx,
            )
        )
        pending = from_record(created.transaction_id, created.record)
        assert pending is not None  # noqa: S101 - made just above from a valid step
        return Started(pending=pending, account=account, problems=self._problems(account))

    def pending(self, pending_id: str | None) -> PendingRegistration:
        """The browser's pending step, or `RegistrationExpiredError`."""
        record = self._transactions.get(pending_id) if pending_id else None
        found = from_record(pending_id, record) if pending_id and record else None
        if found is None:
            raise RegistrationExpiredError(detail="no pending registration step")
        return found

    def account(self, pending: PendingRegistration) -> tuple[MailAccount, tuple[BrokerError, ...]]:
        """The account as the directory has it now, and what it lacks.

        It must be the directory entry whose password step 1 checked, not only an entry
        holding its address: an address given to another person meanwhile would have
        the policy accepted on that person's entry, or their account linked to this
        card (the stand-alone AUP step refuses it the same way).
        """
        account = self._directory.find_account(pending.mail)
        if account is None or normalise_mail(account.mail) != normalise_mail(pending.mail):
            raise RegistrationExpiredError(detail="the account is no longer in the directory")
        if not account.is_entry(dn=pending.dn, entry_id=pending.entry_id):
            raise RegistrationExpiredError(
                detail=f"the address is held by {account.dn} now, not the entry step 1 checked"
            )
        return account, self._problems(account)

    def _problems(self, account: MailAccount) -> tuple[BrokerError, ...]:
        problems: list[BrokerError] = list(
            account_refusals(
                account, now=self._clock(), current_aup_version=self._directory.current_aup_version
            )
        )
        # The active Care Identity is a prerequisite too (DESIGN.md): named at step 1,
        # not learnt after the card and PIN. A directory that names no UUID for the
        # account leaves it to step 2, which checks the card's own.
        if account.care_identity_uuid:
            try:
                self._directory.check_care_identity(
                    self._directory.find_care_identity(account.care_identity_uuid)
                )
            except (CareIdentityInactiveError, CareIdentityNotFoundError) as exc:
                problems.append(exc)
        return tuple(problems)

    def accept_aup(self, pending: PendingRegistration) -> MailAccount:
        """Record acceptance of the current AUP (`DirectoryReadOnlyError` when it cannot;
        `AupRecordedButUnreadError` when recorded but not read back)."""
        account, _ = self.account(pending)
        return self._directory.accept_aup(account, self._directory.current_aup_version)

    # Step 2 ------------------------------------------------------------------------------

    def issue_challenge(self, pending: PendingRegistration) -> IssuedChallenge:
        """A challenge bound to this registration (step 1 done, nothing missing)."""
        self._ready_for_card(pending)
        issued = self._challenges.issue(pending.id)
        if issued is None:
            raise RegistrationExpiredError(detail="the registration step expired")
        return issued

    def _ready_for_card(self, pending: PendingRegistration) -> MailAccount:
        if pending.stage is not Stage.PASSWORD:
            raise RegistrationExpiredError(detail=f"registration is at stage {pending.stage}")
        account, problems = self.account(pending)
        if problems:
            raise PrerequisitesMissingError(problems)
        return account

    def present_card(
        self, pending: PendingRegistration, token: object, *, challenge: object, card: CardSignin
    ) -> PendingRegistration:
        """Check the card for this registration; store step 2. Raises `CardRefusal`."""
        facts = AttemptFacts(account_mail=pending.mail, org_code=pending.org_code or None)
        # The card signed the challenge just before its token arrived: the moment the
        # card and PIN were used, and so the auth_time of the sign-in confirming starts.
        used_at = self._clock()
        try:
            account = self._ready_for_card(pending)
            verified = card.verify(token, challenge=challenge, transaction_id=pending.id)
            facts = replace(verified.facts, account_mail=account.mail, org_code=account.org_code)
            uuid = verified.uuid
            self._directory.check_care_identity(self._directory.find_care_identity(uuid))
            self._check_card_is_accounts(account, uuid)
            self._check_conflicts(account, uuid)
        except CardRefusal as refusal:
            raise CardRefusal(
                refusal.code,
                facts=replace(refusal.facts, account_mail=pending.mail, org_code=facts.org_code),
                detail=refusal.detail,
            ) from refusal
        except PrerequisitesMissingError as exc:
            # Ready at step 1, not now: a new policy version while the PIN was typed is
            # the one the person can put right here, so it is named as itself.
            only_aup = {p.code for p in exc.problems} == {BrokerCode.AUP_NOT_ACCEPTED}
            code = BrokerCode.AUP_NOT_ACCEPTED if only_aup else exc.code
            raise CardRefusal(code, facts=facts, detail=exc.detail) from exc
        except BrokerError as exc:
            raise CardRefusal(exc.code, facts=facts, detail=exc.detail) from exc
        certificate = verified.certificate
        with self._store.transaction():
            created = self._transactions.create(
                to_request(
                    issuer=self._issuer,
                    stage=Stage.CARD,
                    mail=account.mail,
                    dn=account.dn,
                    entry_id=account.entry_id,
                    display_name=account.display_name,
                    org_code=account.org_code or "",
                    return_tx=pending.return_tx,
                    card=CardDetails(
                        uuid=uuid,
                        holder_name=certificate.holder_name,
                        issuer_dn=certificate.issuer_dn,
                        serial_hex=certificate.serial_hex,
                        fingerprint=certificate.fingerprint_sha256,
                        used_at=used_at,
                        certificate_der=certificate.certificate.public_bytes(Encoding.DER),
                    ),
                )
            )
            self._transactions.expire(pending.id)
        step = from_record(created.transaction_id, created.record)
        assert step is not None  # noqa: S101 - made just above from a valid step
        return step

    def _check_card_is_accounts(self, account: MailAccount, uuid: str) -> None:
        """Refuse a card the directory says is someone else's.

        The account names its Care Identity: the card must be that one. An account that
        names none leaves the person's confirmation (step 3) to decide, unless the
        directory links the card's Care Identity to another account: then the card is
        that person's (a known password and one's own card must not make an AAL3 link).
        Card sign-in and a card session's later checks apply the same rule.
        """
        check_card_is_accounts(self._directory, account, uuid)

    def _check_conflicts(self, account: MailAccount, uuid: str) -> None:
        """Refuse early what the store would refuse at confirmation (it still decides)."""
        by_card = self._registrations.by_uuid(uuid)
        if by_card is not None and by_card.account_mail != normalise_mail(account.mail):
            raise BrokerError(
                BrokerCode.REGISTRATION_CARD_LINKED, detail="the card is linked to another account"
            )
        by_account = self._registrations.by_mail(account.mail)
        if by_account is not None and by_account.card_uuid != uuid:
            raise BrokerError(
                BrokerCode.REGISTRATION_ACCOUNT_LINKED,
                detail="the account is linked to another card identity",
            )

    # Step 3 ------------------------------------------------------------------------------

    def confirm(
        self,
        pending: PendingRegistration,
        *,
        checker: CardSignin,
        password: str | None = None,
        client_address: str = "unknown",
        within: Callable[[Confirmed], None] | None = None,
    ) -> tuple[Confirmed, CareIdentity]:
        """Store the link; `RegistrationConflictError` (nothing stored) on a conflict.

        The directory must still not say the card is someone else's (as at step 2,
        `CARD_IDENTITY_MISMATCH`). The card's certificate is checked again, revocation
        included as a sign-in
        checks it (`CardSignin.recheck`, raising `CardRefusal`): a card reported lost between
        step 2 and the confirmation must not be linked, nor sign anyone in.

        Where the account names no Care Identity (`needs_password`) the password is
        checked again, with password sign-in's throttling: `InvalidCredentialsError`
        without it or when it is wrong.

        The same card identity registering again for the same account (a renewed card,
        or a certificate-pinned link to update) replaces the old link in the same
        transaction; anything else already linked is a conflict for an administrator.
        `within` runs in that transaction once the link is stored (its audit entry, the
        sign-in it starts): all of it is committed, or none.
        """
        if pending.stage is not Stage.CARD or pending.card is None:
            raise RegistrationExpiredError(detail=f"registration is at stage {pending.stage}")
        card = pending.card
        account, problems = self.account(pending)
        if problems:
            raise PrerequisitesMissingError(problems)
        # As at step 2, against the directory as it is now: an account re-linked to
        # another Care Identity meanwhile must not be linked to this card.
        self._check_card_is_accounts(account, card.uuid)
        if self.needs_password(account):
            if not password:
                raise InvalidCredentialsError(detail="the password was not typed again")
            self._password.check(account.mail, password, client_address=client_address)
        if card.certificate_der is None:  # a step that kept no certificate: start again
            raise RegistrationExpiredError(detail="the pending step holds no certificate")
        checker.recheck(card.certificate_der)
        identity = self._directory.check_care_identity(
            self._directory.find_care_identity(card.uuid)
        )
        with self._store.transaction():
            if self._transactions.complete(pending.id) is None:
                raise RegistrationExpiredError(detail="confirmed already, or expired")
            existing = self._registrations.by_mail(account.mail)
            if existing is not None and _same_certificate(existing, card):
                # Raising rolls the transaction back: the pending step stays as it was.
                raise RegistrationAlreadyDoneError(
                    detail=f"serial {card.serial_hex} is linked to {account.mail} already"
                )
            replaced = None
            if existing is not None and existing.card_uuid == card.uuid:
                replaced = self._registrations.remove(mail=account.mail)
            record = self._registrations.create(
                NewRegistration(
                    card_uuid=card.uuid,
                    account_mail=account.mail,
                    account_dn=account.dn,
                    account_entry_id=account.entry_id,
                    org_code=account.org_code or "",
                    link_mode=self._link_mode,
                    cert_issuer_dn=card.issuer_dn,
                    cert_serial=card.serial_hex,
                    cert_fingerprint=card.fingerprint,
                    how=HOW_RENEWAL if replaced is not None else HOW_SELF_SERVICE,
                    cert_der=card.certificate_der,
                )
            )
            confirmed = Confirmed(
                registration=record, account=account, replaced=replaced, card_used_at=card.used_at
            )
            if within is not None:
                within(confirmed)
        return confirmed, identity

    @staticmethod
    def needs_password(account: MailAccount) -> bool:
        """Whether confirming asks for the password again.

        When the account names the card's Care Identity, the directory vouches that the
        card is the account holder's. When it names none, the link rests on the person
        confirming it, and a registration left open on a shared workstation (steps live
        a quarter of an hour) must not let the next person link their own card to it.
        """
        return not account.care_identity_uuid

    def cancel(self, pending_id: str) -> None:
        """Abandon the registration: its pending step is expired (nothing was stored)."""
        self._transactions.expire(pending_id)


def _same_certificate(record: RegistrationRecord, card: CardDetails) -> bool:
    """Whether a stored link is to exactly this card certificate."""
    return (
        record.card_uuid == card.uuid
        and record.cert_issuer_dn == card.issuer_dn
        and record.cert_serial.lower() == card.serial_hex.lower()
    )
