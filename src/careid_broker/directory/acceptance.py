"""AUP acceptance once written: it stands, whether or not the account reads back."""

from __future__ import annotations

from collections.abc import Callable

from careid_broker.directory.models import MailAccount
from careid_broker.errors import BrokerError, DirectoryUnavailableError


class AupRecordedButUnreadError(BrokerError):
    """The directory took the AUP acceptance, then the account could not be read back.

    The acceptance is in force (the next sign-in finds it): audit it as made. Only the
    step that wanted the account afterwards stops, refused as the read was (usually
    `directory_unavailable`).
    """

    def __init__(self, recorded: MailAccount, *, cause: BrokerError) -> None:
        self.recorded = recorded
        """The account as written: the version accepted and when."""
        super().__init__(
            cause.code,
            detail=(
                f"AUP {recorded.aup_version} acceptance recorded on {recorded.dn};"
                f" reading it back failed: {cause.detail or cause.message}"
            ),
        )


def read_back(
    find_account: Callable[[str], MailAccount | None], recorded: MailAccount
) -> MailAccount:
    """The account re-read once its acceptance is written (`recorded`: as written), or
    `AupRecordedButUnreadError` whatever stopped the read."""
    try:
        found = find_account(recorded.mail)
    except BrokerError as exc:
        raise AupRecordedButUnreadError(recorded, cause=exc) from exc
    if found is None:
        vanished = DirectoryUnavailableError(detail=f"{recorded.dn} vanished after the update")
        raise AupRecordedButUnreadError(recorded, cause=vanished)
    return found
