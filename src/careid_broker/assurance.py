"""Authentication assurance: the `acr` and `amr` values a sign-in carries, and what they meet.

Names follow NHS CIS2 Authentication. A sign-in here is one of two classes: a card and
its PIN (`AAL3_SMARTCARD`, assurance level 3) or a directory password (`AAL1_USERPASS`,
level 1). Relying parties written for CIS2 ask with its request values: `AAL3_ANY`
(any level-3 method: a card here), `AAL2_OR_AAL3_ANY` and `AAL2_ANY` (level 2 or more:
also a card here, since a password is level 1). `amr` values are RFC 8176's (`sc`
smart card, `pin`, `hwk` hardware-secured key, `pwd` password).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

ACR_PASSWORD: Final = "AAL1_USERPASS"  # noqa: S105 - an acr name, not a password
ACR_CARD: Final = "AAL3_SMARTCARD"
# Only ever requested (acr_values), never issued: "any AAL3 method", i.e. a card here.
ACR_ANY_CARD: Final = "AAL3_ANY"
# Requested by CIS2 RPs that accept level 2 or better; only a card meets them here.
ACR_AAL2_OR_AAL3: Final = "AAL2_OR_AAL3_ANY"
ACR_AAL2: Final = "AAL2_ANY"

AMR_PASSWORD: Final = ("pwd",)
AMR_CARD: Final = ("sc", "pin", "hwk")

# The assurance level each value stands for. A session meets a requested value when its
# own level is at least the requested one.
_LEVELS: Final = {
    ACR_PASSWORD: 1,
    ACR_CARD: 3,
    ACR_ANY_CARD: 3,
    ACR_AAL2_OR_AAL3: 2,
    ACR_AAL2: 2,
}
#: Every value `acr_values` may name (discovery's `acr_values_supported`).
SUPPORTED_ACR_VALUES: Final = tuple(_LEVELS)


def level_of(acr: str) -> int | None:
    """The assurance level of an `acr` value, or None for a value the broker does not know."""
    return _LEVELS.get(acr)


def requested_values(acr_values: str | Iterable[str] | None) -> tuple[str, ...]:
    """The `acr_values` request parameter (space-separated) as a tuple, order kept."""
    if acr_values is None:
        return ()
    items = acr_values.split() if isinstance(acr_values, str) else list(acr_values)
    return tuple(dict.fromkeys(item.strip() for item in items if item and item.strip()))


def satisfies(session_acr: str, requested_acr_values: str | Iterable[str] | None) -> bool:
    """Whether a session of `session_acr` meets an authorization request's `acr_values`.

    `acr_values` lists acceptable values (OpenID Connect Core §3.1.2.1): one met is
    enough. Values the broker does not know are ignored, as the spec allows for a
    voluntary claim; a request naming only unknown values asks for nothing in
    particular. A session whose own acr is unknown meets nothing that was asked for.
    """
    known = [
        level for value in requested_values(requested_acr_values) if (level := level_of(value))
    ]
    if not known:
        return True
    have = level_of(session_acr)
    return have is not None and any(have >= wanted for wanted in known)


def demands_card(requested_acr_values: str | Iterable[str] | None) -> bool:
    """Whether the request can only be met by a card sign-in (a password is not enough)."""
    return not satisfies(ACR_PASSWORD, requested_acr_values)
