"""Nobody can lock anyone out, or learn who exists, by typing wrong passwords.

Against a real slapd whose password policy is the demo's (five failures within 15
minutes lock the account for 15 minutes): the broker stops one failure short of that,
answers a real address and an unknown one alike, and still tells a real person what to
do. A card keeps working for an account whose password is locked.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from broker_support import DEMO_PASSWORD, AppFactory, broker_of, error_code_of, password_login
from card_fixtures import CardAppFactory
from card_support import ALEX, CardBrowser, CardPki, register_card
from flask.testing import FlaskClient
from ldap3 import MODIFY_ADD, Connection, Server
from werkzeug.test import TestResponse

from careid_broker.errors import InvalidCredentialsError
from careid_broker.signin.password import PasswordSignin, ThrottlePolicies
from careid_devkit.slapd import Slapd
from support.clock import FakeClock

REAL = "lee.admin@nhs.net"
REAL_DN = "uid=lee.admin,ou=people,dc=nhs,dc=example"
UNKNOWN = "nobody.here@nhs.net"


def _answer(response: TestResponse) -> tuple[int, str | None, str | None]:  # Answer
    """What the person sees, minus what differs per request (ids, tokens)."""
    return response.status_code, error_code_of(response), response.headers.get("Retry-After")


def _attempts(
    client: FlaskClient, mail: str, count: int
) -> list[tuple[int, str | None, str | None]]:
    return [_answer(password_login(client, mail, "wrong-password")) for _ in range(count)]


def _binds_in_the_directory(slapd: Slapd, dn: str, password: str) -> bool:
    """Whether slapd itself accepts that password for the entry now (not locked)."""
    connection = Connection(Server(slapd.url, connect_timeout=2), user=dn, password=password)
    try:
        return bool(connection.bind())
    finally:
        connection.unbind()


def _add_mail(slapd: Slapd, dn: str, mail: str) -> None:
    """Give the entry a second `mail` value (inetOrgPerson's is multi-valued)."""
    root = Connection(Server(slapd.url), user=slapd.root_dn, password=slapd.root_password)
    assert root.bind()
    try:
        assert root.modify(dn, {"mail": [(MODIFY_ADD, [mail])]}), root.result
    finally:
        root.unbind()


def _lock_in_the_directory(slapd: Slapd, mail: str) -> None:
    """Five wrong binds straight at slapd, as another service could make them."""
    uid = mail.split("@")[0]
    dn = f"uid={uid},ou=people,dc=nhs,dc=example"
    server = Server(slapd.url, connect_timeout=2)
    for _ in range(5):
        connection = Connection(server, user=dn, password="wrong-password")
        try:
            assert not connection.bind()
        finally:
            connection.unbind()


def test_real_and_unknown_addresses_get_the_same_answers_and_nothing_is_locked(
    app_factory: AppFactory, own_slapd: Slapd, clock: FakeClock
) -> None:
    app = app_factory(directory_slapd=own_slapd)
    real = _attempts(app.test_client(), REAL, 6)
    unknown = _attempts(app.test_client(), UNKNOWN, 6)
    assert real == unknown
    # Four tries reach the directory, then the broker itself holds both for 15 minutes.
    assert real[:4] == [(400, "invalid_credentials", None)] * 4
    assert real[4:] == [(429, "signin_throttled", "900")] * 2
    # The person is told what to do, whichever address they typed.
    page = password_login(app.test_client(), UNKNOWN, "x").get_data(as_text=True)
    assert "sign in with your smartcard" in page
    # The directory never saw its fifth failure: once the hold is over the real person
    # signs in at once, where a directory lockout would refuse them for 15 more minutes.
    clock.advance(timedelta(minutes=15, seconds=1))
    assert password_login(app.test_client(), REAL, DEMO_PASSWORD).status_code == 303


def test_wrong_passwords_sent_all_at_once_still_stop_short_of_the_directorys_lockout(
    app_factory: AppFactory, own_slapd: Slapd, clock: FakeClock
) -> None:
    # Twelve guesses at the same moment, through as many connections: each would pass a
    # check of the counters made before any of them had failed.
    app = app_factory(directory_slapd=own_slapd)
    start = threading.Barrier(12)

    def guess(_: int) -> tuple[int, str | None, str | None]:
        client = app.test_client()
        start.wait()
        return _answer(password_login(client, REAL, "wrong-password"))

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(guess, range(12)))
    assert answers.count((400, "invalid_credentials", None)) == 4, answers
    assert {a[:2] for a in answers} == {(400, "invalid_credentials"), (429, "signin_throttled")}
    # The directory saw four failures, not twelve: once the broker's hold is over the
    # real person signs in at once (slapd's own clock has not moved: a lockout there
    # would still refuse them).
    clock.advance(timedelta(minutes=15, seconds=1))
    assert password_login(app.test_client(), REAL, DEMO_PASSWORD).status_code == 303


