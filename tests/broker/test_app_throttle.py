"""Throttling per account and per client address, with exponential back-off."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from broker_support import (
    DEMO_PASSWORD,
    AppFactory,
    broker_of,
    error_code_of,
    form_of,
    login_form,
    password_login,
)
from flask import Flask
from flask.testing import FlaskClient

from careid_broker.directory import Directory, MailAccount
from careid_devkit.slapd import Slapd
from support.clock import FakeClock
from support.slapd_failures import failed_binds_once_at_least

POLICY = {"first_block_seconds": 30, "max_block_seconds": 120, "window_seconds": 900}


def _from(client: FlaskClient, address: str) -> FlaskClient:
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _all_at_once(count: int, attempt: Callable[[int], str | None]) -> list[str | None]:
    """`attempt(0..count-1)` from as many threads, released together; their error codes."""
    start = threading.Barrier(count)

    def run(n: int) -> str | None:
        start.wait()
        return attempt(n)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _account_doubling_app(app_factory: AppFactory, own_slapd: Slapd) -> Flask:
    """The account's doubling on its own: two free failures, the lockout guard off."""
    return app_factory(
        directory_slapd=own_slapd,
        signin={
            **POLICY,
            "account_free_failures": 2,
            "address_free_failures": 100,
            "directory_lockout_failures": 0,
        },
    )


def test_an_account_is_blocked_then_backs_off_then_recovers(
    app_factory: AppFactory, own_slapd: Slapd, clock: FakeClock
) -> None:
    # A private directory: the failed binds below count towards its own lockout.
    # The doubling on its own: the lockout guard (tests/broker/test_app_lockout.py) is
    # off, and the four failed binds stay below this directory's lockout of five.
    app = _account_doubling_app(app_factory, own_slapd)
    client = app.test_client()
    mail = "lee.admin@nhs.net"
    for _ in range(2):
        assert error_code_of(password_login(client, mail, "wrong")) == "invalid_credentials"
    # The third failure is still answered, and blocks the account for 30 s.
    assert error_code_of(password_login(client, mail, "wrong")) == "invalid_credentials"

    blocked = password_login(client, mail, DEMO_PASSWORD)  # even the right password
    assert blocked.status_code == 429
    assert error_code_of(blocked) == "signin_throttled"
    assert blocked.headers["Retry-After"] == "30"
    assert "You can try again in 1 minute" in blocked.get_data(as_text=True)
    assert broker_of(app).repos.sessions.active_for_account(mail) == []

    # Another browser, another address: the account is what is blocked.
    elsewhere = _from(app.test_client(), "192.0.2.10")
    assert password_login(elsewhere, mail, DEMO_PASSWORD).status_code == 429

    clock.advance(timedelta(seconds=31))
    # One more failure after the block: blocked again, for twice as long.
    assert error_code_of(password_login(client, mail, "wrong")) == "invalid_credentials"
    again = password_login(client, mail, DEMO_PASSWORD)
    assert again.status_code == 429 and again.headers["Retry-After"] == "60"

    clock.advance(timedelta(seconds=61))
    assert password_login(client, mail, DEMO_PASSWORD).status_code == 303
    # Success clears the account's count.
    state = broker_of(app).password.throttle_state(mail, "127.0.0.1")[0]
    assert state.failures == 0 and not state.blocked

    codes = [e.error_code for e in broker_of(app).repos.audit.list_recent(limit=20)]
    assert codes.count("signin_throttled") == 3
    signins = broker_of(app).metrics.signins
    assert signins.value(method="password", result="signin_throttled") == 3


