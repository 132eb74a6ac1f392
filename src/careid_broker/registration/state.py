"""A registration in progress: server-side, bound to one browser, expiring, single use.

Each step's outcome is stored as a broker-local login transaction (the store's
`LoginTransactions`: hashed id, expiry, single-use completion) whose id only the
browser's session cookie holds. A step never changes a stored step: it makes the next
one and expires the last, so what the confirm page shows is exactly what was verified,
and a step that fails leaves the previous one as it was. The registration itself is
written only at confirmation; until then nothing links a card to an account.

Step 2 keeps when the card was used: the card sign-in that confirmation starts is dated
from then, not from the click on Confirm (`SigninDecision.auth_time`). A step stored by
an older broker, without that time, is dated from when it was stored, just after the
card was verified.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum, unique
from typing import Any

from careid_broker.store import (
    AuthorizationRequest,
    LoginTransactionRecord,
    TransactionStatus,
    instant_for_extras,
    instant_from_extras,
)

#: The client id of registration transactions: no registered client has it, so the
#: OpenID Provider can never issue a code for one.
REGISTRATION_CLIENT_ID = "careid-broker:registration"
PURPOSE = "registration"


@unique
class Stage(StrEnum):
    """How far a registration has got."""

    PASSWORD = "password"  # noqa: S105 - step 1 done: the person knows the account's password
    CARD = "card"  # step 2 done: a valid card with an active Care Identity was presented


@dataclass(frozen=True, kw_only=True)
class CardDetails:
    """The card presented at step 2, as its validated certificate states it."""

    uuid: str
    holder_name: str
    issuer_dn: str
    serial_hex: str
    fingerprint: str
    used_at: datetime
    """When the card presented it (its signed challenge arrived): the auth_time of the
    card sign-in the confirmation starts."""
    certificate_der: bytes | None = None
    """The certificate itself, kept with the registration (None in older steps)."""


@dataclass(frozen=True, kw_only=True)
class PendingRegistration:
    """One stored step of a registration."""

    id: str
    """The transaction id: a secret held only in the browser's session."""
    stage: Stage
    mail: str
    dn: str
    display_name: str
    org_code: str
    return_tx: str | None
    """The RP login transaction to carry on with afterwards, if it began at one."""
    card: CardDetails | None
    expires_at: datetime
    entry_id: str | None = None
    """The account entry's identifier at step 1 (None: not mapped, or an older step)."""


def to_request(
    *,
    issuer: str,
    stage: Stage,
    mail: str,
    dn: str,
    display_name: str,
    org_code: str,
    return_tx: str | None,
    card: CardDetails | None = None,
    entry_id: str | None = None,
) -> AuthorizationRequest:
    """The transaction that stores a step."""
    extras: dict[str, Any] = {
        "purpose": PURPOSE,
        "stage": stage.value,
        "mail": mail,
        "dn": dn,
        "entry_id": entry_id,
        "display_name": display_name,
        "org_code": org_code,
        "return_tx": return_tx,
    }
    if card is not None:
        extras["card"] = {
            "uuid": card.uuid,
            "holder_name": card.holder_name,
            "issuer_dn": card.issuer_dn,
            "serial_hex": card.serial_hex,
            "fingerprint": card.fingerprint,
            "used_at": instant_for_extras(card.used_at),
            "certificate": (
                base64.b64encode(card.certificate_der).decode("ascii")
                if card.certificate_der is not None
                else None
            ),
        }
    return AuthorizationRequest(
        client_id=REGISTRATION_CLIENT_ID,
        redirect_uri=f"{issuer}/register",
        scope="",
        extras=extras,
    )


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"registration state lacks {key}")
    return value


def _der(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def from_record(pending_id: str, record: LoginTransactionRecord) -> PendingRegistration | None:
    """The step a transaction stores; None if it is not a pending registration step."""
    if record.request.client_id != REGISTRATION_CLIENT_ID:
        return None
    if record.status is not TransactionStatus.PENDING:
        return None
    extras = record.request.extras
    try:
        if extras.get("purpose") != PURPOSE:
            return None
        card_data = extras.get("card")
        card = None
        if isinstance(card_data, Mapping):
            card = CardDetails(
                uuid=_text(card_data, "uuid"),
                holder_name=_text(card_data, "holder_name"),
                issuer_dn=_text(card_data, "issuer_dn"),
                serial_hex=_text(card_data, "serial_hex"),
                fingerprint=_text(card_data, "fingerprint"),
                # An older broker's step kept no time: stored just after the card's use.
                used_at=instant_from_extras(card_data.get("used_at")) or record.created_at,
                certificate_der=_der(card_data.get("certificate")),
            )
        return_tx = extras.get("return_tx")
        entry_id = extras.get("entry_id")
        return PendingRegistration(
            id=pending_id,
            stage=Stage(_text(extras, "stage")),
            mail=_text(extras, "mail"),
            dn=_text(extras, "dn"),
            display_name=_text(extras, "display_name"),
            org_code=_text(extras, "org_code"),
            return_tx=return_tx if isinstance(return_tx, str) else None,
            card=card,
            expires_at=record.expires_at,
            entry_id=entry_id if isinstance(entry_id, str) else None,
        )
    except ValueError:
        return None
