"""The chain itself in Chromium: password sign-in to the webmail through the real broker,
the card tray's page driving the real reader, and the agent seeing the cards."""

from __future__ import annotations

from typing import Any

from careid_devkit.demo import DemoChain

from .e2e_support import agent_status, card_guid, wait_agent_sees, webmail_password_sign_in


def test_password_sign_in_to_webmail_through_the_broker(page: Any, chain: DemoChain) -> None:
    csp_reports: list[str] = []
    page.on(
        "console",
        lambda message: (
            csp_reports.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    webmail_password_sign_in(page, chain, "alex.morgan")
    assert page.locator("[data-claim=email]").inner_text() == "alex.morgan@nhs.net"
    assert page.locator("[data-claim=uuid]").inner_text() == "555000000001"
    assert "AAL1_USERPASS" in page.locator("[data-claim=acr]").inner_text()
    # Roles come only after a smartcard sign-in (AAL2 or better), not a password.
    assert "It sends them only after a smartcard sign-in." in page.locator("main").inner_text()
    # Sign out goes through the broker (RP-initiated logout) and back.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{chain.urls.webmail}/?**")
    assert page.get_by_role("status").inner_text().startswith("You have signed out")
    assert csp_reports == []


def test_the_tray_page_moves_cards_in_and_out_of_the_reader(page: Any, chain: DemoChain) -> None:
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text))
    page.goto(f"{chain.urls.tray}/")
    assert page.get_by_role("table", name="Demo cards").is_visible()
    lee = chain.tray.card("555000000004")
    page.get_by_role("button", name="Insert the card of Lee Admin (555000000004)").click()
    page.get_by_text("Inserted 555000000004").wait_for()
    # The agent reads the card through pcscd: holder, UUID and key type from the card.
    wait_agent_sees(chain, lee)
    card = agent_status(chain)["card"]
    assert (card["holderName"], card["uuid"], card["keyAlgorithm"]) == (
        "Lee Admin",
        "555000000004",
        "ECC P-384",
    )
    assert page.locator("#reader-card").inner_text() == "Lee Admin (555000000004)"
    # Inserting another card takes Lee's out first: the agent sees a new card.
    page.get_by_role("button", name="Insert the card of Kim Taylor (555000000005)").click()
    page.get_by_text("Inserted 555000000005").wait_for()
    kim = chain.tray.card("555000000005")
    wait_agent_sees(chain, kim)
    assert agent_status(chain)["card"]["cardId"] == card_guid(kim)
    page.get_by_role("button", name="Remove the card").click()
    page.get_by_text("Removed 555000000005").wait_for()
    wait_agent_sees(chain, None)
    assert chain.tray.inserted is None
    assert problems == []  # no CSP report, no script error
