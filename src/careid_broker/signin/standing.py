"""Whether the person behind a sign-in session may still be signed in, read now.

A session outlives the checks its sign-in made: single sign-on to another relying party,
a role chosen later, a refresh token used hours on. Each of those reads the directory
afresh and applies the same rules a new sign-in would:

- the mail account exists and may sign in (enabled, not expired, current AUP accepted);
- for a session a card opened, the Care Identity of that card exists and is active, and
  the account names no other Care Identity. Its claims come from the card's Care
  Identity, as they did at the sign-in, not from whatever the account names.

A refusal is the directory's `BrokerError` (`care_identity_inactive`,
`account_disabled`…); a directory that cannot be read raises
`DirectoryUnavailableError`: no answer, no sign-in.
"""

from __future__ import annotations

from careid_broker.codes import BrokerCode
from careid_broker.directory import CareIdentity, Directory, MailAccount
from careid_broker.errors import BrokerError, InvalidCredentialsError


def session_standing(
    directory: Directory, *, account_mail: str, card_uuid: str | None
) -> tuple[MailAccount, CareIdentity | None]:
    """The session's account and Care Identity, read now; raises the first refusal."""
    account = directory.find_account(account_mail)
    if account is None:
        raise InvalidCredentialsError(detail="the account is gone from the directory")
    directory.check_account(account)
    if card_uuid is None:
        # A password session: the Care Identity the account names, for its claims.
        uuid = account.care_identity_uuid
        return account, directory.find_care_identity(uuid) if uuid else None
    if account.care_identity_uuid and account.care_identity_uuid != card_uuid:
        raise BrokerError(
            BrokerCode.CARD_IDENTITY_MISMATCH,
            detail=f"the directory now links {account.dn} to {account.care_identity_uuid}",
        )
    return account, directory.check_care_identity(directory.find_care_identity(card_uuid))


def refusal_words(exc: BrokerError) -> str:
    """Why a session's standing was refused, for its `session.end` entry."""
    if isinstance(exc, InvalidCredentialsError):
        return "the account is gone from the directory"
    return f"the account may no longer sign in ({exc.code.value})"
