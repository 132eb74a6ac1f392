"""The adapter when the directory is down, hung, misconfigured, or one of several."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from directory_support import make_directory

from careid_broker.codes import BrokerCode, message_for
from careid_broker.directory import DirectoryConfig, LdapDirectory
from careid_broker.errors import (
    BindUnansweredError,
    DirectoryUnavailableError,
    InvalidCredentialsError,
)
from careid_devkit.slapd import DEMO_USER_PASSWORD, Slapd
from support.slapd_failures import failed_binds, failed_binds_once_at_least

pytestmark = pytest.mark.slapd

ALEX = "alex.morgan@nhs.net"
LEE = "lee.admin@nhs.net"
LEE_DN = "uid=lee.admin,ou=people,dc=nhs,dc=example"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here once the socket is closed


def _timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except DirectoryUnavailableError as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_directory_down_then_back_without_restarting_the_adapter(own_slapd: Slapd) -> None:
    directory = make_directory(own_slapd)
    assert directory.find_account(ALEX) is not None

    own_slapd.stop()
    error, elapsed = _timed(lambda: directory.find_account(ALEX))
    assert isinstance(error, DirectoryUnavailableError)
    assert error.code == BrokerCode.DIRECTORY_UNAVAILABLE
    assert error.message == message_for(BrokerCode.DIRECTORY_UNAVAILABLE)
    assert elapsed < 2.0  # within the 1 s connect timeout (refused at once, in fact)
    # Down means denied, for every operation — never "no such user" or "wrong password".
    with pytest.raises(DirectoryUnavailableError):
        directory.authenticate(ALEX, DEMO_USER_PASSWORD)
    with pytest.raises(DirectoryUnavailableError):
        directory.find_care_identity("555000000001")
    with pytest.raises(DirectoryUnavailableError):
        directory.search_accounts("", ["RX1"])
    assert directory.ping() is False

    own_slapd.start()  # same port, same data
    assert directory.ping() is True
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX


def test_hung_directory_is_unavailable_within_the_receive_timeout(own_slapd: Slapd) -> None:
    directory = make_directory(own_slapd, receive_timeout=1.0)
    own_slapd.pause()
    try:
        error, elapsed = _timed(lambda: directory.find_account(ALEX))
        assert isinstance(error, DirectoryUnavailableError)
        assert 0.9 <= elapsed < 3.0
        error, elapsed = _timed(lambda: directory.authenticate(ALEX, DEMO_USER_PASSWORD))
        assert isinstance(error, DirectoryUnavailableError)
        assert elapsed < 3.0
    finally:
        own_slapd.resume()
    assert directory.find_account(ALEX) is not None


def test_failover_to_the_next_server(own_slapd: Slapd) -> None:
    dead = f"ldap://127.0.0.1:{_closed_port()}"
    directory = make_directory(own_slapd, urls=[dead, own_slapd.url])
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    assert directory.ping() is True


def test_a_hung_server_is_skipped_for_a_while_after_it_failed(
    slapd_factory: Callable[..., Slapd],
) -> None:
    first, second = slapd_factory(), slapd_factory()
    directory = make_directory(
        first, urls=[first.url, second.url], receive_timeout=1.0, server_retry_after=60
    )
    first.pause()
    try:
        _, slow = _timed(lambda: directory.find_account(ALEX))
        assert slow >= 0.9  # paid one receive timeout on the hung server, then used the other
        started = time.monotonic()
        assert directory.find_account(ALEX) is not None
        assert time.monotonic() - started < 0.5  # the hung server now goes last
    finally:
        first.resume()


def test_every_server_down_names_each_failure(own_slapd: Slapd) -> None:
    ports = [_closed_port(), _closed_port()]
    directory = make_directory(own_slapd, urls=[f"ldap://127.0.0.1:{p}" for p in ports])
    with pytest.raises(DirectoryUnavailableError) as caught:
        directory.find_account(ALEX)
    assert caught.value.detail is not None
    for port in ports:
        assert str(port) in caught.value.detail


def test_wrong_service_password_is_unavailable_not_a_user_error(demo_slapd: Slapd) -> None:
    directory = make_directory(demo_slapd, bind_password="not-the-service-password")
    with pytest.raises(DirectoryUnavailableError) as caught:
        directory.authenticate(ALEX, DEMO_USER_PASSWORD)
    assert "service account bind refused" in (caught.value.detail or "")
    assert "not-the-service-password" not in str(caught.value)
    assert directory.ping() is False


def test_a_missing_search_base_is_a_fault_not_an_unknown_user(demo_slapd: Slapd) -> None:
    directory = make_directory(demo_slapd, accounts_base="ou=nobody,dc=nhs,dc=example")
    with pytest.raises(DirectoryUnavailableError) as caught:
        directory.find_account(ALEX)
    assert "noSuchObject" in (caught.value.detail or "")


def test_round_robin_keeps_working_with_one_server_down(
    slapd_factory: Callable[..., Slapd],
) -> None:
    first, second = slapd_factory(), slapd_factory()
    settings = first.directory_settings(
        urls=[first.url, second.url], pool_strategy="round_robin", server_retry_after=0
    )
    directory = LdapDirectory(DirectoryConfig.from_mapping(settings))
    second.stop()
    # Round robin starts each request on the next server: with one of two down, every
    # request still succeeds (the next in turn answers).
    for _ in range(4):
        assert directory.find_account(ALEX) is not None


# Kept (pooled) connections.


class _Counting:
    """A pool observer that counts round trips and open connections."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.open = 0

    def connection_opened(self) -> None:
        self.open += 1

    def connection_closed(self) -> None:
        self.open -= 1

    def server_answered(self, server: str, *, answered: bool) -> None:
        pass

    def request_sent(self, operation: str) -> None:
        self.requests[operation] = self.requests.get(operation, 0) + 1


