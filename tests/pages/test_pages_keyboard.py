"""Keyboard only: signing in, registering and an administrator's removal, with Tab,
Space and Enter alone; focus always visible and never lost to the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from card_support import CardPki, register_card
from flask import Flask
from page_site import ORIGIN, FakeAgent

from careid_broker.web.context import broker_of

ALEX = "alex.morgan@nhs.net"
LEE = "lee.admin@nhs.net"
PASSWORD = "Demo-Password-1"
OpenPage = Callable[..., tuple[Any, FakeAgent]]


def focused_id(page: Any) -> str:
    return str(page.evaluate("() => document.activeElement.id || document.activeElement.tagName"))


def tab_to(page: Any, element_id: str, limit: int = 40) -> None:
    """Press Tab until the element has focus (fails if it never does)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused_id(page) == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def focus_outline(page: Any) -> str:
    return str(
        page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement);"
            " return s.outlineStyle + ' ' + s.outlineWidth + ' ' + s.outlineColor; }"
        )
    )


def test_sign_in_with_a_password_by_keyboard(open_page: OpenPage) -> None:
    page, _agent = open_page()
    page.goto(f"{ORIGIN}/login")
    tab_to(page, "email")
    assert focus_outline(page) == "solid 3px rgb(33, 43, 50)"
    page.keyboard.type(ALEX)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="You are signed in").wait_for()
    # The way out is reachable by keyboard too.
    tab_to(page, "header-signout")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="You have signed out").wait_for()


def test_the_card_button_keeps_focus_and_says_it_is_waiting_for_the_pin(
    open_page: OpenPage,
) -> None:
    page, agent = open_page()
    agent.mode = "hold"
    page.goto(f"{ORIGIN}/login")
    tab_to(page, "card-signin-button")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#card-status').textContent.includes('PIN')"
    )
    button = page.locator("#card-signin-button")
    assert button.get_attribute("aria-disabled") == "true"
    assert "button-waiting" in (button.get_attribute("class") or "")
    assert focused_id(page) == "card-signin-button"
    page.keyboard.press("Enter")  # a second press starts nothing
    assert len(agent.held) == 1


def test_a_card_error_says_error_in_the_title(open_page: OpenPage) -> None:
    page, _agent = open_page()
    page.goto(f"{ORIGIN}/login")
    tab_to(page, "card-signin-button")
    page.keyboard.press("Enter")
    page.locator("#card-error").wait_for(state="visible")
    assert page.title().startswith("Error: Sign in")
    assert focused_id(page) == "card-error"
    assert page.locator("#card-error-link").inner_text() == (
        "How to install or start the smartcard agent"
    )


def test_register_by_keyboard(open_page: OpenPage, card_pki: CardPki, page_app: Flask) -> None:
    page, agent = open_page()
    agent.use_card(card_pki.agent("alex"))
    page.goto(f"{ORIGIN}/register")
    tab_to(page, "email")
    page.keyboard.type(ALEX)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.locator('#check-agent[data-state="ok"]').wait_for()
    tab_to(page, "register-card-button")
    page.keyboard.press("Enter")
    page.locator("#register-confirm-button").wait_for()
    # Step 3: the two actions apart, Cancel the lesser one.
    confirm = page.locator("#register-confirm-button").bounding_box()
    cancel = page.locator("#register-cancel-button").bounding_box()
    apart = max(
        cancel["x"] - (confirm["x"] + confirm["width"]),
        cancel["y"] - (confirm["y"] + confirm["height"]),
    )
    assert apart >= 16, (confirm, cancel)
    tab_to(page, "register-confirm-button")
    page.keyboard.press("Enter")
    page.locator("#register-done-heading").wait_for()
    assert broker_of(page_app).repos.registrations.by_mail(ALEX) is not None


def test_remove_a_registration_by_keyboard(
    open_page: OpenPage, card_pki: CardPki, page_app: Flask
) -> None:
    register_card(page_app, card_pki.agent("alex"), ALEX)
    page, _agent = open_page()
    page.goto(f"{ORIGIN}/_test/signin?mail={LEE}&method=card")
    page.goto(f"{ORIGIN}/admin/users/{ALEX}/remove")
    tab_to(page, "reason-lost_card")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")  # "Another reason", with no words yet
    assert focused_id(page) == "reason-other"
    assert focus_outline(page) == "solid 3px rgb(33, 43, 50)"
    tab_to(page, "remove-continue")
    page.keyboard.press("Enter")
    # `autofocus` is applied at the browser's next rendering step, not as the element
    # appears: wait for the focus itself (bounded) rather than race it.
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.id === 'error-summary'",
        timeout=5000,
    )
    assert focused_id(page) == "error-summary"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the summary's link, to the box that needs words
    assert focused_id(page) == "reason-text"
    assert focus_outline(page) == "solid 3px rgb(33, 43, 50)"
    page.keyboard.type("Card left in a returned laptop")
    tab_to(page, "remove-continue")
    page.keyboard.press("Enter")
    page.locator("#confirm-remove").wait_for()
    tab_to(page, "confirm-remove")
    page.keyboard.press("Enter")
    page.locator("#admin-notice").wait_for()
    assert broker_of(page_app).repos.registrations.by_mail(ALEX) is None
