"""The console's pages as people use them: a way out, words instead of codes, the
removal form's errors."""

from __future__ import annotations

from admin_support import ALEX, LEE, page_csrf, register
from broker_support import broker_of
from flask import Flask
from flask.testing import FlaskClient


def test_every_console_page_has_sign_out_in_its_header(admin_app: Flask, lee: FlaskClient) -> None:
    register(admin_app, ALEX)
    for path in ("/admin", f"/admin/users/{ALEX}", f"/admin/users/{ALEX}/remove"):
        page = lee.get(path).get_data(as_text=True)
        header = page.split('<header class="header">', 1)[1].split("</header>", 1)[0]
        assert 'id="header-signout"' in header, path
        assert f'id="header-signed-in-as">{LEE}<' in header, path
    _, token = page_csrf(lee, "/admin")
    done = lee.post("/signout", data={"csrf_token": token})
    assert "You have signed out" in done.get_data(as_text=True)
    assert 'id="header-signout"' not in done.get_data(as_text=True)
    assert broker_of(admin_app).repos.sessions.active_for_account(LEE) == []
    # Signed out: the console sends the browser to sign in again.
    assert lee.get("/admin").status_code == 303
