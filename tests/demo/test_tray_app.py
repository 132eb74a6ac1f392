"""The card tray's page and JSON API, through Flask's test client (no reader needed).

Inserting into a real reader is covered with pcscd in tests/integration/test_demo.py
and in Chromium in tests/e2e.
"""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from careid_devkit.demo import demo_cards, free_port
from careid_devkit.demo.workspace import Workspace, issue_demo_cards
from careid_devkit.tray import REQUEST_HEADER, CardTray, create_tray_app

HOST = "localhost:5003"


@pytest.fixture(scope="module")
def tray(tmp_path_factory: pytest.TempPathFactory) -> CardTray:
    specs = [spec for spec in demo_cards() if spec.card_id in ("555000000001", "555000000003")]
    issued = issue_demo_cards(
        Workspace(root=tmp_path_factory.mktemp("tray")),
        pki_base_url="http://127.0.0.1:5080",
        specs=specs,
    )
    # Nothing listens on this "vpcd" port: an insertion must fail, plainly and quickly.
    return CardTray(issued.cards, vpcd_port=free_port(), insert_timeout=0.3)


@pytest.fixture
def client(tray: CardTray) -> FlaskClient:
    return create_tray_app(tray).test_client()


def test_the_page_lists_the_cards_with_a_strict_csp(client: FlaskClient) -> None:
    response = client.get("/", headers={"Host": HOST})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    # No inline script: every <script> loads a file.
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))
    assert "Insert the card of Alex Morgan (555000000001)" in page
    assert "Insert the card of Jo Bloggs (555000000003)" in page
    assert 'id="remove-card"' in page


def test_cards_as_json(client: FlaskClient, tray: CardTray) -> None:
    body = client.get("/cards", headers={"Host": HOST}).get_json()
    assert body["reader"] == "Virtual PCD 00 00" and body["inserted"] is None
    alex = body["cards"][0]
    assert alex == {
        "id": "555000000001",
        "uuid": "555000000001",
        "name": "Alex Morgan",
        "kind": "valid",
        "state": "Valid certificate",
        "note": alex["note"],
        "inserted": False,
        "pinTriesLeft": 3,
        "pinBlocked": False,
    }
    # The counters come from the profile on disk, as the card would report them.
    card = tray.card("555000000003")
    profile = card.load()
    card.save(profile.with_counters(pin_retries_left=0, puk_retries_left=3))
    try:
        jo = client.get("/cards", headers={"Host": HOST}).get_json()["cards"][1]
        assert (jo["pinTriesLeft"], jo["pinBlocked"]) == (0, True)
    finally:
        card.save(profile)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no custom header"),
        ({REQUEST_HEADER: "1", "Origin": "http://evil.example"}, "another origin"),
        ({REQUEST_HEADER: "1", "Sec-Fetch-Site": "cross-site"}, "a cross-site fetch"),
        ({REQUEST_HEADER: "1", "Host": "evil.example:5003"}, "a rebound host name"),
    ],
)
def test_posts_from_anywhere_but_the_tray_are_refused(
    client: FlaskClient, headers: dict[str, str], why: str
) -> None:
    response = client.post("/cards/remove", headers={"Host": HOST, **headers})
    assert response.status_code == 403, why
    assert response.get_json()["error"] == "devkit_tray_request_refused"
    assert "X-Card-Tray" in response.get_json()["message"]


def test_same_origin_post_is_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/cards/remove",
        headers={
            "Host": HOST,
            REQUEST_HEADER: "1",
            "Origin": f"http://{HOST}",
            "Sec-Fetch-Site": "same-origin",
        },
    )
    assert response.status_code == 200
    assert response.get_json()["removed"] is None


def test_unknown_card_and_unusable_reader_have_their_codes(client: FlaskClient) -> None:
    headers = {"Host": HOST, REQUEST_HEADER: "1"}
    unknown = client.post("/cards/555000000042/insert", headers=headers)
    assert unknown.status_code == 404
    assert unknown.get_json()["error"] == "devkit_tray_card_unknown"
    no_vpcd = client.post("/cards/555000000001/insert", headers=headers)
    assert no_vpcd.status_code == 503
    body = no_vpcd.get_json()
    assert body["error"] == "devkit_tray_reader_unavailable"
    assert "vsmartcard-vpcd" in body["message"]
    assert client.get("/cards", headers={"Host": HOST}).get_json()["inserted"] is None


def test_wrong_method_and_path_answer_json(client: FlaskClient) -> None:
    assert client.get("/cards/remove", headers={"Host": HOST}).status_code == 405
    missing = client.get("/nothing", headers={"Host": HOST})
    assert missing.status_code == 404 and missing.get_json()["error"] == "page_not_found"


def test_the_static_script_is_served(client: FlaskClient) -> None:
    with client.get("/static/tray.js", headers={"Host": HOST}) as script:
        assert script.status_code == 200
        assert REQUEST_HEADER in script.get_data(as_text=True)
