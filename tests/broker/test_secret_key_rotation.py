"""Replacing `[broker] secret_key` with the old one kept in `previous_secret_keys`:
nobody signed in, or half-way through signing in, notices; once the old key is dropped,
what it signed is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from broker_support import TEST_SECRET_KEY, broker_of, error_code_of
from flask import Flask
from oidc_support import REDIRECT, Browser, make_oidc_app, query_of

NEW_KEY = "the-replacement-secret-key-for-these-tests-987654"


def _serve(browser: Browser, app: Flask) -> None:
    """The same browser (its cookies) now talking to `app`: an instance restarted with
    other keys on the same database."""
    browser.client.application = app


def test_a_replaced_key_kept_as_previous_still_opens_what_it_signed_and_sealed(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    old_app = make_oidc_app(app_factory, tmp_path)
    browser = Browser(old_app.test_client())
    browser.signed_in_code()  # a sign-in cookie signed with the old key
    half_way = browser.authorize(prompt="login")  # a transaction sealed with it
    tx = query_of(half_way.location)["tx"]

    rotated = make_oidc_app(
        app_factory,
        tmp_path,
        broker={"secret_key": NEW_KEY, "previous_secret_keys": [TEST_SECRET_KEY]},
    )
    _serve(browser, rotated)
    # Still signed in: a new authorization request gets its code at once.
    again = browser.authorize()
    assert again.location.startswith(REDIRECT) and "code" in again.params
    # The sign-in under way carries on (its transaction, and the browser cookie that
    # says this browser started it), to a code for the RP.
    done = browser.sign_in(half_way)
    assert done.location.startswith(REDIRECT) and "code" in done.params
    assert browser.redeem(done).status_code == 200
    fresh = browser.authorize(prompt="login")  # sealed with the new key now

    dropped = make_oidc_app(app_factory, tmp_path, broker={"secret_key": NEW_KEY})
    _serve(browser, dropped)
    # What the new key signed and sealed still holds: the sign-in made after the
    # rotation, the browser cookie, the transaction...
    still = browser.authorize()
    assert still.location.startswith(REDIRECT) and "code" in still.params
    assert browser.client.get(fresh.location).status_code == 200
    # ...and what the dropped key signed or sealed does not.
    assert broker_of(dropped).repos.transactions.get(tx) is None
    assert broker_of(rotated).repos.transactions.get(tx) is not None
    _serve(browser, old_app)
    stale = browser.authorize(prompt="login")
    _serve(browser, dropped)
    refused = browser.client.get(stale.location)
    assert refused.status_code == 400 and error_code_of(refused) == "oidc_signin_expired"
