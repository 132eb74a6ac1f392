"""The store work a sign-in's requests do: each request reads in one read-only
transaction and commits at most once (the throughput issue's rules, checked on the real
app: slapd for the password, the store on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import broker_of
from flask import Flask
from oidc_support import Browser, make_oidc_app
from sqlalchemy import event

from careid_broker.store.engine import WRITE_OPTION


@pytest.fixture
def oidc_app(app_factory: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_oidc_app(app_factory, tmp_path)


@pytest.fixture
def begins(oidc_app: Flask) -> Iterator[Counter[str]]:
    """Transactions begun on the app's database, by kind, while the test runs."""
    counted: Counter[str] = Counter()
    store = broker_of(oidc_app).store
    # PostgreSQL's reads run on a pool of their own (autocommit, read-only).
    engines = {store.engine, store.read_engine}

    def begun(conn: Any) -> None:
        counted["write" if conn.get_execution_options().get(WRITE_OPTION) else "read"] += 1

    for engine in engines:
        event.listen(engine, "begin", begun)
    yield counted
    for engine in engines:
        event.remove(engine, "begin", begun)


def _counted(begins: Counter[str], request: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    begins.clear()
    result = request()
    return result, {"read": begins["read"], "write": begins["write"]}


def test_each_request_of_a_password_sign_in_reads_once_and_commits_at_most_once(
    oidc_app: Flask, begins: Counter[str]
) -> None:
    browser = Browser(oidc_app.test_client())
    client = browser.client
    started, work = _counted(begins, browser.authorize)
    # Nothing: the login transaction is sealed into its id (`store/transactions.py`).
    assert work == {"read": 0, "write": 0}
    login = started.location
    page, work = _counted(begins, lambda: client.get(login))
    assert page.status_code == 200 and work == {"read": 1, "write": 0}
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    form = {
        "csrf_token": token,
        "tx": login.split("tx=")[1].split("&")[0],
        "email": "alex.morgan@nhs.net",
        "password": "Demo-Password-1",
    }
    posted, work = _counted(begins, lambda: client.post("/login", data=form))
    # The login transaction and the throttle read together; the attempt booked against
    # the account's lockout guard, committed before the bind (the one request that
    # commits twice, on purpose: every worker must see the booking while the directory
    # is asked); then the session, its subject, the completed transaction, the code,
    # both audit entries, the attempt's release and the transaction's completion written
    # together.
    assert posted.status_code == 303 and "code=" in posted.headers["Location"]
    assert work == {"read": 1, "write": 2}
