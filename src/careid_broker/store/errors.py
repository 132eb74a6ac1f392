"""Typed errors raised by the store, under the broker's `BrokerError` root.

Expected outcomes of single-use consumption (a challenge already used, a code replayed)
are returned as outcome values, not raised: the service layer switches on them. These
exceptions are for refusals the caller cannot route around and for a database that is
down.
"""

from __future__ import annotations

from enum import StrEnum

from careid_broker.codes import BrokerCode
from careid_broker.errors import BrokerError


class StoreError(BrokerError):
    """Root of the store's errors."""

    default_code = BrokerCode.STORE_UNAVAILABLE


class StoreUnavailableError(StoreError):
    """The database could not be reached, or stayed locked past the timeout."""

    default_code = BrokerCode.STORE_UNAVAILABLE


class ConflictSide(StrEnum):
    """Which side of a card ↔ account link is already taken."""

    CARD = "card"
    ACCOUNT = "account"


class RegistrationConflictError(StoreError):
    """A registration would link a card or an account that is already linked."""

    def __init__(self, sides: frozenset[ConflictSide], *, detail: str | None = None) -> None:
        self.sides = sides
        # The card side is named first: a card linked elsewhere is the stronger signal
        # that an administrator must look (the same card presented for two accounts).
        code = (
            BrokerCode.REGISTRATION_CARD_LINKED
            if ConflictSide.CARD in sides
            else BrokerCode.REGISTRATION_ACCOUNT_LINKED
        )
        super().__init__(code, detail=detail)


class SigningKeyUnavailableError(StoreError):
    """No usable signing key, or its private key could not be decrypted."""

    default_code = BrokerCode.SIGNING_KEY_UNAVAILABLE
