"""A relying party written for NHS CIS2 Authentication, pointed at the broker with
nothing changed but its issuer URL: Node's openid-client with private_key_jwt, the
`selectedrole` scope, `acr_values=AAL3_ANY` and `max_age`, signing a locum in by card
in Chromium. The person picks one of three roles; the RP checks every claim it reads
(tests/rp/cis2_rp.mjs)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc.jwk import ECKey

from careid_broker.store import Repositories
from careid_devkit.demo import DemoChain, account_by_uid
from support.node_rp import RP_DIR, install_openid_client, node_command

from .e2e_support import (
    CIS2_RP_CLIENT_ID,
    ExtraPorts,
    insert,
    open_webmail_sign_in,
    press_card_button,
    register_directly,
)


@pytest.fixture(scope="module")
def cis2_rp(chain: DemoChain, extra_ports: ExtraPorts, cis2_rp_key: ECKey) -> Iterator[str]:
    """The CIS2-configured RP, listening on its port; its base URL."""
    command = node_command()
    install_openid_client()
    port = extra_ports.cis2_rp
    settings = {
        "issuer": chain.urls.broker,
        "clientId": CIS2_RP_CLIENT_ID,
        "port": port,
        "redirectUri": f"http://localhost:{port}/callback",
        "privateJwk": key_dict(cis2_rp_key),
    }
    process = subprocess.Popen(  # noqa: S603 - our own script
        [*command, str(RP_DIR / "cis2_rp.mjs"), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert '"listening"' in first, first + (process.stdout.read() if process.poll() else "")
        yield f"http://localhost:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def key_dict(key: ECKey) -> dict[str, Any]:
    """The private JWK, as the RP imports it with Web Crypto."""
    return {**key.as_dict(private=True), "ext": True}


def test_a_cis2_configured_rp_signs_a_locum_in_by_card_with_the_role_they_pick(
    page: Any, chain: DemoChain, repos: Repositories, cis2_rp: str
) -> None:
    robin = account_by_uid("robin.hale")
    register_directly(repos, chain, robin.uid, robin.uuid)
    insert(chain, robin.uuid)

    page.goto(f"{cis2_rp}/start")
    # acr_values=AAL3_ANY: the sign-in page asks for the card straight away.
    page.wait_for_url(f"{chain.urls.broker}/login?**card=required**")
    press_card_button(page)

    # Three roles in three organisations: the person chooses, by keyboard.
    page.wait_for_url(f"{chain.urls.broker}/authorize/role?**")
    page.get_by_role("heading", name="Choose your role").wait_for()
    radios = page.get_by_role("radio")
    assert radios.count() == 3
    practitioner = page.get_by_role("radio", name="Clinical Practitioner (R8000)")
    assert practitioner.count() == 2  # at RX1 and at Y00001
    choice = page.locator("input[name=person_roleid]").nth(1)
    described = page.locator(f"#{choice.get_attribute('aria-describedby')}").inner_text()
    assert "Hillside Medical Practice (demo) (Y00001)" in described
    choice.focus()
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")

    page.wait_for_url(f"{cis2_rp}/callback?**")
    heading = page.locator("#result").inner_text()
    assert heading == "Signed in", page.locator("body").inner_text()
    outcome = json.loads(page.locator("#outcome").inner_text())
    claims, userinfo = outcome["id_token_claims"], outcome["userinfo"]
    assert claims["aud"] == CIS2_RP_CLIENT_ID and claims["iss"] == chain.urls.broker
    assert claims["acr"] == "AAL3_SMARTCARD" and claims["authentication_assurance_level"] == "3"
    assert claims["nhsid_useruid"] == robin.uuid and userinfo["nhsid_useruid"] == robin.uuid
    assert outcome["selected_role"]["org_code"] == "Y00001"
    assert claims["selected_role_org_code"] == "Y00001"
    assert claims["selected_role_org_name"] == "Hillside Medical Practice (demo)"
    assert abs(claims["auth_time"] - time.time()) < 120

    # The choice was audited, with the role and organisation chosen.
    entries = repos.audit.list_recent(event_prefix="oidc.role_selected", limit=5)
    assert entries and entries[0].subject == robin.mail
    assert entries[0].details["person_roleid"] == claims["selected_roleid"]
    assert entries[0].relying_party == CIS2_RP_CLIENT_ID


def test_in_the_demo_a_gp_with_two_practices_picks_one_and_the_webmail_shows_it(
    page: Any, chain: DemoChain, repos: Repositories
) -> None:
    casey = account_by_uid("casey.doyle")
    register_directly(repos, chain, casey.uid, casey.uuid)
    insert(chain, casey.uuid)
    open_webmail_sign_in(page, chain)
    press_card_button(page)
    page.wait_for_url(f"{chain.urls.broker}/authorize/role?**")
    page.get_by_role("radio").nth(1).check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{chain.urls.webmail}/")
    page.get_by_role("heading", name=f"Signed in as {casey.name}").wait_for()
    chosen = page.locator("tr[data-selected-role]")
    assert chosen.count() == 1 and "Y00002" in chosen.inner_text()
