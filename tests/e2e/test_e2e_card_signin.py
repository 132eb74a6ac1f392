"""Card sign-in in Chromium: webmail → broker → agent → pcscd → vpcd → virtual card,
with each key type the agent signs with (ES256 is everywhere else in the suite)."""

from __future__ import annotations

from typing import Any

import pytest

from careid_broker.store import Repositories
from careid_devkit.demo import DemoChain, account_by_uid

from .e2e_support import (
    agent_status,
    card_sign_in_to_webmail,
    insert,
    register_directly,
    webmail_claim,
)


@pytest.mark.parametrize(("uid", "key"), [("lee.admin", "ECC P-384"), ("kim.taylor", "RSA 2048")])
def test_a_registered_card_signs_in_to_webmail(
    page: Any, chain: DemoChain, repos: Repositories, uid: str, key: str
) -> None:
    account = account_by_uid(uid)
    register_directly(repos, chain, uid, account.uuid)
    insert(chain, account.uuid)
    assert agent_status(chain)["card"]["keyAlgorithm"] == key
    card_sign_in_to_webmail(page, chain, account.name)
    assert webmail_claim(page, "uuid") == account.uuid
    assert webmail_claim(page, "email") == account.mail
    assert webmail_claim(page, "amr") == "sc, pin, hwk"
    roles = page.get_by_role("table", name="National RBAC roles from your Care Identity")
    assert account.org in roles.inner_text()
