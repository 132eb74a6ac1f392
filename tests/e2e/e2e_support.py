"""Helpers for the end-to-end tests: the chain's cards, registrations, and the pages.

The chain is the demo's own (`careid_devkit.demo.DemoChain`): webmail → broker → agent
→ pcscd → vpcd → the virtual card in the card tray, with slapd and the OCSP/CRL
responder. Nothing here fakes a part; state is reset through the parts' own files and
store between tests.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from dataclasses import dataclass
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from careid_broker.store import Repositories
from careid_broker.store.registrations import LinkMode, NewRegistration
from careid_devkit.demo import DEMO_PASSWORD, DemoChain, account_by_uid
from careid_devkit.tray import TrayCard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True, kw_only=True)
class ExtraPorts:
    """Origins the agent serves besides the demo broker's."""

    crl_broker: int
    """A second broker on the same store, checking revocation by CRL only."""
    other_site: int
    """A plain page standing for another web site that uses the same agent."""
    cis2_rp: int
    """The relying party configured as a CIS2 integration guide says (tests/rp)."""


#: The CIS2-configured relying party's client id and its private_key_jwt key (test
#: material, made afresh for each run).
CIS2_RP_CLIENT_ID = "cis2-rp"


#: Page actions wait this long (ms) at most: a card sign-in takes well under a second.
PAGE_TIMEOUT_MS = 15_000


