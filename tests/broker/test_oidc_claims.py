"""The claims released per scope, in NHS CIS2's shapes (pure functions, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

from careid_broker.directory import CareIdentity, MailAccount, Role
from careid_broker.oidc.claims import (
    authentication_claims,
    claims_for_scope,
    person_role_id,
    public_sid,
    user_claims,
)
from careid_broker.oidc.discovery import provider_metadata

ACCOUNT = MailAccount(
    dn="uid=alex,ou=people,dc=nhs,dc=example",
    mail="alex.morgan@nhs.net",
    display_name="Alex Morgan",
    given_name="Alex",
    surname="Morgan",
    active=True,
    org_code="RX1",
    care_identity_uuid="555000000001",
)
ROLES = (
    Role(code="R8000", name="Clinical Practitioner", org_code="RX1"),
    Role(code="R8000", name="Clinical Practitioner", org_code="Y00001"),
)
CARD = "AAL3_SMARTCARD"
IDENTITY = CareIdentity(dn="cn=x", uuid="555000000001", active=True, status="active", roles=ROLES)


def test_every_claim_has_its_scope() -> None:
    claims = user_claims(ACCOUNT, IDENTITY, acr=CARD)
    assert claims_for_scope(claims, "openid") == {}
    assert claims_for_scope(claims, "openid profile") == {
        "name": "Alex Morgan",
        "given_name": "Alex",
        "family_name": "Morgan",
        "uid": "555000000001",
        "nhsid_useruid": "555000000001",
    }
    assert claims_for_scope(claims, "openid nhsperson") == {
        "nhsid_useruid": "555000000001",
        "name": "Alex Morgan",
        "given_name": "Alex",
        "family_name": "Morgan",
    }
    assert claims_for_scope(claims, ["email"]) == {
        "email": "alex.morgan@nhs.net",
        "email_verified": True,
    }
    roles = claims_for_scope(claims, "nationalrbacaccess")["nhsid_nrbac_roles"]
    assert [(r["role_code"], r["org_code"], r["role_name"]) for r in roles] == [
        ("R8000", "RX1", "Clinical Practitioner"),
        ("R8000", "Y00001", "Clinical Practitioner"),
    ]
    orgs = claims_for_scope(claims, "associatedorgs")["nhsid_user_orgs"]
    assert orgs == [{"org_code": "RX1"}, {"org_code": "Y00001"}]


def test_a_password_session_gets_no_roles_nor_the_organisations_they_add() -> None:
    claims = user_claims(ACCOUNT, IDENTITY, acr="AAL1_USERPASS")
    assert claims["nhsid_nrbac_roles"] == []
    assert claims["nhsid_user_orgs"] == [{"org_code": "RX1"}]  # the mail account's own
    assert claims["nhsid_useruid"] == "555000000001" and claims["email"] == ACCOUNT.mail
    # An acr the broker does not know is not strong enough either.
    assert user_claims(ACCOUNT, IDENTITY, acr="something")["nhsid_nrbac_roles"] == []


def test_person_role_ids_are_stable_distinct_and_cis2_shaped() -> None:
    first, second = (person_role_id("555000000001", role) for role in ROLES)
    assert first != second and len(first) == 12 and first.isdigit()
    assert person_role_id("555000000001", ROLES[0]) == first
    assert person_role_id("555000000002", ROLES[0]) != first


def test_an_inactive_care_identity_releases_no_roles_and_absent_values_no_nulls() -> None:
    inactive = CareIdentity(dn="cn=x", uuid="555000000006", active=False, status="x", roles=ROLES)
    bare = MailAccount(dn="uid=b", mail="b@nhs.net", display_name="B", active=True)
    claims = user_claims(bare, inactive, acr=CARD)
    assert claims["nhsid_nrbac_roles"] == [] and claims["nhsid_user_orgs"] == []
    released = claims_for_scope(claims, "openid profile email")
    assert "given_name" not in released and "family_name" not in released
    assert None not in released.values()


def test_authentication_claims_and_the_public_sid() -> None:
    when = datetime(2025, 6, 1, 12, 0, 5, 900000, tzinfo=UTC)
    card = authentication_claims(
        acr="AAL3_SMARTCARD", amr=("sc", "pin", "hwk"), auth_time=when, sid="secret-sid"
    )
    assert card == {
        "acr": "AAL3_SMARTCARD",
        "amr": ["sc", "pin", "hwk"],
        "auth_time": int(when.timestamp()),
        "sid": public_sid("secret-sid"),
        "authentication_assurance_level": "3",
    }
    # RPs never see the session id that the broker's cookie carries.
    assert "secret-sid" not in card["sid"] and public_sid("secret-sid") != public_sid("other")


def test_discovery_lists_every_released_claim() -> None:
    supported = set(provider_metadata("https://broker.example")["claims_supported"])
    claims = user_claims(ACCOUNT, IDENTITY, acr=CARD)
    claims.update(
        authentication_claims(
            acr="AAL1_USERPASS", amr=("pwd",), auth_time=datetime.now(UTC), sid="s"
        )
    )
    assert set(claims) <= supported