def _with_observer(slapd: Slapd, observer: _Counting, **settings: object) -> LdapDirectory:
    config = make_directory(slapd, **settings).config
    return LdapDirectory(config, observer=observer)


def test_searches_reuse_a_bound_service_connection(own_slapd: Slapd) -> None:
    counting = _Counting()
    directory = _with_observer(own_slapd, counting)
    for _ in range(5):
        assert directory.find_account(ALEX) is not None
    # One connect and one bind for five searches; the connection stays open, kept.
    assert counting.requests == {"connect": 1, "bind": 1, "search": 5}
    assert counting.open == 1


def test_password_checks_rebind_a_kept_user_connection_never_used_for_searches(
    own_slapd: Slapd,
) -> None:
    counting = _Counting()
    directory = _with_observer(own_slapd, counting)
    for _ in range(3):
        assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    # Each check: a search as the service account and a bind as the user, on two kept
    # connections (service, user binds): 2 connects in all, 1 service bind + 3 user binds.
    assert counting.requests == {"connect": 2, "bind": 4, "search": 3}
    # A wrong password is refused, and the connection that saw it is closed, not kept.
    with pytest.raises(InvalidCredentialsError):
        directory.authenticate(ALEX, "not-the-password")
    assert counting.requests["unbind"] == 1
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX


def test_a_kept_connection_dropped_by_a_restart_is_replaced_without_an_error(
    own_slapd: Slapd,
) -> None:
    counting = _Counting()
    directory = _with_observer(own_slapd, counting)
    assert directory.find_account(ALEX) is not None
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    own_slapd.stop()
    own_slapd.start()  # every kept connection is now dead
    assert directory.find_account(ALEX) is not None
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    assert directory.ping() is True
    assert counting.requests["connect"] == 4  # two first, two after the restart


def test_a_connection_idle_too_long_is_closed_not_reused(own_slapd: Slapd) -> None:
    now = [1000.0]
    counting = _Counting()
    config = make_directory(own_slapd, connection_max_idle_seconds=30).config
    directory = LdapDirectory(config, observer=counting, monotonic=lambda: now[0])
    assert directory.find_account(ALEX) is not None
    now[0] += 31
    assert directory.find_account(ALEX) is not None
    assert counting.requests["connect"] == 2 and counting.open == 1


def test_with_no_pool_every_operation_has_its_own_connection(own_slapd: Slapd) -> None:
    counting = _Counting()
    directory = _with_observer(own_slapd, counting, connection_pool_size=0)
    for _ in range(3):
        assert directory.find_account(ALEX) is not None
    assert counting.requests == {"connect": 3, "bind": 3, "search": 3, "unbind": 3}
    assert counting.open == 0


# A password bind the directory does not answer.


def test_a_password_bind_with_no_answer_is_sent_once_and_never_to_another_server(
    slapd_factory: Callable[..., Slapd],
) -> None:
    first, second = slapd_factory(), slapd_factory()
    counting = _Counting()
    directory = _with_observer(first, counting, urls=[first.url, second.url])
    # A password check leaves a kept user-bind connection to the first server.
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    binds = counting.requests["bind"]
    try:
        # The first server stops answering after the search, before the bind reaches it.
        with pytest.raises(BindUnansweredError) as caught:
            directory.authenticate(LEE, "wrong-password", before_bind=lambda _: first.pause())
    finally:
        first.resume()
    assert caught.value.code == BrokerCode.DIRECTORY_UNAVAILABLE
    assert caught.value.message == message_for(BrokerCode.DIRECTORY_UNAVAILABLE)
    # One bind: not again on a new connection when the kept one timed out, nor at the
    # second server, which would count a failure of its own.
    assert counting.requests["bind"] == binds + 1
    assert failed_binds(second, LEE_DN) == 0
    # The first server took the bind it had once it woke, and counted it: the reason the
    # sign-in counts such an attempt as a failure (tests/broker/test_app_throttle.py).
    assert failed_binds_once_at_least(first, LEE_DN, 1) == 1


def test_a_kept_connection_the_server_closed_is_found_before_a_password_is_sent(
    own_slapd: Slapd,
) -> None:
    counting = _Counting()
    directory = _with_observer(own_slapd, counting)
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    own_slapd.stop()
    own_slapd.start()  # the kept service and user-bind connections are now closed
    binds = counting.requests["bind"]
    # A password bind is never sent twice, so a dead connection must be found before
    # it is sent one: the sign-in works, with one service bind and one user bind, both
    # on new connections.
    assert directory.authenticate(ALEX, DEMO_USER_PASSWORD).mail == ALEX
    assert counting.requests["bind"] == binds + 2
    assert counting.open == 2
