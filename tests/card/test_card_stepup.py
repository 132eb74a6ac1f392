"""Step-up to the card for broker pages (the admin console): back to where it asked."""

from __future__ import annotations

from broker_support import password_login
from card_support import LEE, CardBrowser, CardPki, page_csrf, register_card
from flask import Flask


def test_a_password_session_steps_up_by_card_and_returns_to_the_page_that_asked(
    card_app: Flask, card_pki: CardPki
) -> None:
    agent = card_pki.agent("lee")
    register_card(card_app, agent, LEE[0])
    client = card_app.test_client()
    assert password_login(client, LEE[0]).status_code == 303

    page = client.get("/login", query_string={"card": "required", "next": "/admin"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    # The password session does not satisfy the request: only the card is offered.
    assert 'id="card-signin-button"' in text
    assert 'name="password"' not in text

    card = CardBrowser(client)
    card.csrf = page_csrf(text)
    answer = card.sign_in(agent)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["redirect"] == "/admin"
    # The continuation is used once.
    assert client.get("/login").status_code == 200


def test_next_never_leaves_the_broker(card_app: Flask, card_pki: CardPki) -> None:
    agent = card_pki.agent("lee")
    register_card(card_app, agent, LEE[0])
    for target in ("//evil.example/admin", "https://evil.example/", "/\\evil.example", "admin"):
        client = card_app.test_client()
        card = CardBrowser(client)
        card.open_login(None, card="required", next=target)
        answer = card.sign_in(agent)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.get_json()["redirect"] == "/login", target
