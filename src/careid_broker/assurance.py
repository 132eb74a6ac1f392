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


def known_values(acr_values: str | Iterable[str] | None) -> tuple[str, ...]:
    """The requested values the broker knows, order kept (`level_of` is not None)."""
    return tuple(value for value in requested_values(acr_values) if value in _LEVELS)


def with_floor(
    requested_acr_values: str | Iterable[str] | None, floor_acr_values: Iterable[str]
) -> tuple[str, ...]:
    """The values a request is judged by under a client's `default_acr_values`.

    Without values of its own the request takes the client's (OpenID Connect Dynamic
    Client Registration §2, `default_acr_values`). Its own values cannot go below them:
    a request passes through the browser, so a value weaker than the client's lowest
    is dropped, and when none is left the client's apply. Values the broker does not
    know are dropped too; what is left is never empty when the client has a floor.
    """
    floor = tuple(floor_acr_values)
    requested = requested_values(requested_acr_values)
    if not floor:
        return requested
    lowest = min((level_of(value) or 0) for value in floor)
    kept = tuple(value for value in requested if (level_of(value) or 0) >= max(lowest, 1))
    return kept or floor


def satisfies(session_acr: str, requested_acr_values: str | Iterable[str] | None) -> bool:
    """Whether a session of `session_acr` meets an authorization request's `acr_values`.

    `acr_values` lists acceptable values (OpenID Connect Core §3.1.2.1): one met is
    enough, and nothing asked is met by any session. Values the broker does not know
    are passed over, but a request naming only such values is met by none: the
    authorization endpoint refuses it first (`oidc_acr_unsupported`), and read as
    "nothing asked" a misspelt `AAL3_ANY` would be met by a password. A session whose
    own acr is unknown meets nothing that was asked for.
    """
    requested = requested_values(requested_acr_values)
    if not requested:
        return True
    known = [level for value in requested if (level := level_of(value))]
    have = level_of(session_acr)
    return have is not None and any(have >= wanted for wanted in known)


#: The lowest assurance level whose sessions are given the person's roles and the
#: organisations and selected role that come from them. CIS2 Authentication has only
#: AAL2 and AAL3 authenticators, so a relying party written for it reads roles without
#: asking for an acr; a password (AAL1) must not give them.
ROLES_LEVEL: Final = 2


def releases_roles(session_acr: str) -> bool:
    """Whether a session of `session_acr` is strong enough for role claims."""
    level = level_of(session_acr)
    return level is not None and level >= ROLES_LEVEL


def demands_card(requested_acr_values: str | Iterable[str] | None) -> bool:
    """Whether the request can only be met by a card sign-in (a password is not enough)."""
    return not satisfies(ACR_PASSWORD, requested_acr_values)
