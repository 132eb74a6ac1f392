"""check_account / check_care_identity rules on hand-made records (no server)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from careid_broker.codes import BrokerCode
from careid_broker.directory import (
    CareIdentity,
    MailAccount,
    account_refusals,
    check_account,
    check_care_identity,
)
from careid_broker.errors import (
    AccountDisabledError,
    AccountExpiredError,
    AupNotAcceptedError,
    CareIdentityInactiveError,
    CareIdentityNotFoundError,
    DirectoryDataError,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GOOD = MailAccount(
    dn="uid=a,ou=people,dc=x",
    mail="a@nhs.net",
    display_name="A",
    active=True,
    aup_version="2024-1",
    org_code="RX1",
)


def _check(account: MailAccount, version: str = "2024-1") -> None:
    check_account(account, now=NOW, current_aup_version=version)


def test_a_good_account_passes() -> None:
    _check(GOOD)
    _check(replace(GOOD, aup_version=" 2024-1 "))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"active": False}, AccountDisabledError),
        ({"expires": NOW}, AccountExpiredError),  # expiry is exclusive: at that instant, gone
        ({"expires": datetime(2020, 1, 1, tzinfo=UTC)}, AccountExpiredError),
        ({"aup_version": None}, AupNotAcceptedError),
        ({"aup_version": "2022-1"}, AupNotAcceptedError),
        ({"problems": ("careidAccountExpires: not a time",)}, DirectoryDataError),
    ],
)
def test_each_refusal(changes: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        _check(replace(GOOD, **changes))  # type: ignore[arg-type]


def test_a_future_expiry_passes() -> None:
    _check(replace(GOOD, expires=datetime(2025, 6, 1, 12, 0, 1, tzinfo=UTC)))


def test_all_refusals_are_listed_most_fundamental_first() -> None:
    bad = replace(GOOD, active=False, aup_version=None, expires=NOW, problems=("x",))
    codes = [r.code for r in account_refusals(bad, now=NOW, current_aup_version="2024-1")]
    assert codes == [
        BrokerCode.DIRECTORY_DATA_INVALID,
        BrokerCode.ACCOUNT_DISABLED,
        BrokerCode.ACCOUNT_EXPIRED,
        BrokerCode.AUP_NOT_ACCEPTED,
    ]
    with pytest.raises(DirectoryDataError):
        _check(bad)


def test_aup_message_tells_the_user_what_to_do() -> None:
    with pytest.raises(AupNotAcceptedError) as caught:
        _check(replace(GOOD, aup_version=None))
    assert caught.value.message.startswith(
        "You need to accept the NHSmail acceptable use policy before you can sign in."
    )


def test_care_identity_checks() -> None:
    active = CareIdentity(dn="d", uuid="555000000001", active=True, status="active")
    assert check_care_identity(active) is active
    with pytest.raises(CareIdentityInactiveError):
        check_care_identity(replace(active, active=False, status="inactive"))
    with pytest.raises(CareIdentityNotFoundError):
        check_care_identity(None)


def test_admin_rights() -> None:
    admin = replace(GOOD, admin_org_codes=("RX1", "Y00001"))
    assert admin.is_admin_for("y00001")
    assert not admin.is_admin_for("RX2")
    assert not GOOD.is_admin_for("RX1")
