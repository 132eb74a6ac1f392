"""The claims the broker releases, named after NHS CIS2 Authentication where it names one.

At sign-in the user's claims are taken from the directory once (`user_claims`) and kept
with the authorization code; the ID token and userinfo release the subset the granted
scopes allow (`claims_for_scope`). `sub` is the store's stable opaque subject, never
the email address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from careid_broker import assurance
from careid_broker.directory import CareIdentity, MailAccount, Role

# Which claims each scope releases (OIDC Core §5.4 for profile/email; CIS2 for the rest).
# The ID token carries them too (as CIS2's does), and userinfo.
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "profile": ("name", "given_name", "family_name", "uid", "nhsid_useruid"),
    "email": ("email", "email_verified"),
    "nhsperson": ("nhsid_useruid", "name", "given_name", "family_name"),
    "nationalrbacaccess": ("nhsid_nrbac_roles",),
    "associatedorgs": ("nhsid_user_orgs",),
    "selectedrole": ("selected_roleid", "selected_role_org_code", "selected_role_org_name"),
}

# Claims about the authentication event, always in the ID token.
ASSURANCE_LEVELS: Mapping[str, str] = {"AAL1_USERPASS": "1", "AAL3_SMARTCARD": "3"}

CLAIMS_SUPPORTED: tuple[str, ...] = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "at_hash",
    "authentication_assurance_level",
    *dict.fromkeys(claim for claims in SCOPE_CLAIMS.values() for claim in claims),
)


def person_role_id(uuid: str, role: Role) -> str:
    """A stable 12-digit id for one role assignment (CIS2 `person_roleid`).

    The directory has no id of its own for an assignment, so it is derived from what
    identifies one — the person, the role and the organisation — and stays the same
    across sign-ins, which is what RPs use it for (remembering a selected role).
    """
    material = f"{uuid}|{role.org_code.upper()}|{role.code.upper()}".encode()
    return str(int.from_bytes(hashlib.sha256(material).digest()[:8], "big") % 10**12).zfill(12)


def nrbac_roles(
    identity: CareIdentity | None, org_names: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """`nhsid_nrbac_roles`: the active Care Identity's roles, in CIS2's shape.

    `org_name` is added where `org_names` (by upper-case ODS code) knows it.
    """
    if identity is None or not identity.active:
        return []
    names = org_names or {}
    roles: list[dict[str, str]] = []
    for role in identity.roles:
        entry = {
            "person_roleid": person_role_id(identity.uuid, role),
            "org_code": role.org_code,
            "role_name": role.name,
            "role_code": role.code,
        }
        if (name := names.get(role.org_code.upper())) is not None:
            entry["org_name"] = name
        roles.append(entry)
    return roles


def selected_role_claims(role: Mapping[str, str]) -> dict[str, str]:
    """The `selectedrole` claims for one entry of `nhsid_nrbac_roles`."""
    claims = {"selected_roleid": role["person_roleid"], "selected_role_org_code": role["org_code"]}
    if role.get("org_name"):
        claims["selected_role_org_name"] = role["org_name"]
    return claims


def user_orgs(
    account: MailAccount,
    identity: CareIdentity | None,
    org_names: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """`nhsid_user_orgs`: the account's organisation, then those of its roles."""
    codes: list[str] = []
    if account.org_code:
        codes.append(account.org_code)
    if identity is not None and identity.active:
        codes.extend(role.org_code for role in identity.roles)
    seen: dict[str, None] = {}
    for code in codes:
        seen.setdefault(code.upper(), None)
    # The directory holds ODS codes, not names: `org_name` (which CIS2 also sends) comes
    # from [oidc] organisations_file, and is left out rather than sent empty.
    names = org_names or {}
    orgs: list[dict[str, str]] = []
    for code in seen:
        entry = {"org_code": code}
        if (name := names.get(code)) is not None:
            entry["org_name"] = name
        orgs.append(entry)
    return orgs


def user_claims(
    account: MailAccount,
    identity: CareIdentity | None,
    org_names: Mapping[str, str] | None = None,
    *,
    acr: str,
) -> dict[str, Any]:
    """Every scope-governed claim about the user, from the directory (no `sub`), for a
    session of `acr`.

    A session below `assurance.ROLES_LEVEL` (a password) gets no roles: an empty
    `nhsid_nrbac_roles`, and `nhsid_user_orgs` with the mail account's organisation
    only, since CIS2 Authentication, whose relying parties read roles without asking
    for an acr, releases them only after an AAL2 or AAL3 sign-in. With no roles there
    is no role to choose, so no `selectedrole` claims either. The `selectedrole` claims
    are added once a role is chosen (`selected_role_claims`).
    """
    roles_from = identity if assurance.releases_roles(acr) else None
    claims: dict[str, Any] = {
        "name": account.display_name,
        "email": account.mail,
        # The address is the directory's own mail attribute, not user-asserted.
        "email_verified": True,
        "nhsid_nrbac_roles": nrbac_roles(roles_from, org_names),
        "nhsid_user_orgs": user_orgs(account, roles_from, org_names),
    }
    if account.given_name:
        claims["given_name"] = account.given_name
    if account.surname:
        claims["family_name"] = account.surname
    uuid = identity.uuid if identity is not None else account.care_identity_uuid
    if uuid:
        # CIS2 names the Care Identity UUID `uid` under profile and `nhsid_useruid`.
        claims["nhsid_useruid"] = uuid
        claims["uid"] = uuid
    return claims


def scope_values(scope: str | Iterable[str]) -> list[str]:
    """Scope values in order, without repeats."""
    values = scope.split() if isinstance(scope, str) else list(scope)
    return list(dict.fromkeys(values))


def claims_for_scope(claims: Mapping[str, Any], scope: str | Iterable[str]) -> dict[str, Any]:
    """The subset of `claims` the scope releases; absent values are left out, not null."""
    released: dict[str, Any] = {}
    for value in scope_values(scope):
        for name in SCOPE_CLAIMS.get(value, ()):
            if claims.get(name) is not None:
                released[name] = claims[name]
    return released


def authentication_claims(
    *, acr: str, amr: Iterable[str], auth_time: datetime, sid: str
) -> dict[str, Any]:
    """The ID token's claims about the sign-in itself."""
    claims: dict[str, Any] = {
        "acr": acr,
        "amr": list(amr),
        "auth_time": int(auth_time.timestamp()),
        "sid": public_sid(sid),
    }
    level = ASSURANCE_LEVELS.get(acr)
    if level is not None:
        claims["authentication_assurance_level"] = level
    return claims


def public_sid(sid: str) -> str:
    """The session id as RPs see it (ID token and logout token `sid`).

    Not the store's sid itself: that names the browser's session at the broker, and
    an RP — or anyone reading its logs — must not learn a value that might be
    replayed as the broker's session cookie. A hash is stable, so the ID token and a
    later logout token carry the same `sid`, and it cannot be reversed.
    """
    digest = hashlib.sha256(b"careid-oidc-sid\x00" + sid.encode("utf-8")).digest()
    return digest[:24].hex()