def agent_status(chain: DemoChain) -> dict[str, Any]:
    """GET /v1/status as the broker's page would ask it."""
    response = requests.get(
        f"{chain.urls.agent}/v1/status", headers={"Origin": chain.urls.broker}, timeout=10
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def card_guid(card: TrayCard) -> str:
    """The card id the agent reports (the CHUID GUID as a UUID string)."""
    return str(uuid_module.UUID(hex=card.load().card_guid_hex))


def wait_agent_sees(chain: DemoChain, card: TrayCard | None, timeout: float = 10.0) -> None:
    """Wait until the agent reports exactly this card in the reader (None: empty)."""
    wanted = card_guid(card) if card is not None else None
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = agent_status(chain)
        seen = (last.get("card") or {}).get("cardId") if last.get("cardPresent") else None
        if seen == wanted and (wanted is not None or not last.get("cardPresent")):
            return
        time.sleep(0.05)
    raise AssertionError(f"the agent never reported card {wanted}: last status {last}")


def insert(chain: DemoChain, card_id: str) -> TrayCard:
    """Put a card in the reader through the tray and wait until the agent has it."""
    card = chain.tray.insert(card_id)
    wait_agent_sees(chain, card)
    return card


def remove(chain: DemoChain) -> None:
    """Take the card out and wait until the agent sees the reader empty."""
    chain.tray.remove()
    wait_agent_sees(chain, None)


def register_directly(repos: Repositories, chain: DemoChain, uid: str, card_id: str) -> None:
    """Link a card to an account in the store, as a finished registration would.

    For accounts the registration pages refuse (disabled, no AUP…): their refusals at
    card sign-in can only be reached with a link that was made before the account
    changed.
    """
    account = account_by_uid(uid)
    card = chain.tray.card(card_id)
    certificate = x509.load_pem_x509_certificate(card.load().certificate_pem.encode())
    repos.registrations.create(
        NewRegistration(
            card_uuid=card.uuid,
            account_mail=account.mail,
            account_dn=f"uid={uid},ou=people,dc=nhs,dc=example",
            org_code=account.org,
            link_mode=LinkMode.UUID,
            cert_issuer_dn=certificate.issuer.rfc4514_string(),
            cert_serial=f"{certificate.serial_number:X}",
            cert_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
            how="e2e test",
        )
    )


def password_sign_in(
    page: Any, chain: DemoChain, uid: str, *, password: str = DEMO_PASSWORD
) -> None:
    """On the broker's sign-in page: the email and password form."""
    page.get_by_role("textbox", name="Email address").fill(account_by_uid(uid).mail)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def webmail_password_sign_in(page: Any, chain: DemoChain, uid: str) -> None:
    """Sign in to the webmail with a password, through the broker; ends on the mailbox."""
    page.goto(f"{chain.urls.webmail}/")
    page.get_by_role("link", name="Sign in", exact=True).click()
    page.wait_for_url(f"{chain.urls.broker}/login?**")
    password_sign_in(page, chain, uid)
    back_at_webmail(page, chain)
    name = account_by_uid(uid).name
    page.get_by_role("heading", name=f"Signed in as {name}").wait_for()


def open_webmail_sign_in(page: Any, chain: DemoChain, *, smartcard: bool = False) -> None:
    """From the webmail's home page to the broker's sign-in page (an OIDC request)."""
    page.goto(f"{chain.urls.webmail}/")
    link = "Sign in with smartcard (AAL3)" if smartcard else "Sign in"
    page.get_by_role("link", name=link, exact=True).click()
    page.wait_for_url(f"{chain.urls.broker}/login?**")


def press_card_button(page: Any) -> None:
    """The login page's "Sign in with your smartcard" (the page script does the rest)."""
    page.locator("#card-signin-button").click()


def card_refusal(page: Any) -> tuple[str, str]:
    """Wait for the card area's error box; its (code, message)."""
    box = page.locator("#card-error")
    box.wait_for(state="visible")
    return box.get_attribute("data-error-code") or "", page.locator(
        "#card-error-message"
    ).inner_text()


def webmail_claim(page: Any, claim: str) -> str:
    """A claim as the webmail's signed-in page shows it."""
    text: str = page.locator(f"[data-claim={claim}]").inner_text()
    return text


def back_at_webmail(page: Any, chain: DemoChain) -> None:
    """Wait until the sign-in is back at the webmail, through the role page when the
    person holds several roles (the webmail asks for `selectedrole`): the role chosen
    last is already selected, else the first is taken."""
    role_page = f"{chain.urls.broker}/authorize/role"
    page.wait_for_url(
        lambda url: url.startswith(f"{chain.urls.webmail}/") or url.startswith(role_page)
    )
    if page.url.startswith(role_page):
        if not page.locator("input[name=person_roleid]:checked").count():
            page.get_by_role("radio").first.check()
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{chain.urls.webmail}/")


def card_sign_in_to_webmail(page: Any, chain: DemoChain, name: str) -> None:
    """Webmail → broker → card → back at the webmail signed in as `name` by card (for a
    person with several roles, through the role page: the first role, or the last one
    chosen, which is already selected)."""
    open_webmail_sign_in(page, chain)
    press_card_button(page)
    back_at_webmail(page, chain)
    page.get_by_role("heading", name=f"Signed in as {name}").wait_for()
    assert "AAL3_SMARTCARD" in webmail_claim(page, "acr")


def register_by_three_steps(page: Any, chain: DemoChain, uid: str) -> None:
    """On /register: password (step 1), card and PIN (step 2), check and confirm (step 3),
    then Continue to where the sign-in was going."""
    account = account_by_uid(uid)
    page.wait_for_url(f"{chain.urls.broker}/register**")
    page.get_by_role("textbox", name="Email address").fill(account.mail)
    page.get_by_label("Password", exact=True).fill(DEMO_PASSWORD)
    page.locator("#register-password-button").click()
    # Step 2: the page checked this computer (browser, agent) before the card is used.
    page.locator("#register-card-button").wait_for()
    page.locator('#check-agent[data-state="ok"]').wait_for()
    page.locator("#register-card-button").click()
    # Step 3: the card holder beside the mail account, to confirm they are one person.
    page.locator("#register-confirm-button").wait_for()
    card_holder = page.locator("#confirm-holder-name").inner_text()
    assert card_holder == account.name, card_holder
    assert page.locator("#confirm-uuid").inner_text() == account.uuid
    assert page.locator("#confirm-account-mail").inner_text() == account.mail
    page.locator("#register-confirm-button").click()
    page.locator("#register-done-heading").wait_for()
    page.locator("#register-continue-link").click()


def tray_post(chain: DemoChain, path: str) -> dict[str, Any]:
    """A POST to the card tray's JSON API, as a script would send it."""
    response = requests.post(
        f"{chain.urls.tray}{path}", headers={"X-Card-Tray": "1"}, json={}, timeout=30
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_session_ended(page: Any, timeout: float) -> float:
    """Seconds until the webmail page shows "Your session has ended" (at most `timeout`).

    The page asks the webmail every few seconds by itself, and at once when it becomes
    visible again; the visibility event is sent here so the wait measures the chain
    (agent → broker → back-channel logout → webmail), not the polling interval.
    """
    started = time.monotonic()
    ended = page.locator("#session-ended")
    while time.monotonic() - started < timeout:
        page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
        try:
            ended.wait_for(state="visible", timeout=100)
        except Exception:  # noqa: BLE001, S112 - Playwright's timeout: ask again
            continue
        return time.monotonic() - started
    raise AssertionError(f"the webmail page did not show the session ended within {timeout} s")
