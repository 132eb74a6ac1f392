"""The card pages: stable element ids for the end-to-end tests, the script wired by data
attributes only (strict CSP, no inline script), connect-src for the agent alone."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from broker_support import REPO, broker_of, error_code_of
from card_fixtures import CardAppFactory
from card_support import CardBrowser
from flask import Flask
from oidc_support import Browser, query_of

STATIC = REPO / "src" / "careid_broker" / "static"
LOGIN_IDS = (
    "card-signin",
    "card-signin-form",
    "card-signin-button",
    "card-status",
    "card-error",
    "card-error-message",
    "card-error-action",
    "card-error-link",
    "card-texts",
)


def _csp(response) -> dict[str, str]:
    (header,) = response.headers.getlist("Content-Security-Policy")  # the page's own only
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_login_page_wires_the_card_script_with_data_attributes(card_app: Flask) -> None:
    rp = Browser(card_app.test_client())
    tx = query_of(rp.authorize().location)["tx"]
    response = rp.client.get("/login", query_string={"tx": tx})
    page = response.get_data(as_text=True)
    for element_id in LOGIN_IDS:
        assert f'id="{element_id}"' in page, element_id
    assert '<script src="/static/card-signin.js" defer></script>' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    assert 'data-agent-url="http://127.0.0.1:47600"' in page
    assert 'data-challenge-url="/card/challenge"' in page
    assert 'data-authenticate-url="/card/authenticate"' in page
    assert f'data-tx="{tx}"' in page
    assert 'data-install-url="/card/agent-help"' in page
    assert re.search(r'data-csrf-token="[^"]{20,}"', page)
    assert 'data-code="agent_unreachable"' in page
    assert ">Sign in with your smartcard</button>" in page
    csp = _csp(response)
    assert csp["connect-src"] == "'self' http://127.0.0.1:47600"
    assert csp["script-src"] == "'self'"


def test_configured_agent_and_install_urls_reach_the_page_and_its_csp(
    card_app_factory: CardAppFactory,
) -> None:
    app = card_app_factory(
        card={
            "agent_url": "http://127.0.0.1:47611/",
            "agent_install_url": "https://intranet.example/agent",
        }
    )
    response = app.test_client().get("/login")
    page = response.get_data(as_text=True)
    assert 'data-agent-url="http://127.0.0.1:47611"' in page
    assert 'data-install-url="https://intranet.example/agent"' in page
    assert _csp(response)["connect-src"] == "'self' http://127.0.0.1:47611"


def test_without_script_the_button_explains_what_the_browser_lacks(card_app: Flask) -> None:
    response = card_app.test_client().get("/login/card")
    assert response.status_code == 400
    assert error_code_of(response) == "browser_unsupported"
    assert 'href="/login"' in response.get_data(as_text=True)


def test_the_agent_help_page_names_the_origin_to_allow(card_app: Flask) -> None:
    response = card_app.test_client().get("/card/agent-help")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "http://localhost:5000" in page and "careid-agent serve" in page


def test_the_scripts_are_served_from_the_broker(card_app: Flask) -> None:
    client = card_app.test_client()
    for name in ("card-signin.js", "register.js"):
        with client.get(f"/static/{name}") as response:
            assert response.status_code == 200
            assert response.mimetype in ("text/javascript", "application/javascript")


@pytest.mark.parametrize("name", ["card-signin.js", "register.js"])
def test_the_scripts_parse(name: str) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("needs Node.js (Debian package nodejs) to parse the page scripts")
    result = subprocess.run([node, "--check", str(STATIC / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_scripts_use_only_ids_the_templates_have() -> None:
    templates = REPO / "src" / "careid_broker" / "templates"
    markup = "".join(p.read_text() for p in templates.glob("*.html"))
    for name in ("card-signin.js", "register.js"):
        script = Path(STATIC / name).read_text()
        for element_id in re.findall(r'getElementById\("([a-z-]+)"\)', script):
            assert f'id="{element_id}"' in markup, f"{name}: #{element_id} is in no template"


def test_a_login_transaction_belongs_to_the_browser_whose_authorize_made_it(
    card_app: Flask,
) -> None:
    rp = Browser(card_app.test_client())
    tx = query_of(rp.authorize().location)["tx"]
    other = CardBrowser(card_app.test_client())
    other.open_login()
    assert other.challenge(tx).get_json()["error"] == "challenge_wrong_transaction"
    # Opening its login page elsewhere does not make it that browser's.
    shown = other.client.get("/login", query_string={"tx": tx})
    assert shown.status_code == 400 and error_code_of(shown) == "oidc_signin_expired"
    assert other.challenge(tx).get_json()["error"] == "challenge_wrong_transaction"
    own = CardBrowser(rp.client)
    own.open_login(tx)
    assert own.challenge(tx).status_code == 200
    assert broker_of(card_app).repos.transactions.get(tx) is not None
