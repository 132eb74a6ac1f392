"""Every refusal of a card sign-in, in Chromium through the real chain, with its message.

The certificate refusals come from the development PKI's real cards (revoked, expired,
another CA's) checked by the broker against the demo's OCSP responder or its CRL; the
account refusals from the demo directory's accounts (links made in the store, as a
registration made before the account changed would be); the PIN refusals from the
virtual card itself, through the agent.
"""

from __future__ import annotations

from typing import Any

import pytest

from careid_broker.codes import AupRoute, BrokerCode, aup_message, message_for
from careid_broker.store import Repositories
from careid_devkit.demo import DemoChain
from careid_protocol.errors import ErrorCode

from .e2e_support import (
    ExtraPorts,
    card_refusal,
    insert,
    open_webmail_sign_in,
    press_card_button,
    register_directly,
)

REFUSALS = [
    # (card in the reader, account it is registered to, refusal)
    ("555000000099", None, BrokerCode.CARD_NOT_REGISTERED),
    ("555000000001-revoked", "alex.morgan", ErrorCode.CERTIFICATE_REVOKED),
    ("555000000001-expired", "alex.morgan", ErrorCode.CERTIFICATE_EXPIRED),
    ("555000000001-untrusted", "alex.morgan", ErrorCode.CERTIFICATE_UNTRUSTED),
    ("555000000003", "jo.bloggs", BrokerCode.ACCOUNT_DISABLED),
    ("555000000002", "sam.patel", BrokerCode.AUP_NOT_ACCEPTED),
    ("555000000007", "chris.old", BrokerCode.AUP_NOT_ACCEPTED),
    ("555000000006", "pat.jones", BrokerCode.CARE_IDENTITY_INACTIVE),
]


@pytest.mark.parametrize(
    ("card_id", "uid", "code"), REFUSALS, ids=[f"{c}-{code}" for c, _, code in REFUSALS]
)
def test_card_sign_in_is_refused_with_its_message(
    page: Any,
    chain: DemoChain,
    repos: Repositories,
    card_id: str,
    uid: str | None,
    code: ErrorCode,
) -> None:
    if uid is not None:
        register_directly(repos, chain, uid, card_id.split("-")[0])
    insert(chain, card_id)
    open_webmail_sign_in(page, chain)
    press_card_button(page)
    shown_code, message = card_refusal(page)
    # The demo's directory is writable: a card refused for the policy is sent to accept
    # it here, by email and password.
    expected = (
        aup_message(AupRoute.PASSWORD) if code is BrokerCode.AUP_NOT_ACCEPTED else message_for(code)
    )
    assert (shown_code, message) == (code, expected)
    # Still on the broker's page, not signed in anywhere.
    assert page.url.startswith(f"{chain.urls.broker}/login")
    if code is BrokerCode.CARD_NOT_REGISTERED:
        card_error = page.locator("#card-error")
        assert card_error.get_by_role("link", name="Register your smartcard").is_visible()
    if code is BrokerCode.AUP_NOT_ACCEPTED:
        assert page.get_by_role("link", name="Read and accept the acceptable use policy")


def test_revoked_card_is_refused_by_a_broker_checking_the_crl(
    page: Any, chain: DemoChain, repos: Repositories, extra_ports: ExtraPorts
) -> None:
    port = extra_ports.crl_broker
    chain.start_extra_broker("broker-crl", port=port, env={"CAREID_PKI_REVOCATION": "crl"})
    assert chain.pki_server is not None
    ocsp_before = chain.pki_server.ocsp_requests_served
    served_before = chain.pki_server.requests_served
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001-revoked")
    page.goto(f"http://localhost:{port}/login")
    press_card_button(page)
    shown_code, message = card_refusal(page)
    assert (shown_code, message) == (
        ErrorCode.CERTIFICATE_REVOKED,
        message_for(ErrorCode.CERTIFICATE_REVOKED),
    )
    # That broker asked no OCSP question: the CRL (fetched from its distribution point)
    # is what said no.
    assert chain.pki_server.ocsp_requests_served == ocsp_before
    assert chain.pki_server.requests_served > served_before


def test_wrong_pin_is_refused_with_the_tries_left(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    chain.restart_agent(pin="135790")  # the person types a wrong PIN
    card = insert(chain, "555000000001")
    open_webmail_sign_in(page, chain)
    press_card_button(page)
    shown_code, message = card_refusal(page)
    assert shown_code == ErrorCode.WRONG_PIN
    assert message.startswith("The PIN was not correct.")
    # The agent's message counts the tries left; the page does not say it twice.
    assert "2 tries left" in message
    assert "Attempts left" not in message
    assert card.load().pin_retries_left == 2  # the card counted it


def test_blocked_pin_is_refused_even_with_the_right_pin(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    card = chain.tray.card("555000000001")
    card.save(card.load().with_counters(pin_retries_left=0, puk_retries_left=3))
    insert(chain, "555000000001")
    open_webmail_sign_in(page, chain)
    press_card_button(page)
    shown_code, message = card_refusal(page)
    assert (shown_code, message) == (ErrorCode.PIN_BLOCKED, message_for(ErrorCode.PIN_BLOCKED))


def test_directory_down_is_refused_plainly(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    register_directly(repos, chain, "alex.morgan", "555000000001")
    insert(chain, "555000000001")
    open_webmail_sign_in(page, chain)
    assert chain.slapd is not None
    chain.slapd.stop()
    press_card_button(page)
    shown_code, message = card_refusal(page)
    assert (shown_code, message) == (
        BrokerCode.DIRECTORY_UNAVAILABLE,
        message_for(BrokerCode.DIRECTORY_UNAVAILABLE),
    )