def test_one_address_trying_many_accounts_is_blocked(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    # Unknown addresses never reach a bind, so the shared directory is not touched.
    app = app_factory(signin={**POLICY, "account_free_failures": 50, "address_free_failures": 3})
    guesser = _from(app.test_client(), "198.51.100.7")
    for n in range(4):
        response = password_login(guesser, f"nobody{n}@nhs.net", "guess")
        assert error_code_of(response) == "invalid_credentials"
    blocked = password_login(guesser, "alex.morgan@nhs.net", DEMO_PASSWORD)
    assert blocked.status_code == 429 and error_code_of(blocked) == "signin_throttled"

    # Everyone else carries on.
    colleague = _from(app.test_client(), "198.51.100.8")
    assert password_login(colleague, "alex.morgan@nhs.net", DEMO_PASSWORD).status_code == 303

    clock.advance(timedelta(seconds=31))
    assert password_login(guesser, "alex.morgan@nhs.net", DEMO_PASSWORD).status_code == 303


def test_a_directory_lockout_is_not_revealed_and_is_audited(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    # With the broker's guard off, the demo directory's own lockout (five failed binds)
    # decides: the locked account is still answered like a wrong password, so nobody
    # learns the address is real, and the audit says it is locked.
    app = app_factory(
        directory_slapd=own_slapd,
        signin={
            "account_free_failures": 100,
            "address_free_failures": 100,
            "directory_lockout_failures": 0,
        },
    )
    client = app.test_client()
    mail = "kim.taylor@nhs.net"
    for _ in range(5):
        assert error_code_of(password_login(client, mail, "wrong")) == "invalid_credentials"
    locked = password_login(client, mail, DEMO_PASSWORD)
    assert locked.status_code == 400
    assert error_code_of(locked) == "invalid_credentials"
    assert "sign in with your smartcard" in locked.get_data(as_text=True)
    entry = broker_of(app).repos.audit.list_recent(limit=1)[0]
    assert entry.error_code == "account_locked" and entry.actor == mail


def test_guesses_from_one_address_sent_all_at_once_stop_at_its_limit(
    app_factory: AppFactory,
) -> None:
    # Each guess is booked against the address before the directory is asked, so a
    # burst cannot all pass a check made before any of them had failed. The answer
    # floor keeps the first guesses in flight while the others arrive.
    app = app_factory(signin={**POLICY, "address_free_failures": 5, "failure_answer_ms": 200})
    forms = []
    for _ in range(16):
        client = _from(app.test_client(), "198.51.100.20")
        forms.append((client, login_form(client)))

    def guess(n: int) -> str | None:
        client, token = forms[n]
        form = {"csrf_token": token, "email": f"person{n}@nhs.net", "password": "guess"}
        return error_code_of(client.post("/login", data=form))

    codes = _all_at_once(16, guess)
    # Five free failures and the sixth, which blocks: as many as one at a time would get.
    assert codes.count("invalid_credentials") == 6, codes
    assert codes.count("signin_throttled") == 10, codes


def test_guesses_at_one_account_sent_all_at_once_stop_at_its_limit_without_a_guard(
    app_factory: AppFactory,
) -> None:
    # With no directory lockout to stay short of, the account's doubling block alone
    # applies: attempts in flight still count against it until they are answered.
    app = app_factory(
        signin={
            **POLICY,
            "account_free_failures": 2,
            "address_free_failures": 100,
            "directory_lockout_failures": 0,
            "failure_answer_ms": 200,
        }
    )
    forms = []
    for n in range(12):
        client = _from(app.test_client(), f"198.51.100.{30 + n}")
        forms.append((client, login_form(client)))

    def guess(n: int) -> str | None:
        client, token = forms[n]
        form = {"csrf_token": token, "email": "alex.morgan@nhs.net", "password": f"guess{n}"}
        return error_code_of(client.post("/login", data=form))

    codes = _all_at_once(12, guess)
    assert codes.count("invalid_credentials") == 3, codes
    assert codes.count("signin_throttled") == 9, codes


def test_one_ipv6_network_is_one_address_to_the_throttle(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    # A /64 is routinely one customer's: a guesser there has millions of addresses.
    app = app_factory(signin={**POLICY, "account_free_failures": 50, "address_free_failures": 3})
    for n in range(4):
        guesser = _from(app.test_client(), f"2001:db8:1:2::{n + 1:x}")
        assert error_code_of(password_login(guesser, f"nobody{n}@nhs.net", "guess")) == (
            "invalid_credentials"
        )
    elsewhere_in_it = _from(app.test_client(), "2001:db8:1:2:ffff:ffff:ffff:fffe")
    blocked = password_login(elsewhere_in_it, "alex.morgan@nhs.net", DEMO_PASSWORD)
    assert blocked.status_code == 429 and error_code_of(blocked) == "signin_throttled"
    # The next network along is someone else.
    neighbour = _from(app.test_client(), "2001:db8:1:3::1")
    assert password_login(neighbour, "alex.morgan@nhs.net", DEMO_PASSWORD).status_code == 303


class _StopsAtTheBind:
    """The app's directory, with the slapd behind it stopped (SIGSTOP) between the search
    and the bind of each password check, once the attempt is booked: a directory that
    hangs with the bind on its way."""

    def __init__(self, real: Directory, slapd: Slapd) -> None:
        self._real = real
        self._slapd = slapd

    def authenticate(
        self,
        mail: str,
        password: str,
        *,
        before_bind: Callable[[MailAccount | None], None] | None = None,
    ) -> MailAccount:
        def then_stop(account: MailAccount | None) -> None:
            if before_bind is not None:
                before_bind(account)
            self._slapd.pause()

        return self._real.authenticate(mail, password, before_bind=then_stop)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def test_a_password_bind_the_directory_never_answered_counts_towards_its_lockout(
    app_factory: AppFactory, own_slapd: Slapd, clock: FakeClock
) -> None:
    # The demo directory locks an entry at its fifth failed bind; the broker stops at the
    # fourth. A directory that hangs after the search still takes the bind it was sent
    # when it wakes, and counts it: so must the broker, or two such attempts and the
    # four wrong guesses it would still allow lock the person out.
    app = app_factory(directory_slapd=own_slapd)
    # A sign-in keeps a user-bind connection open (a timeout there once meant a second
    # bind, on a new connection).
    assert password_login(app.test_client(), "alex.morgan@nhs.net").status_code == 303
    mail, dn = "lee.admin@nhs.net", "uid=lee.admin,ou=people,dc=nhs,dc=example"
    switch = broker_of(app).directory
    switch.use(_StopsAtTheBind(switch.real, own_slapd))
    try:
        for _ in range(2):
            hung = password_login(app.test_client(), mail, "wrong-password")
            own_slapd.resume()
            assert hung.status_code == 503
            assert error_code_of(hung) == "directory_unavailable"
    finally:
        switch.restore()
        own_slapd.resume()
    account, address = broker_of(app).password.throttle_state(mail, "127.0.0.1")
    assert account.failures == 2 and not account.blocked
    assert address.failures == 0  # a hung directory blocks no shared address
    codes = [error_code_of(password_login(app.test_client(), mail, "wrong")) for _ in range(3)]
    assert codes == ["invalid_credentials", "invalid_credentials", "signin_throttled"]
    # The directory counted one failed bind per attempt, four: one short of its lockout.
    assert failed_binds_once_at_least(own_slapd, dn, 4) == 4
    clock.advance(timedelta(minutes=15, seconds=1))
    assert password_login(app.test_client(), mail, DEMO_PASSWORD).status_code == 303
    audited = broker_of(app).repos.audit.list_recent(event_prefix="signin.password", limit=10)
    assert [e.error_code for e in audited if e.subject == mail].count("directory_unavailable") == 2


def test_a_throttled_form_sent_again_by_the_next_person_signs_nobody_in(
    app_factory: AppFactory, own_slapd: Slapd, clock: FakeClock
) -> None:
    # Lee, blocked, types the right password: the refusal is the POST's own answer. Lee
    # walks away; after the block the next person at the browser presses Back or Reload
    # and confirms "resubmit", which sends Lee's form again, password and token.
    app = _account_doubling_app(app_factory, own_slapd)
    workstation = app.test_client()
    mail = "lee.admin@nhs.net"
    for _ in range(3):
        assert error_code_of(password_login(workstation, mail, "wrong")) == "invalid_credentials"
    form = {"csrf_token": login_form(workstation), "email": mail, "password": DEMO_PASSWORD}
    blocked = workstation.post("/login", data=form)
    assert blocked.status_code == 429 and error_code_of(blocked) == "signin_throttled"
    clock.advance(timedelta(seconds=31))
    broker = broker_of(app)
    before = broker.password.throttle_state(mail, "127.0.0.1")
    attempts = len(broker.repos.audit.list_recent(event_prefix="signin.password", limit=50))

    replay = workstation.post("/login", data=form)
    assert replay.status_code == 400 and error_code_of(replay) == "csrf_invalid"
    assert broker.repos.sessions.active_for_account(mail) == []
    page = replay.get_data(as_text=True)
    assert f'value="{mail}"' in page and DEMO_PASSWORD not in page
    refused = broker.repos.audit.list_recent(event_prefix="csrf.", limit=1)[0]
    assert refused.error_code == "csrf_invalid" and refused.details["endpoint"] == "login.submit"
    # Refused before the password was looked at: no attempt, counted or audited.
    assert broker.password.throttle_state(mail, "127.0.0.1") == before
    after = broker.repos.audit.list_recent(event_prefix="signin.password", limit=50)
    assert len(after) == attempts
    # The page the refusal shows takes the password typed again.
    retry = workstation.post("/login", data=form_of(page, email=mail, password=DEMO_PASSWORD))
    assert retry.status_code == 303
    assert len(broker.repos.sessions.active_for_account(mail)) == 1
