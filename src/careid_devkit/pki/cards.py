"""Card issuance inputs: validation, validity windows for "bad" cards, the CHUID."""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime, timedelta

from cryptography import x509

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.codes import DevkitCode
from careid_devkit.pki.chuid import Chuid, Fascn
from careid_devkit.pki.errors import PkiError

_UUID = re.compile(r"[0-9]{12}")
_PIN = re.compile(r"[0-9]{6,8}")
_PUK = re.compile(r"[0-9]{8}")
#: X.520 ub-common-name.
_MAX_NAME = 64


def _invalid(detail: str) -> PkiError:
    return PkiError(DevkitCode.DEVKIT_INVALID_ARGUMENT, detail)


def validate_uuid(uuid: str) -> str:
    """A Care Identity UUID: exactly 12 ASCII digits."""
    if not _UUID.fullmatch(uuid):
        raise _invalid(f"the Care Identity UUID must be exactly 12 digits, not {uuid!r}")
    return uuid


def validate_name(name: str) -> str:
    """The holder's name: not empty, at most 64 characters, no control characters."""
    cleaned = name.strip()
    if not cleaned:
        raise _invalid("the card holder's name must not be empty")
    if len(cleaned) > _MAX_NAME:
        raise _invalid(f"the card holder's name must be at most {_MAX_NAME} characters")
    if any(not char.isprintable() for char in cleaned):
        raise _invalid("the card holder's name must not contain control characters")
    return cleaned


def validate_pin(pin: str) -> str:
    """A PIV PIN: 6 to 8 digits (SP 800-73-4 Part 2 §2.4.3)."""
    if not _PIN.fullmatch(pin):
        raise _invalid("the PIN must be 6 to 8 digits")
    return pin


def validate_puk(puk: str | None) -> str:
    """A PIV PUK: 8 digits; a random one when none is given."""
    if puk is None:
        return "".join(secrets.choice("0123456789") for _ in range(8))
    if not _PUK.fullmatch(puk):
        raise _invalid("the PUK must be 8 digits")
    return puk


def parse_algorithm(algorithm: KeyAlgorithm | str) -> KeyAlgorithm:
    """The card key algorithm, accepting its text form (`p256`, `p384`, `rsa2048`)."""
    try:
        return KeyAlgorithm(algorithm)
    except ValueError as exc:
        choices = ", ".join(str(alg) for alg in KeyAlgorithm)
        raise _invalid(f"the key algorithm must be one of {choices}") from exc


def parse_reason(reason: x509.ReasonFlags | str) -> x509.ReasonFlags:
    """A CRL reason code by its RFC 5280 name, e.g. `keyCompromise`."""
    try:
        flag = x509.ReasonFlags(reason)
    except ValueError as exc:
        raise _invalid(f"unknown revocation reason {reason!r}") from exc
    if flag is x509.ReasonFlags.remove_from_crl:
        # RFC 5280 §5.3.1: removeFromCRL belongs in delta CRLs only.
        raise _invalid("removeFromCRL is only for delta CRLs")
    return flag


REVOCATION_REASONS = tuple(
    flag.value for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
)


def expired_validity(now: datetime) -> tuple[datetime, datetime]:
    """A validity window that ended a day ago (an expired card)."""
    return now - timedelta(days=3), now - timedelta(days=1)


def not_yet_valid_validity(now: datetime, lifetime: timedelta) -> tuple[datetime, datetime]:
    """A validity window that starts tomorrow (a card issued with a wrong clock)."""
    start = now + timedelta(days=1)
    return start, start + lifetime


def new_chuid(*, guid: bytes, expiration: date) -> Chuid:
    """A CHUID for a new card: non-federal FASC-N with a random credential number."""
    credential = "".join(secrets.choice("0123456789") for _ in range(6))
    return Chuid(
        fascn=Fascn(credential_number=credential).encode(), guid=guid, expiration=expiration
    )
