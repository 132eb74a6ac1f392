"""One-time registration in Chromium, by its three steps, then the card alone signs in."""

from __future__ import annotations

from typing import Any

from careid_broker.codes import BrokerCode, message_for
from careid_broker.store import Repositories
from careid_devkit.demo import DemoChain

from .e2e_support import (
    card_refusal,
    card_sign_in_to_webmail,
    insert,
    open_webmail_sign_in,
    press_card_button,
    register_by_three_steps,
    webmail_claim,
)


def test_alex_registers_by_three_steps_then_signs_in_with_the_card_alone(
    new_page: Any, chain: DemoChain, repos: Repositories
) -> None:
    insert(chain, "555000000001")
    page = new_page()
    open_webmail_sign_in(page, chain)
    press_card_button(page)
    code, message = card_refusal(page)
    assert code == BrokerCode.CARD_NOT_REGISTERED
    assert message == message_for(BrokerCode.CARD_NOT_REGISTERED)
    # The refusal offers registration, keeping the webmail's sign-in request.
    page.locator("#card-error").get_by_role("link", name="Register your smartcard").click()
    register_by_three_steps(page, chain, "alex.morgan")
    page.get_by_role("heading", name="Signed in as Alex Morgan").wait_for()
    assert "AAL3_SMARTCARD" in webmail_claim(page, "acr")
    stored = repos.registrations.by_uuid("555000000001")
    assert stored is not None and stored.account_mail == "alex.morgan@nhs.net"

    # Another browser, another day: the card and its PIN are all it takes.
    card_sign_in_to_webmail(new_page(), chain, "Alex Morgan")
