"""Issue 6 in Chromium: a local administrator removes a registration, and what follows."""

from __future__ import annotations

from typing import Any

from careid_broker.codes import BrokerCode
from careid_broker.store import Repositories
from careid_devkit.demo import DemoChain

from .e2e_support import (
    card_refusal,
    insert,
    open_webmail_sign_in,
    press_card_button,
    register_by_three_steps,
    register_directly,
    wait_session_ended,
    webmail_claim,
    webmail_password_sign_in,
)


def admin_card_sign_in(page: Any, chain: DemoChain) -> None:
    """/admin → the sign-in page's card option → signed in by card → back in the console."""
    page.goto(f"{chain.urls.broker}/admin")
    page.wait_for_url(f"{chain.urls.broker}/login?card=required**")
    assert page.get_by_label("Password", exact=True).count() == 0
    press_card_button(page)
    page.wait_for_url(f"{chain.urls.broker}/admin**", timeout=5000)


def test_the_console_brings_the_administrator_back_after_the_card(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "lee.admin", "555000000004")
    insert(chain, "555000000004")
    admin_card_sign_in(page, chain)
    assert page.locator("#admin-search").count() == 1


def test_lee_removes_alexs_registration_and_alex_registers_again(
    new_page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "lee.admin", "555000000004")
    register_directly(repos, chain, "alex.morgan", "555000000001")
    # Alex is reading mail (one reader: Lee's card will be in it, so Alex used a password).
    alex = new_page()
    webmail_password_sign_in(alex, chain, "alex.morgan")

    # Lee opens the console: it wants a card session, so the card it is.
    lee = new_page()
    insert(chain, "555000000004")
    admin_card_sign_in(lee, chain)
    assert lee.locator("#admin-signed-in-as").inner_text() in ("Lee Admin", "lee.admin@nhs.net")
    lee.get_by_label("Name, email address or Care Identity UUID").fill("Alex")
    lee.locator("#admin-search-button").click()
    lee.get_by_role("link", name="Alex Morgan").click()
    assert lee.locator("#admin-registration-uuid").inner_text() == "555000000001"
    lee.locator("#remove-registration").click()
    lee.get_by_label("The smartcard was lost, stolen or damaged").check()
    lee.locator("#remove-continue").click()
    assert "lost" in lee.locator("#admin-confirm-reason").inner_text()
    lee.locator("#confirm-remove").click()
    notice = lee.locator("#admin-notice").inner_text()
    assert "registration was removed" in notice and "1 signed-in session ended" in notice
    assert lee.locator("#admin-no-registration").is_visible()

    # Alex's webmail session ends (back-channel logout), ...
    wait_session_ended(alex, timeout=5.0)
    assert repos.registrations.by_uuid("555000000001") is None
    # ... Alex's card no longer signs in, ...
    insert(chain, "555000000001")
    card = new_page()
    open_webmail_sign_in(card, chain)
    press_card_button(card)
    assert card_refusal(card)[0] == BrokerCode.CARD_NOT_REGISTERED
    # ... and Alex can register again, by the same three steps.
    card.locator("#card-error").get_by_role("link", name="Register your smartcard").click()
    register_by_three_steps(card, chain, "alex.morgan")
    card.get_by_role("heading", name="Signed in as Alex Morgan").wait_for()
    assert "AAL3_SMARTCARD" in webmail_claim(card, "acr")
