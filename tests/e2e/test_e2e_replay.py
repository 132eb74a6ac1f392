"""Replays and misuse of the signed challenge, with real tokens from the real agent.

Each test does in the page exactly what the login page's script does — ask the broker
for a challenge, have the agent on 127.0.0.1 sign it (Chromium sends the page's Origin),
post the token — except for the one thing the attacker changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from careid_broker.store import Repositories, Store
from careid_broker.store.base import sha256_hex
from careid_broker.store.models import CardChallenge
from careid_devkit.demo import DemoChain
from careid_protocol.errors import ErrorCode, message_for

from .e2e_support import insert, open_webmail_sign_in, register_directly

# The page's own steps, from the data-* attributes of its card form (card-signin.js).
STEPS = """
() => {
  const form = document.getElementById("card-signin-form");
  const d = form.dataset;
  const post = (url, body) => fetch(url, {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: {"Content-Type": "application/json", "Accept": "application/json",
              "X-CSRF-Token": d.csrfToken},
    body: JSON.stringify(body),
  }).then(async (r) => ({status: r.status, body: await r.json()}));
  window.e2e = {
    tx: d.tx || null,
    challenge: () => post(d.challengeUrl, {tx: d.tx || null}),
    authenticate: (challenge, token) =>
      post(d.authenticateUrl, {tx: d.tx || null, challenge: challenge, token: token}),
  };
}
"""
SIGN = """
async ([agentUrl, challenge]) => {
  const r = await fetch(agentUrl + "/v1/authenticate", {
    method: "POST", mode: "cors", credentials: "omit",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({challenge: challenge}),
  });
  return await r.json();
}
"""


def _login_page(page: Any, chain: DemoChain) -> None:
    open_webmail_sign_in(page, chain)
    page.evaluate(STEPS)


def _challenge(page: Any) -> str:
    issued = page.evaluate("() => window.e2e.challenge()")
    assert issued["status"] == 200, issued
    challenge: str = issued["body"]["challenge"]
    return challenge


def _sign(page: Any, chain: DemoChain, challenge: str) -> dict[str, Any]:
    token: dict[str, Any] = page.evaluate(SIGN, [chain.urls.agent, challenge])
    assert token.get("format") == "careid-auth:1", token
    return token


def _authenticate(page: Any, challenge: str, token: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = page.evaluate(
        "([c, t]) => window.e2e.authenticate(c, t)", [challenge, token]
    )
    return answer


def _refused(answer: dict[str, Any], code: ErrorCode) -> None:
    assert 400 <= answer["status"] < 500, answer
    assert answer["body"]["error"] == code, answer
    assert answer["body"]["message"] == message_for(code)


def test_the_same_token_posted_twice_is_refused_the_second_time(
    new_page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001")
    page, thief = new_page(), new_page()
    _login_page(page, chain)
    challenge = _challenge(page)
    token = _sign(page, chain, challenge)
    first = _authenticate(page, challenge, token)
    assert first["status"] == 200 and first["body"]["redirect"], first
    # Whoever captured the token posts it again, from their own sign-in page.
    _login_page(thief, chain)
    _refused(_authenticate(thief, challenge, token), ErrorCode.CHALLENGE_USED)


def test_a_token_signed_for_another_origin_is_refused(
    new_page: Any, chain: DemoChain, repos: Repositories, other_site: str
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001")
    login = new_page()
    _login_page(login, chain)
    challenge = _challenge(login)
    # A page of another site the agent also serves gets the same challenge signed: the
    # card signs H(that origin) || H(challenge).
    other = new_page()
    other.goto(other_site)
    token = _sign(other, chain, challenge)
    _refused(_authenticate(login, challenge, token), ErrorCode.SIGNATURE_INVALID)


def test_a_challenge_from_another_login_transaction_is_refused(
    new_page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001")
    first, second = new_page(), new_page()
    _login_page(first, chain)
    _login_page(second, chain)
    assert first.evaluate("() => window.e2e.tx") != second.evaluate("() => window.e2e.tx")
    stolen = _challenge(first)
    token = _sign(second, chain, stolen)
    _refused(_authenticate(second, stolen, token), ErrorCode.CHALLENGE_WRONG_TRANSACTION)


def test_an_expired_challenge_is_refused(
    page: Any, chain: DemoChain, repos: Repositories, store: Store
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001")
    _login_page(page, chain)
    challenge = _challenge(page)
    token = _sign(page, chain, challenge)
    # Five minutes pass (the broker's clock is the real one: move the expiry instead).
    with store.transaction() as session:
        session.execute(
            update(CardChallenge)
            .where(CardChallenge.challenge_hash == sha256_hex(challenge))
            .values(expires_at=store.now() - timedelta(seconds=1))
        )
    _refused(_authenticate(page, challenge, token), ErrorCode.CHALLENGE_EXPIRED)
