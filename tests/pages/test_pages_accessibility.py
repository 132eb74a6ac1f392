"""Every broker, registration and admin page state, errors included, checked in
Chromium: no WCAG 2.2 AA violation by axe-core, and no sideways scrolling at 375 px.

Each state is reached the way a person reaches it (forms filled, buttons pressed, the
page's own script run); the agent is the test's (`FakeAgent`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from broker_support import install_test_signin
from card_support import CardPki, register_card
from flask import Flask
from page_site import (
    ORIGIN,
    PHONE_WIDTH,
    FakeAgent,
    axe_violations,
    sideways_overflow,
)

from careid_broker.store import Outcome
from careid_broker.web.context import broker_of

ALEX = "alex.morgan@nhs.net"
SAM = "sam.patel@nhs.net"
LEE = "lee.admin@nhs.net"
PASSWORD = "Demo-Password-1"


def sign_in(page: Any, mail: str, method: str = "card") -> None:
    page.goto(f"{ORIGIN}/_test/signin?mail={mail}&method={method}")


def password_form(page: Any, mail: str, password: str) -> None:
    page.get_by_role("textbox", name="Email address").fill(mail)
    page.get_by_label("Password", exact=True).fill(password)


def _login(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login")


def _login_incomplete(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.locator(".error-summary").first.wait_for()


def _login_wrong_password(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login")
    password_form(page, ALEX, "not-the-password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.locator(".error-summary").first.wait_for()


def _login_agent_unreachable(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login")
    page.locator("#card-signin-button").click()
    page.locator("#card-error").wait_for(state="visible")


def _login_card_not_registered(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    agent.use_card(pki.agent("alex"))
    page.goto(f"{ORIGIN}/login")
    page.locator("#card-signin-button").click()
    page.locator("#card-error").wait_for(state="visible")


def _login_pin_wait(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    agent.mode = "hold"
    page.goto(f"{ORIGIN}/login")
    page.locator("#card-signin-button").click()
    page.locator("#card-status").wait_for(state="visible")
    page.wait_for_function(
        "() => document.querySelector('#card-status').textContent.includes('PIN')"
    )


def _signed_in(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    sign_in(page, ALEX)
    page.goto(f"{ORIGIN}/login")


def _signout_ask(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    sign_in(page, ALEX)
    page.goto(f"{ORIGIN}/signout")


def _signout_done(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    sign_in(page, ALEX)
    page.goto(f"{ORIGIN}/signout")
    page.locator("#signout-every-service").click()
    page.get_by_role("heading", name="You have signed out").wait_for()


def _logout_refused(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    sign_in(page, ALEX)
    page.goto(f"{ORIGIN}/logout?id_token_hint=not.a.token")


def _agent_help(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/card/agent-help")


def _not_found(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/no-such-page")


def _page_expired(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login")
    # Signing in and out in another tab replaces the browser's form token.
    other = page.context.new_page()
    sign_in(other, ALEX)
    other.goto(f"{ORIGIN}/signout")
    other.locator("#signout-every-service").click()
    # Let the signed-out page finish loading: closing a page whose requests are still
    # being answered by the in-process site has stalled a run.
    other.get_by_role("heading", name="You have signed out").wait_for()
    other.wait_for_load_state("load")
    other.close()
    password_form(page, ALEX, PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("[data-error-code=csrf_invalid]").first.wait_for()


def _register_start(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/register")
    page.locator('#check-agent[data-state="problem"]').wait_for()


def _register_incomplete(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/register")
    page.locator("#register-password-button").click()
    page.locator(".error-summary").first.wait_for()


def _register_prerequisites(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/register")
    password_form(page, SAM, PASSWORD)
    page.locator("#register-password-button").click()
    page.locator("#register-problems").wait_for()
    page.locator('#check-agent[data-state="problem"]').wait_for()


def _register_card_step(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    page.goto(f"{ORIGIN}/register")
    password_form(page, ALEX, PASSWORD)
    page.locator("#register-password-button").click()
    page.locator("#register-card-button").click()
    page.locator("#card-error").wait_for(state="visible")


def _register_confirm(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    agent.use_card(pki.agent("alex"))
    page.goto(f"{ORIGIN}/register")
    password_form(page, ALEX, PASSWORD)
    page.locator("#register-password-button").click()
    page.locator('#check-agent[data-state="ok"]').wait_for()
    page.locator("#register-card-button").click()
    page.locator("#register-confirm-button").wait_for()


def _register_done(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    _register_confirm(page, agent, pki, app)
    page.locator("#register-confirm-button").click()
    page.locator("#register-done-heading").wait_for()


def _admin_home(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    register_card(app, pki.agent("alex"), ALEX)
    sign_in(page, LEE)
    page.goto(f"{ORIGIN}/admin?q=alex")


def _admin_user(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    register_card(app, pki.agent("alex"), ALEX)
    _failed_card_attempt(app)
    sign_in(page, ALEX)
    sign_in(page, LEE)
    page.goto(f"{ORIGIN}/admin/users/{ALEX}")


def _admin_user_without_aup(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    sign_in(page, LEE)
    page.goto(f"{ORIGIN}/admin/users/{SAM}")


def _admin_remove_error(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    register_card(app, pki.agent("alex"), ALEX)
    sign_in(page, LEE)
    page.goto(f"{ORIGIN}/admin/users/{ALEX}/remove")
    page.get_by_label("Another reason", exact=True).check()
    page.locator("#remove-continue").click()
    page.locator(".error-summary").wait_for()


def _admin_confirm_and_removed(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    register_card(app, pki.agent("alex"), ALEX)
    sign_in(page, LEE)
    page.goto(f"{ORIGIN}/admin/users/{ALEX}/remove")
    page.get_by_label("The smartcard was lost, stolen or damaged").check()
    page.locator("#remove-continue").click()
    page.locator("#confirm-remove").wait_for()


def _admin_removed(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    _admin_confirm_and_removed(page, agent, pki, app)
    page.locator("#confirm-remove").click()
    page.locator("#admin-notice").wait_for()


def _admin_denied(page: Any, agent: FakeAgent, pki: CardPki, app: Flask) -> None:
    sign_in(page, ALEX)
    page.goto(f"{ORIGIN}/admin")


def _failed_card_attempt(app: Flask) -> None:
    # A revoked card tried at the sign-in page leaves this row (web/card.py's audit).
    broker_of(app).audit(
        "signin.card",
        outcome=Outcome.FAILURE,
        code="certificate_revoked",
        subject="555000000001",
        details={"uuid": "555000000001", "cert_serial": "01"},
    )


STATES: dict[str, Callable[[Any, FakeAgent, CardPki, Flask], None]] = {
    "login": _login,
    "login, fields missing": _login_incomplete,
    "login, wrong password": _login_wrong_password,
    "login, agent not running": _login_agent_unreachable,
    "login, card not registered": _login_card_not_registered,
    "login, waiting for the PIN": _login_pin_wait,
    "signed in": _signed_in,
    "sign out, asked": _signout_ask,
    "sign out, done": _signout_done,
    "sign-out request refused": _logout_refused,
    "agent help": _agent_help,
    "page not found": _not_found,
    "page expired": _page_expired,
    "register, step 1": _register_start,
    "register, step 1 fields missing": _register_incomplete,
    "register, prerequisites missing": _register_prerequisites,
    "register, step 2 agent not running": _register_card_step,
    "register, step 3": _register_confirm,
    "register, done": _register_done,
    "admin, search results": _admin_home,
    "admin, person": _admin_user,
    "admin, person without the AUP": _admin_user_without_aup,
    "admin, removal reason missing": _admin_remove_error,
    "admin, confirm removal": _admin_confirm_and_removed,
    "admin, removed": _admin_removed,
    "admin, not an administrator": _admin_denied,
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("width", [1024, PHONE_WIDTH])
def test_no_wcag_violation_and_no_sideways_scrolling(
    open_page: Callable[..., tuple[Any, FakeAgent]],
    card_pki: CardPki,
    page_app: Flask,
    state: str,
    width: int,
) -> None:
    page, agent = open_page(width=width)
    STATES[state](page, agent, card_pki, page_app)
    assert axe_violations(page) == []
    if width == PHONE_WIDTH:
        assert sideways_overflow(page) == 0, page.url


# Pages that need a person with several roles, or a directory that records the AUP.

ROBIN = "robin.hale@nhs.net"  # a locum: three roles


def _role_page(page: Any, app: Flask) -> None:
    sign_in(page, ROBIN)
    location = _authorize_for(
        page,
        app,
        "response_type=code&client_id=rp&redirect_uri=https%3A%2F%2Frp.example.test%2Fcallback"
        "&scope=openid%20selectedrole&state=s&nonce=n"
        "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
    )
    assert location.startswith("/authorize/role?tx="), location
    page.goto(f"{ORIGIN}{location}")
    page.get_by_role("heading", name="Choose your role").wait_for()


def _authorize_for(page: Any, app: Flask, query: str) -> str:
    """A relying party's request to /authorize, answered for this browser; where it
    sends the browser. The in-process routing cannot follow a redirect in the browser,
    so the request is made here with the browser's cookies, and the cookies the answer
    sets (the sign-in it starts is bound to them) are handed back to the browser."""
    client = app.test_client(use_cookies=False)
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies(ORIGIN))
    started = client.get(f"/authorize?{query}", base_url=ORIGIN, headers={"Cookie": cookies})
    assert started.status_code == 302, started.get_data(as_text=True)
    for header in started.headers.getlist("Set-Cookie"):
        name, value = header.split(";", 1)[0].split("=", 1)
        page.context.add_cookies([{"name": name, "value": value, "url": ORIGIN}])
    return str(started.headers["Location"])


def _role_page_none_chosen(page: Any, app: Flask) -> None:
    _role_page(page, app)
    page.get_by_role("button", name="Continue").click()
    page.locator("[data-error-code=oidc_role_not_chosen]").first.wait_for()


def _aup_accept_here(page: Any, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login")
    password_form(page, SAM, PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#aup-accept-button").wait_for()


def _aup_by_password_for_a_card(page: Any, app: Flask) -> None:
    page.goto(f"{ORIGIN}/login/aup")
    page.get_by_label("Password", exact=True).wait_for()


MORE_STATES: dict[str, tuple[Callable[[Any, Flask], None], dict[str, Any]]] = {
    "choose a role": (_role_page, {}),
    "choose a role, none chosen": (_role_page_none_chosen, {}),
    "AUP, accept it here": (_aup_accept_here, {"directory": {"writable": True}}),
    "AUP, by password for a card": (_aup_by_password_for_a_card, {"directory": {"writable": True}}),
}


@pytest.mark.parametrize("state", list(MORE_STATES))
@pytest.mark.parametrize("width", [1024, PHONE_WIDTH])
def test_role_and_policy_pages_have_no_wcag_violation_and_fit_a_phone(
    open_page: Callable[..., tuple[Any, FakeAgent]],
    card_app_factory: Callable[..., Flask],
    state: str,
    width: int,
) -> None:
    reach, settings = MORE_STATES[state]
    app = card_app_factory(**settings)
    install_test_signin(app)
    page, _ = open_page(width=width, app=app)
    reach(page, app)
    assert axe_violations(page) == []
    if width == PHONE_WIDTH:
        assert sideways_overflow(page) == 0, page.url
