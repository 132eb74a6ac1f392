"""Why a registration is removed: a fixed list, or "other" with the administrator's words."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum, unique

from careid_broker.admin.errors import RemovalReasonError

MAX_REASON_TEXT = 500


@unique
class RemovalReason(StrEnum):
    """The reasons offered to administrators (the value is what is audited)."""

    LOST_CARD = "lost_card"
    LEFT_ORGANISATION = "left_organisation"
    WRONG_LINK = "wrong_link"
    OTHER = "other"

    @property
    def label(self) -> str:
        """The words shown on the console."""
        return _LABELS[self]


_LABELS: dict[RemovalReason, str] = {
    RemovalReason.LOST_CARD: "The smartcard was lost, stolen or damaged",
    RemovalReason.LEFT_ORGANISATION: "The person has left the organisation",
    RemovalReason.WRONG_LINK: "The smartcard was linked to the wrong account",
    RemovalReason.OTHER: "Another reason",
}


@dataclass(frozen=True, kw_only=True)
class Reason:
    """A checked reason: `text` is set for OTHER only (and then never blank)."""

    kind: RemovalReason
    text: str | None = None

    def describe(self) -> str:
        """One line for lists and CLI output."""
        return f"{self.kind.value}: {self.text}" if self.text else self.kind.value


def parse_reason(kind: str | None, text: str | None) -> Reason:
    """A `Reason` from form, JSON or command-line values; `RemovalReasonError` if unusable.

    Only a listed value is a reason: an unknown one (a typo such as "lost-card") is
    refused, never recorded as "other", which would put the removal down to the wrong
    reason in the audit log. Text given with a listed reason is dropped: the list item
    says it all, and free text is where personal details creep into the audit log.
    Text with characters that are not printable (control characters, direction
    overrides, a JSON body's lone surrogates) is refused: it cannot be stored, or
    would make the audit entry read as something else.
    """
    try:
        reason = RemovalReason((kind or "").strip())
    except ValueError:
        raise RemovalReasonError(detail=f"unknown removal reason {kind!r}") from None
    if reason is not RemovalReason.OTHER:
        return Reason(kind=reason)
    cleaned = " ".join((text or "").split())
    if not cleaned or len(cleaned) > MAX_REASON_TEXT:
        raise RemovalReasonError(detail="'other' needs a description of 1-500 characters")
    if not cleaned.isprintable():
        raise RemovalReasonError(detail="'other' description has characters that are not text")
    return Reason(kind=reason, text=cleaned)
