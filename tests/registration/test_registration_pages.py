"""The registration pages: labelled fields, the three steps, this computer's checks, and
stable ids for the end-to-end tests; scripts only from the broker (strict CSP)."""

from __future__ import annotations

import re

from card_support import ALEX, CardBrowser, CardPki
from flask import Flask

START_IDS = (
    "register-password-form",
    "email",
    "password",
    "register-password-button",
    "register-steps",
    "register-checks",
    "check-browser",
    "check-agent",
    "register-texts",
)


def test_step_one_has_labelled_fields_and_the_computer_checks(card_app: Flask) -> None:
    response = card_app.test_client().get("/register")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for element_id in START_IDS:
        assert f'id="{element_id}"' in page, element_id
    assert '<label class="label" for="email">Email address</label>' in page
    assert '<label class="label" for="password">Password</label>' in page
    assert 'aria-current="step"' in page
    # Before the script runs, the checks say what the browser lacks.
    assert re.search(r'id="check-browser" data-state="problem">[^<]*JavaScript', page)
    assert 'data-agent-url="http://127.0.0.1:47600"' in page
    assert "/static/card-signin.js" in page and "/static/register.js" in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    csp = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' http://127.0.0.1:47600" in csp


def test_the_confirm_and_done_pages_carry_their_ids(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    card_browser.register_card(card_pki.agent("alex"))
    confirm = card_browser.client.get("/register/confirm").get_data(as_text=True)
    for element_id in (
        "register-summary",
        "confirm-holder-name",
        "confirm-uuid",
        "confirm-account-name",
        "confirm-account-mail",
        "register-confirm-button",
        "register-cancel-button",
    ):
        assert f'id="{element_id}"' in confirm, element_id
    done = card_browser.register_confirm().get_data(as_text=True)
    for element_id in ("register-done", "register-lock-status", "register-continue-link"):
        assert f'id="{element_id}"' in done, element_id


def test_the_pages_that_check_the_agent_carry_its_messages_and_link_text(
    card_app: Flask, card_browser: CardBrowser
) -> None:
    """ "Agent not running" is said in words with a named link, on every page that
    checks this computer (the script reads both from the page)."""
    card_browser.register_password("sam.patel@nhs.net")  # prerequisites page
    for path in ("/register/card", "/register"):
        client = card_browser.client if path == "/register/card" else card_app.test_client()
        page = client.get(path).get_data(as_text=True)
        assert page.count('id="card-texts"') == 1, path
        assert re.search(r'data-code="agent_unreachable">The smartcard agent is not', page), path
        assert 'data-text="install-link">How to install or start' in page, path


def test_step_three_is_a_summary_list_with_cancel_as_the_lesser_action(
    card_app: Flask, card_pki: CardPki, card_browser: CardBrowser
) -> None:
    card_browser.register_password(ALEX[0])
    card_browser.register_card(card_pki.agent("alex"))
    page = card_browser.client.get("/register/confirm").get_data(as_text=True)
    assert '<dl class="summary-list" id="register-summary">' in page and "<table" not in page
    assert '<dt>Card holder</dt><dd id="confirm-holder-name">' in page
    assert 'class="button-link" id="register-cancel-button"' in page
    group = page.split('<div class="button-group">', 1)[1].split("</div>", 1)[0]
    assert "register-confirm-button" in group and "register-cancel-button" in group