def test_an_entry_with_two_mail_addresses_has_one_guard(
    app_factory: AppFactory, own_slapd: Slapd, clock: FakeClock
) -> None:
    # The directory counts failed binds per entry, whichever of its addresses was typed:
    # so does the broker. Five wrong passwords at each address would lock it otherwise.
    alias = "lee.alias@nhs.net"
    _add_mail(own_slapd, REAL_DN, alias)
    app = app_factory(directory_slapd=own_slapd)
    typed = [REAL, alias, " LEE.ALIAS@nhs.net", REAL] * 3
    answers = [_answer(password_login(app.test_client(), mail, "wrong-password")) for mail in typed]
    assert answers[:4] == [(400, "invalid_credentials", None)] * 4
    assert answers[4:] == [(429, "signin_throttled", "900")] * 8
    # Held by the broker, not locked in the directory: slapd still takes the password,
    # and once the hold is over the person signs in by either address.
    assert _binds_in_the_directory(own_slapd, REAL_DN, DEMO_PASSWORD)
    clock.advance(timedelta(minutes=15, seconds=1))
    assert password_login(app.test_client(), alias, DEMO_PASSWORD).status_code == 303
    assert password_login(app.test_client(), REAL, DEMO_PASSWORD).status_code == 303


def test_one_person_signing_in_from_many_places_at_once_is_not_refused(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    # Attempts in flight count against the guard only until they are answered: right
    # passwords at once wait their turn briefly, none is refused.
    app = app_factory(directory_slapd=own_slapd)
    start = threading.Barrier(10)

    def sign_in(_: int) -> int:
        client = app.test_client()
        start.wait()
        return password_login(client, REAL, DEMO_PASSWORD).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert list(pool.map(sign_in, range(10))) == [303] * 10


def test_an_account_locked_in_the_directory_looks_like_a_wrong_password(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    app = app_factory(directory_slapd=own_slapd)
    _lock_in_the_directory(own_slapd, REAL)
    locked = password_login(app.test_client(), REAL, DEMO_PASSWORD)  # the right password
    unknown = password_login(app.test_client(), UNKNOWN, DEMO_PASSWORD)
    assert _answer(locked) == _answer(unknown) == (400, "invalid_credentials", None)
    # The audit says what really happened.
    entries = broker_of(app).repos.audit.list_recent(event_prefix="signin.password", limit=2)
    assert [e.error_code for e in entries] == ["invalid_credentials", "account_locked"]


def test_a_card_signs_in_an_account_whose_password_is_locked(
    card_app_factory: CardAppFactory, card_pki: CardPki, own_slapd: Slapd
) -> None:
    app = card_app_factory(directory_slapd=own_slapd)
    agent = card_pki.agent("alex")
    register_card(app, agent, ALEX[0])
    _lock_in_the_directory(own_slapd, ALEX[0])
    assert password_login(app.test_client(), ALEX[0], DEMO_PASSWORD).status_code == 400
    browser = CardBrowser(app.test_client())
    browser.open_login()
    answer = browser.sign_in(agent)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert broker_of(app).repos.sessions.active_for_account(ALEX[0])


class _Stopwatch:
    """A monotonic clock on which each reading is `directory_takes` after the last (so
    from before the directory call to after it), and the waits asked of it."""

    def __init__(self, directory_takes: float) -> None:
        self.now = 100.0
        self.directory_takes = directory_takes
        self.waits: list[float] = []

    def monotonic(self) -> float:
        now = self.now
        self.now += self.directory_takes
        return now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("mail", "password"), [(REAL, "wrong-password"), (UNKNOWN, "x")])
def test_a_refusal_waits_out_the_floor_and_a_sign_in_does_not(
    app_factory: AppFactory, own_slapd: Slapd, mail: str, password: str
) -> None:
    # The directory does a little more for a real entry than for a name no entry has
    # (bench/password_timing.py measures it): every refusal is held to the same floor.
    app = app_factory(directory_slapd=own_slapd, signin={"failure_answer_ms": 50})
    broker = broker_of(app)
    assert broker.config.signin.failure_answer_floor == timedelta(milliseconds=50)
    watch = _Stopwatch(directory_takes=0.008)
    signin = PasswordSignin(
        directory=broker.directory,
        throttle=broker.repos.throttle,
        policies=ThrottlePolicies(
            account=broker.config.signin.account_throttle,
            address=broker.config.signin.address_throttle,
        ),
        failure_floor=broker.config.signin.failure_answer_floor,
        monotonic=watch.monotonic,
        sleep=watch.sleep,
    )
    with pytest.raises(InvalidCredentialsError):
        signin.check(mail, password, client_address="192.0.2.10")
    assert watch.waits == [pytest.approx(0.050 - 0.008)]
    # A right password is answered at once: nothing to hide from someone who knows it.
    watch.waits.clear()
    assert signin.check(REAL, DEMO_PASSWORD, client_address="192.0.2.10").allowed
    assert watch.waits == []


def test_the_floor_can_be_turned_off(app_factory: AppFactory) -> None:
    app = app_factory(signin={"failure_answer_ms": 0})
    assert broker_of(app).config.signin.failure_answer_floor == timedelta(0)
    assert password_login(app.test_client(), UNKNOWN, "x").status_code == 400
