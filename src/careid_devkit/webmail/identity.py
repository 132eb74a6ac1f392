"""From the OP's claims to the `SignedInUser` the pages show (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from careid_devkit.webmail.config import ACR_CARD, ACR_PASSWORD
from careid_devkit.webmail.errors import SignInError
from careid_devkit.webmail.sessions import Role, SignedInUser

ACR_WORDS: Mapping[str, str] = {
    ACR_CARD: "Smartcard (AAL3)",
    ACR_PASSWORD: "Password (AAL1)",
}


def acr_in_words(acr: str | None) -> str:
    """How the person signed in, in words a clinician reads."""
    if acr is None:
        return "Not stated by the sign-in service"
    return ACR_WORDS.get(acr, f"Other ({acr})")


def user_from_claims(claims: Mapping[str, Any], *, id_token: str, now: datetime) -> SignedInUser:
    """The signed-in user; `sub` is required, everything else is shown when present."""
    sub = _text(claims.get("sub"))
    if sub is None:
        raise SignInError("the ID token has no usable sub")
    amr = claims.get("amr")
    return SignedInUser(
        sub=sub,
        op_sid=_text(claims.get("sid")),
        name=_text(claims.get("name")) or _joined_name(claims) or "(no name given)",
        email=_text(claims.get("email")),
        uuid=_text(claims.get("nhsid_useruid")),
        acr=_text(claims.get("acr")),
        amr=tuple(str(v) for v in amr) if isinstance(amr, list) else (),
        roles=_roles(claims.get("nhsid_nrbac_roles")),
        signed_in_at=now,
        id_token=id_token,
        selected_roleid=_text(claims.get("selected_roleid")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _joined_name(claims: Mapping[str, Any]) -> str | None:
    parts = [_text(claims.get("given_name")), _text(claims.get("family_name"))]
    joined = " ".join(p for p in parts if p)
    return joined or None


def _roles(value: object) -> tuple[Role, ...]:
    # A role entry the page cannot show is left out rather than failing the sign-in:
    # the roles are for display here, not for access decisions.
    if not isinstance(value, list):
        return ()
    roles = []
    for entry in value:
        if not isinstance(entry, dict):
            continue
        roles.append(
            Role(
                role_code=str(entry.get("role_code", "")),
                role_name=str(entry.get("role_name", "")),
                org_code=str(entry.get("org_code", "")),
                person_roleid=str(entry.get("person_roleid", "")),
            )
        )
    return tuple(roles)
