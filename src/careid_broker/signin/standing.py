"""Whether the person behind a sign-in session may still be signed in, read now.

A session outlives the checks its sign-in made: single sign-on to another relying party,
a role chosen later, a refresh token used hours on. Each of those reads the directory
afresh and applies the same rules a new sign-in would:

- the mail account exists and may sign in (enabled, not expired, current AUP accepted);
- for a session a card opened, the Care Identity of that card exists and is active, and
  the card is the account's (`check_card_is_accounts`, the rule card sign-in and
  registration apply too). Its claims come from the card's Care Identity, as they did
  at the sign-in, not from whatever the account names.

A refusal is the directory's `BrokerError` (`care_identity_inactive`,
`account_disabled`…); a directory that cannot be read raises
`DirectoryUnavailableError`: no answer, no sign-in.
"""

from __future__ import annotations

from typing import Protocol

from careid_broker.codes import BrokerCode
from careid_broker.directory import CareIdentity, Directory, MailAccount
from careid_broker.errors import (
    BrokerError,
    InvalidCredentialsError,
    RegistrationAccountChangedError,
)
from careid_broker.store import RegistrationRecord
from careid_broker.store.subjects import SubjectHolder, normalise_mail


class AddressReassignedError(InvalidCredentialsError):
    """The session's address is held by another directory entry now: for the session,
    its account is gone."""


class SubjectLookup(Protocol):
    """What a session's standing needs of `careid_broker.store.subjects.Subjects`."""

    def holder_of(self, sub: str) -> SubjectHolder | None:
        """The entry a `sub` belongs to, or None."""
        ...


def check_subjects_entry(holder: SubjectHolder | None, account: MailAccount) -> None:
    """Refuse an account that is not the directory entry the session's `sub` is:
    its address has been given to another entry since the sign-in (that entry signing
    in retired the `sub`, or the entry found now has another identifier). The session
    ends; whoever holds the address now signs in as themselves.

    With no identifier kept for the `sub` (made before revision 0013 and not yet
    backfilled, or a mapping without `entry_id`) only retirement can tell.
    """
    if holder is None:
        return
    if holder.retired:
        raise AddressReassignedError(
            detail=f"the session's sub was retired: {account.dn} holds its address now"
        )
    if holder.entry_id is not None and account.entry_id not in (None, holder.entry_id):
        raise AddressReassignedError(
            detail=f"the address is now {account.dn}'s ({account.entry_id}), not the"
            f" entry the session signed in ({holder.entry_id})"
        )


class RegistrationLookup(Protocol):
    """What a session's standing needs of `careid_broker.store.Registrations`."""

    def by_uuid(self, card_uuid: str) -> RegistrationRecord | None:
        """The registration of a card identity, or None."""
        ...


def check_registered_entry(registration: RegistrationRecord, account: MailAccount) -> None:
    """Refuse (`registration_account_changed`) an account that is not the directory
    entry the registration was made for: its address has been given to someone else.

    The entry's identifier decides when both sides have one (a renamed or moved entry
    is still the registered one); else its DN, as registered (a registration made
    before identifiers were kept, or a directory mapping without them).
    """
    if not account.is_entry(dn=registration.account_dn, entry_id=registration.account_entry_id):
        raise RegistrationAccountChangedError(
            detail=f"{registration.card_uuid} was registered to {registration.account_dn}"
            f" ({registration.account_entry_id or 'no entry id'}); the address is now"
            f" {account.dn}'s ({account.entry_id or 'no entry id'})"
        )


def check_card_is_accounts(directory: Directory, account: MailAccount, card_uuid: str) -> None:
    """Refuse (`card_identity_mismatch`) a card the directory says is someone else's.

    The account names its Care Identity: the card must be that one (the relying parties'
    claims come from it). An account that names none may use a card the directory gives
    to no one else; one it records on another account is that person's, whatever link
    the broker holds. Only an account naming none costs a second search.
    """
    if account.care_identity_uuid:
        if account.care_identity_uuid != card_uuid:
            raise BrokerError(
                BrokerCode.CARD_IDENTITY_MISMATCH,
                detail=f"the directory links {account.dn} to {account.care_identity_uuid}",
            )
        return
    owner = directory.find_account_by_uuid(card_uuid)
    if owner is not None and normalise_mail(owner.mail) != normalise_mail(account.mail):
        raise BrokerError(
            BrokerCode.CARD_IDENTITY_MISMATCH,
            detail=f"the directory links Care Identity {card_uuid} to {owner.dn}",
        )


def session_standing(
    directory: Directory,
    *,
    account_mail: str,
    card_uuid: str | None,
    registrations: RegistrationLookup,
    sub: str,
    subjects: SubjectLookup,
) -> tuple[MailAccount, CareIdentity | None]:
    """The session's account and Care Identity, read now; raises the first refusal.

    A card's session must still find the entry its card was registered for
    (`check_registered_entry`), and every session the entry it signed in
    (`check_subjects_entry`). A removed registration ended its
    sessions with it; one that is gone, or now another account's, is not this session's
    to check.
    """
    account = directory.find_account(account_mail)
    if account is None:
        raise InvalidCredentialsError(detail="the account is gone from the directory")
    if card_uuid is not None:
        registration = registrations.by_uuid(card_uuid)
        if registration is not None and registration.account_mail == normalise_mail(account_mail):
            check_registered_entry(registration, account)
    check_subjects_entry(subjects.holder_of(sub), account)
    directory.check_account(account)
    if card_uuid is None:
        # A password session: the Care Identity the account names, for its claims.
        uuid = account.care_identity_uuid
        return account, directory.find_care_identity(uuid) if uuid else None
    check_card_is_accounts(directory, account, card_uuid)
    return account, directory.check_care_identity(directory.find_care_identity(card_uuid))


def refusal_words(exc: BrokerError) -> str:
    """Why a session's standing was refused, for its `session.end` entry."""
    if isinstance(exc, AddressReassignedError):
        return "the address now belongs to another directory entry"
    if isinstance(exc, InvalidCredentialsError):
        return "the account is gone from the directory"
    return f"the account may no longer sign in ({exc.code.value})"
