"""The pages' scripts in a real browser (Debian's Chromium driven by Playwright): the
broker's app on a loopback port and a stand-in agent speaking the agent's HTTP API
(CORS and all) with a software card. The whole chain with the real agent, PC/SC and the
virtual card is tests/e2e; this checks card-signin.js and register.js themselves, fast.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from broker_support import broker_of
from card_fixtures import CardAppFactory
from card_support import ALEX, CardPki, SimulatedAgent, last_audit, register_card
from flask import Flask
from werkzeug.serving import make_server

from support.browser import fresh_page, launched_chromium

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StandInAgent:
    """The agent's HTTP API on 127.0.0.1 for one origin, signing with a software card."""

    origin: str
    card: SimulatedAgent | None = None
    refusal: tuple[int, dict[str, Any]] | None = None
    card_sessions: list[str] = field(default_factory=list)
    port: int = 0
    #: The signing handle to answer in the CareId-Signing header (None: an older agent).
    signing: str | None = None
    #: Refuse card-session bodies with members other than cardSession, as older agents do.
    strict: bool = False
    card_session_bodies: list[dict[str, Any]] = field(default_factory=list)
    #: How the agent fails to take a card session: an answer (status, body) it refuses
    #: with, or "gone" (it stopped between the signing and the hand-over).
    session_failure: tuple[int, dict[str, Any]] | str | None = None

    def __post_init__(self) -> None:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def _send(
                self, status: int, body: dict[str, Any] | None, extra: dict[str, str] | None = None
            ) -> None:
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                if self.headers.get("Origin") == agent.origin:
                    self.send_header("Access-Control-Allow-Origin", agent.origin)
                    self.send_header("Access-Control-Allow-Methods", "GET, POST")
                    self.send_header("Access-Control-Allow-Headers", "Content-Type")
                    self.send_header("Access-Control-Allow-Private-Network", "true")
                    self.send_header("Vary", "Origin")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                data = json.loads(self.rfile.read(length) or b"{}")
                return data if isinstance(data, dict) else {}

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
                self._send(204, None)

            def do_GET(self) -> None:  # noqa: N802
                card = agent.card
                status = {
                    "agentVersion": "stand-in/1",
                    "cardPresent": card is not None,
                    "card": {"holderName": card.profile.name, "uuid": card.uuid} if card else None,
                }
                self._send(200, status)

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if self.path == "/v1/card-sessions":
                    agent.card_session_bodies.append(body)
                    if agent.session_failure == "gone":
                        self.close_connection = True  # no answer at all: fetch fails
                        return
                    if isinstance(agent.session_failure, tuple):
                        self._send(*agent.session_failure)
                        return
                    if agent.strict and set(body) != {"cardSession"}:
                        self._send(400, {"error": "bad_request", "message": "Bad request."})
                        return
                    agent.card_sessions.append(str(body.get("cardSession")))
                    self._send(201, {"cardSession": body.get("cardSession")})
                elif agent.refusal is not None:
                    self._send(*agent.refusal)
                else:
                    assert agent.card is not None
                    origin = self.headers.get("Origin") or ""
                    extra = {}
                    if agent.signing is not None:
                        extra = {
                            "CareId-Signing": agent.signing,
                            "Access-Control-Expose-Headers": "CareId-Signing",
                        }
                    token = agent.card.sign(str(body["challenge"]), origin=origin)
                    self._send(200, token, extra)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Served:
    app: Flask
    url: str
    agent: StandInAgent


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    with fresh_page(chromium, timeout_ms=TIMEOUT_MS) as tab:
        yield tab


@pytest.fixture
def served(card_app_factory: CardAppFactory, card_pki: CardPki) -> Iterator[Served]:
    port = _free_port()
    origin = f"http://localhost:{port}"
    agent = StandInAgent(origin=origin, card=card_pki.agent("alex"))
    app = card_app_factory(broker={"issuer": origin}, card={"agent_url": agent.url})
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Served(app=app, url=origin, agent=agent)
    finally:
        server.shutdown()
        agent.close()


def _error(page: Any) -> tuple[str, str]:
    box = page.locator("#card-error")
    box.wait_for(state="visible")
    return box.get_attribute("data-error-code") or "", page.locator(
        "#card-error-message"
    ).inner_text()


def _signs_in_with_the_button(served: Served, card_pki: CardPki, page: Any) -> None:
    """Alex's card registered, the login page's card button signs in."""
    register_card(served.app, card_pki.agent("alex"), ALEX[0])
    page.goto(f"{served.url}/login")
    page.locator("#card-signin-button").click()
    page.get_by_role("heading", name="You are signed in").wait_for()


