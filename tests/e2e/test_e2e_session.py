"""The session lock and step-up, in Chromium through the real chain."""

from __future__ import annotations

import time
from typing import Any

from careid_broker.store import Repositories
from careid_devkit.demo import DemoChain

from .e2e_support import (
    card_sign_in_to_webmail,
    insert,
    press_card_button,
    register_directly,
    tray_post,
    wait_agent_sees,
    wait_session_ended,
    webmail_claim,
    webmail_password_sign_in,
)

LOCK_LIMIT_SECONDS = 2.0


def test_removing_the_card_ends_the_webmail_session_within_two_seconds(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001")
    card_sign_in_to_webmail(page, chain, "Alex Morgan")
    removed_at = time.monotonic()
    assert tray_post(chain, "/cards/remove")["removed"] == "555000000001"
    # Agent → POST /card/removed → broker ends the session → back-channel logout →
    # the webmail ends its session; the page says so.
    wait_session_ended(page, timeout=LOCK_LIMIT_SECONDS - (time.monotonic() - removed_at))
    elapsed = time.monotonic() - removed_at
    assert elapsed < LOCK_LIMIT_SECONDS, elapsed
    assert page.locator("#mailbox").is_hidden()
    assert "smartcard was removed" in page.get_by_role("alert").inner_text()
    wait_agent_sees(chain, None)
    # The broker's session ended too: signing in again means signing in again.
    page.get_by_role("link", name="Sign in again").click()
    page.wait_for_url(f"{chain.urls.broker}/login?**")
    assert page.locator("#card-signin-button").is_visible()


def test_step_up_from_a_password_session_asks_for_the_card_only(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    webmail_password_sign_in(page, chain, "alex.morgan")
    assert "AAL1_USERPASS" in webmail_claim(page, "acr")
    # The webmail asks for acr_values=AAL3_ANY: the broker's password session is not
    # enough, so the sign-in page offers the card and nothing else.
    page.get_by_role("button", name="Sign out").wait_for()
    page.goto(f"{chain.urls.webmail}/login?acr=AAL3_ANY")
    page.wait_for_url(f"{chain.urls.broker}/login?**")
    assert page.get_by_text("needs your NHS Care Identity smartcard").is_visible()
    assert page.get_by_label("Password", exact=True).count() == 0
    insert(chain, "555000000001")
    press_card_button(page)
    # The relying party's request was kept: back at the webmail, now by card.
    page.wait_for_url(f"{chain.urls.webmail}/")
    page.get_by_role("heading", name="Signed in as Alex Morgan").wait_for()
    assert "AAL3_SMARTCARD" in webmail_claim(page, "acr")
    assert webmail_claim(page, "amr") == "sc, pin, hwk"