def test_the_button_signs_in_and_hands_the_card_session_to_the_agent(
    served: Served, card_pki: CardPki, page: Any
) -> None:
    _signs_in_with_the_button(served, card_pki, page)
    assert "with your smartcard" in page.locator("main").inner_text()
    assert len(served.agent.card_sessions) == 1
    session = broker_of(served.app).repos.sessions.find_by_card_session(
        served.agent.card_sessions[0]
    )
    assert session is not None and session.account_mail == ALEX[0] and session.active


def test_a_card_page_whose_token_another_tab_spent_offers_a_reload_that_works(
    served: Served, card_pki: CardPki, page: Any
) -> None:
    # A password sent in another tab spends the browser's form token (a password form
    # is good for one submission): the card button on the page left open must not leave
    # the person stuck on "expired", but take them to a page that works.
    register_card(served.app, card_pki.agent("alex"), ALEX[0])
    page.goto(f"{served.url}/login")
    other = page.context.new_page()
    other.goto(f"{served.url}/login")
    other.locator("input[name=email]").fill(ALEX[0])
    other.locator("input[name=password]").fill("not-the-password")
    other.get_by_role("button", name="Sign in", exact=True).click()
    other.wait_for_load_state()
    page.locator("#card-signin-button").click()
    code, message = _error(page)
    assert code == "csrf_invalid" and "another tab" in message
    link = page.locator("#card-error-link")
    assert link.inner_text() == "Reload this page"
    link.click()
    page.wait_for_load_state()
    page.locator("#card-signin-button").click()
    page.get_by_role("heading", name="You are signed in").wait_for()


def test_an_unregistered_card_is_offered_registration(served: Served, page: Any) -> None:
    page.goto(f"{served.url}/login")
    page.locator("#card-signin-button").click()
    code, message = _error(page)
    assert code == "card_not_registered" and "not registered" in message
    link = page.locator("#card-error-link")
    assert link.get_attribute("href") == "/register"
    assert link.inner_text() == "Register your smartcard"


def test_wrong_pin_says_how_many_tries_are_left(served: Served, page: Any) -> None:
    served.agent.refusal = (
        403,
        {"error": "wrong_pin", "message": "The PIN was not correct.", "triesLeft": 2},
    )
    page.goto(f"{served.url}/login")
    page.locator("#card-signin-button").click()
    code, message = _error(page)
    assert code == "wrong_pin" and "The PIN was not correct." in message and "2" in message
    assert page.locator("#card-signin-button").is_enabled()  # the person can try again


def test_no_agent_running_links_to_the_install_instructions(served: Served, page: Any) -> None:
    served.agent.close()
    page.goto(f"{served.url}/login")
    page.locator("#card-signin-button").click()
    code, message = _error(page)
    assert code == "agent_unreachable" and "smartcard agent" in message
    assert page.locator("#card-error-link").get_attribute("href") == "/card/agent-help"


def _register_by_the_pages(served: Served, page: Any) -> None:
    """Alex's card registered through the registration pages, up to the confirmation."""
    page.goto(f"{served.url}/register")
    page.locator('#check-browser[data-state="ok"]').wait_for()
    page.locator('#check-agent[data-state="ok"]').wait_for()
    page.get_by_role("textbox", name="Email address").fill(ALEX[0])
    page.get_by_label("Password", exact=True).fill("Demo-Password-1")
    page.locator("#register-password-button").click()
    # The button is there before the page's script has bound it: wait for the page.
    page.wait_for_url("**/register/card")
    page.wait_for_load_state("load")
    page.locator("#register-card-button").click()
    page.locator("#register-confirm-button").wait_for()
    assert page.locator("#confirm-uuid").inner_text() == ALEX[1]
    page.locator("#register-confirm-button").click()


def test_registration_by_its_pages_then_the_lock_is_armed(served: Served, page: Any) -> None:
    _register_by_the_pages(served, page)
    page.locator('#register-lock-status[data-state="armed"]').wait_for()
    assert broker_of(served.app).repos.registrations.by_uuid(ALEX[1]) is not None
    assert len(served.agent.card_sessions) == 1


SIGNING = "Zm9yLXRoaXMtc2lnbmluZw"


def test_the_signing_handle_goes_back_to_the_agent_with_the_card_session(
    served: Served, card_pki: CardPki, page: Any
) -> None:
    served.agent.signing = SIGNING
    # Signed in: the broker took the token as the agent gave it (no handle inside).
    _signs_in_with_the_button(served, card_pki, page)
    assert [set(b) for b in served.agent.card_session_bodies] == [{"cardSession", "signing"}]
    assert served.agent.card_session_bodies[0]["signing"] == SIGNING


def test_an_agent_without_handles_gets_the_card_session_alone(
    served: Served, card_pki: CardPki, page: Any
) -> None:
    _signs_in_with_the_button(served, card_pki, page)
    assert [set(b) for b in served.agent.card_session_bodies] == [{"cardSession"}]


def test_an_agent_refusing_the_handle_is_asked_again_without_it(
    served: Served, card_pki: CardPki, page: Any
) -> None:
    served.agent.signing = SIGNING
    served.agent.strict = True
    _signs_in_with_the_button(served, card_pki, page)
    assert [set(b) for b in served.agent.card_session_bodies] == [
        {"cardSession", "signing"},
        {"cardSession"},
    ]
    assert len(served.agent.card_sessions) == 1


def test_registration_carries_the_signing_handle_to_its_last_page(
    served: Served, page: Any
) -> None:
    served.agent.signing = SIGNING
    test_registration_by_its_pages_then_the_lock_is_armed(served, page)
    assert served.agent.card_session_bodies == [
        {"cardSession": served.agent.card_sessions[0], "signing": SIGNING}
    ]
    # Taken once: nothing is left for a later page of this tab.
    assert page.evaluate("window.sessionStorage.getItem('careid-agent-signing')") is None


AGENT_FAILURES = {
    "stopped": "gone",
    "busy": (503, {"error": "agent_busy", "message": "The agent is busy."}),
    "refused": (409, {"error": "card_removed", "message": "The card was removed."}),
}


@pytest.mark.parametrize("failure", list(AGENT_FAILURES))
def test_a_sign_in_the_agent_did_not_lock_is_ended_and_goes_no_further(
    served: Served, card_pki: CardPki, page: Any, failure: str
) -> None:
    register_card(served.app, card_pki.agent("alex"), ALEX[0])
    served.agent.session_failure = AGENT_FAILURES[failure]
    page.goto(f"{served.url}/login")
    page.locator("#card-signin-button").click()
    code, message = _error(page)
    assert code == "card_lock_not_armed" and "signed you out" in message
    assert page.locator("#card-error-link").get_attribute("href") == "/card/agent-help"
    assert page.url == f"{served.url}/login"  # never on to the web app, or "signed in"
    # The page reported the session itself: ended, and audited as a lock the agent did
    # not take (not as a card taken out), for administrators to see how often.
    [body] = served.agent.card_session_bodies
    session = broker_of(served.app).repos.sessions.find_by_card_session(body["cardSession"])
    assert session is not None and not session.active
    entry = last_audit(served.app, "session.end")
    assert entry.subject == ALEX[0] and entry.details["reason"] == "lock_not_armed"
    assert "did not take the card lock" in entry.details["why"]
    metrics = served.app.test_client().get("/metrics").get_data(as_text=True)
    assert "careid_card_lock_not_armed_total 1.0" in metrics
    # The next page needs a new sign-in.
    page.goto(f"{served.url}/login")
    assert page.get_by_role("heading", name="You are signed in").count() == 0


def test_registration_the_agent_did_not_lock_ends_the_session_and_says_so(
    served: Served, page: Any
) -> None:
    served.agent.session_failure = "gone"
    _register_by_the_pages(served, page)
    status = page.locator('#register-lock-status[data-state="not-armed"]')
    status.wait_for()
    assert "signed you out" in status.inner_text()
    assert broker_of(served.app).repos.registrations.by_uuid(ALEX[1]) is not None
    [body] = served.agent.card_session_bodies
    session = broker_of(served.app).repos.sessions.find_by_card_session(body["cardSession"])
    assert session is not None and not session.active


def test_a_sign_in_neither_locked_nor_ended_says_it_may_still_be_open(
    served: Served, card_pki: CardPki, page: Any
) -> None:
    register_card(served.app, card_pki.agent("alex"), ALEX[0])
    served.agent.session_failure = "gone"
    page.route("**/card/removed", lambda route: route.abort())  # the broker out of reach
    page.goto(f"{served.url}/login")
    page.locator("#card-signin-button").click()
    code, message = _error(page)
    assert code == "card_lock_not_armed_signed_in" and "sign out" in message
    assert page.url == f"{served.url}/login"
