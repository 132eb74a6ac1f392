"""Connections to the directory, over TLS when configured, kept bound, with failover.

Every operation runs on a connection to the first server in the pool's order that
answers, bound as the account the operation needs. Connections are kept open between
operations (`connection_pool_size` per server and account, in this process):

- the service and writer accounts' connections stay bound as those accounts, so a
  search is one round trip instead of connect, bind, search and unbind;
- a user's password check re-binds a kept user-bind connection (a bind replaces the
  connection's identity; a failed one leaves it anonymous, RFC 4511 §4.2.1). These
  connections are used for binds and nothing else, so no search ever runs as a user.

A kept connection unused for `connection_max_idle_seconds` is closed, not reused, and so
is one the server has closed or has written to meanwhile (found before anything is
sent on it). A service or writer operation that fails on a kept connection is tried
once more on a new connection to the same server (it was probably dropped while idle)
before the server counts as failed. A user's password bind is never sent twice: once
it may have left, a timeout or a broken connection ends the attempt with
`BindUnansweredError`, on no other connection and no other server, since the
directory may still take the bind it has and count it towards its lockout. Any
connection that saw an error or a refusal is closed, never kept. Anything unexpected —
a refused connection, a timeout, a TLS failure, a result code we do not expect —
becomes `DirectoryUnavailableError`: the broker denies, never allows.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, cast

from ldap3 import BASE, SIMPLE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3 import NONE as NO_SERVER_INFO
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError

from careid_broker.directory.bindresult import PPOLICY_REQUEST
from careid_broker.directory.config import DirectoryConfig, ServerAddress, TlsMode
from careid_broker.directory.pool import UNOBSERVED, PoolObserver, ServerPool
from careid_broker.directory.refusal import refusal_for, restriction_after_bind
from careid_broker.directory.search_request import Search, send_search
from careid_broker.errors import BindUnansweredError, BrokerError, DirectoryUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

# RFC 4511 result codes the adapter tells apart.
RESULT_SUCCESS = 0
RESULT_SIZE_LIMIT_EXCEEDED = 4
# ldap3's scope names as the protocol's numbers (RFC 4511 §4.5.1.2).
_SCOPES = {BASE: 0, SUBTREE: 2}


class ServerFault(Exception):
    """This server answered, but not usefully: try the next one, then deny."""


class BindRefused(ServerFault):
    """The server refused the broker's own account: `result` is the RFC 4511 code."""

    def __init__(self, role: BindRole, result: int | None, description: str | None) -> None:
        super().__init__(f"{role.value} account bind refused: {description}")
        self.role = role
        self.result = result
        self.description = description


class BindSent(Exception):
    """A user's bind left for the server (or may have) and no answer came back.

    Never tried again, here or on another server: the server may still take the bind it
    has and count it.
    """


class BindRole(Enum):
    """Whose credentials a connection binds with."""

    SERVICE = "service"
    WRITER = "writer"
    USER = "user"


@dataclass(frozen=True, kw_only=True)
class BindAccount:
    """A DN and password to bind with (the password never appears in repr or logs).

    The password is bytes: ldap3 would otherwise SASLprep (NFKC-normalise) a str, and
    raise on some characters; the directory should check exactly what was typed.
    """

    role: BindRole
    dn: str
    password: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A search result: its DN and attribute values, names folded to lower case."""

    dn: str
    values: Mapping[str, list[str]]

    def get(self, attribute: str | None) -> list[str]:
        """All values of an attribute (none when absent or not mapped)."""
        if not attribute:
            return []
        return self.values.get(attribute.casefold(), [])

    def first(self, attribute: str | None) -> str | None:
        """The first non-blank value of an attribute, stripped."""
        for value in self.get(attribute):
            if value.strip():
                return value.strip()
        return None


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """Entries found, and whether the server stopped at the size limit."""

    entries: list[Entry]
    truncated: bool


class _VerifyingTls(Tls):  # type: ignore[misc]  # ldap3 ships no type information
    """TLS that checks the chain and the host name with the ssl module itself.

    ldap3's own wrapper turns the context's hostname check off and calls the deprecated
    `ssl.match_hostname` afterwards; here the standard context does both, during the
    handshake, for LDAPS and StartTLS alike.
    """

    def __init__(self, ca_file: Path | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
        )
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


@dataclass(kw_only=True, slots=True)
class _Kept:
    connection: Connection
    idle_since: float


def _close_kept(kept: dict[tuple[int, BindRole], list[_Kept]], pid: int) -> None:
    if pid == os.getpid():
        for items in kept.values():
            for item in items:
                _close(item.connection)
    kept.clear()


class _KeptConnections:
    """Bound connections kept between operations, by (server, account role).

    Per process: after a fork the child forgets its parent's connections (their
    sockets are shared with the parent, which may still use them) and opens its own.
    """

    def __init__(self, *, size: int, max_idle: float, monotonic: Callable[[], float]) -> None:
        self._size = size
        self._max_idle = max_idle
        self._monotonic = monotonic
        self._kept: dict[tuple[int, BindRole], list[_Kept]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Closed with their owner, even when nobody calls `close()` (an adapter made
        # and dropped, in tests or by the CLI).
        weakref.finalize(self, _close_kept, self._kept, self._pid)

    def close(self) -> None:
        """Close every kept connection (at shutdown)."""
        with self._lock:
            _close_kept(self._kept, self._pid)

    def take(self, key: tuple[int, BindRole]) -> tuple[Connection | None, list[Connection]]:
        """A kept connection for `key` (the most recently used), and stale ones to close."""
        stale: list[Connection] = []
        now = self._monotonic()
        with self._lock:
            if self._pid != os.getpid():
                self._kept.clear()  # the parent's: never touch them
                self._pid = os.getpid()
            kept = self._kept.get(key, [])
            while kept:
                item = kept.pop()
                if now - item.idle_since <= self._max_idle and _quiet(item.connection):
                    return item.connection, stale
                stale.append(item.connection)
        return None, stale

    def give(self, key: tuple[int, BindRole], connection: Connection) -> bool:
        """Keep `connection` for later; False (the caller closes it) when full."""
        with self._lock:
            if self._pid != os.getpid():
                return False
            kept = self._kept.setdefault(key, [])
            if len(kept) >= self._size:
                return False
            kept.append(_Kept(connection=connection, idle_since=self._monotonic()))
            return True


class Connector:
    """Runs operations on kept, bound connections, failing over across servers."""

    def __init__(
        self,
        config: DirectoryConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        observer: PoolObserver = UNOBSERVED,
    ) -> None:
        self._config = config
        self._observer = observer
        self._pool: ServerPool[ServerAddress] = ServerPool(
            config.servers(),
            strategy=config.pool_strategy,
            retry_after=config.server_retry_after,
            monotonic=monotonic,
        )
        self._tls = _VerifyingTls(config.ca_file) if config.use_tls is not TlsMode.NONE else None
        # ldap3 writes the receive timeout into SO_RCVTIMEO as an integer of seconds.
        self._receive_timeout = max(1, math.ceil(config.receive_timeout))
        self._kept = _KeptConnections(
            size=config.connection_pool_size,
            max_idle=config.connection_max_idle_seconds,
            monotonic=monotonic,
        )

    def close(self) -> None:
        """Close the connections kept between operations."""
        self._kept.close()

    @property
    def time_limit(self) -> int:
        """The server-side time limit for searches, in whole seconds."""
        return self._receive_timeout

    def run(self, account: BindAccount, operation: Callable[[Connection], T]) -> T:
        """Bind as `account` and run `operation`; the first server that answers wins.

        A `BrokerError` (wrong password, locked account, ambiguous data) is an answer
        and ends the attempt; a transport failure or `ServerFault` moves on to the next
        server; when none is left, `DirectoryUnavailableError` names each failure. A
        user's bind that may have left and got no answer ends the attempt at once with
        `BindUnansweredError`.
        """
        failures: list[str] = []
        for index, address in self._pool.order():
            key = (index, account.role)
            reused, stale = self._kept.take(key)
            for old in stale:
                self._discard(old)
            try:
                if reused is not None:
                    try:
                        result = self._on(key, reused, address, account, operation)
                    except (LDAPException, OSError) as exc:
                        # Most likely dropped while it sat idle: one more try, afresh. (A
                        # user's bind that may have left is `BindSent`, not retried.)
                        log.info("kept directory connection to %s failed: %s", address.url, exc)
                        result = self._on(key, None, address, account, operation)
                else:
                    result = self._on(key, None, address, account, operation)
            except BindSent as exc:
                failures.append(f"{address.url}: {exc}")
                self._failed(index, address)
                detail = "; ".join(failures)
                log.warning("directory did not answer a password bind: %s", detail)
                raise BindUnansweredError(detail=detail) from exc
            except BrokerError:
                self._answered(index, address)
                raise
            except ServerFault as exc:
                failures.append(f"{address.url}: {exc}")
                self._failed(index, address)
                continue
            except (LDAPException, OSError) as exc:
                failures.append(f"{address.url}: {type(exc).__name__}: {exc}")
                self._failed(index, address)
                continue
            self._answered(index, address)
            return result
        detail = "; ".join(failures)
        log.warning("directory unavailable (%s bind): %s", account.role.value, detail)
        raise DirectoryUnavailableError(detail=detail)

    def attempt(
        self, address: ServerAddress, account: BindAccount, operation: Callable[[Connection], T]
    ) -> T:
        """Bind on this one server and run `operation`, raising whatever went wrong.

        For diagnostics (`check-config --connect`), which want each server's own answer:
        no failover, and the pool's view of the servers is left as it was.
        """
        connection = self._connection(address, account)
        try:
            self._open(connection, address)
            self._bind(connection, account)
            return operation(connection)
        finally:
            _close(connection)

    def _on(
        self,
        key: tuple[int, BindRole],
        kept: Connection | None,
        address: ServerAddress,
        account: BindAccount,
        operation: Callable[[Connection], T],
    ) -> T:
        """Run `operation` on `kept` (or a new connection); keep the connection after a
        clean success, close it after anything else."""
        if kept is None:
            connection = self._connection(address, account)
            self._observer.connection_opened()
        else:
            connection = kept
        clean = False
        try:
            if kept is None:
                self._open(connection, address)
                self._bind(connection, account)
            elif account.role is BindRole.USER:
                # A kept service or writer connection is still bound as that account; a
                # user-bind connection binds again, as this user.
                connection.user, connection.password = account.dn, account.password
                self._bind(connection, account)
            result = operation(connection)
            clean = True
            return result
        finally:
            if account.role is BindRole.USER:
                connection.password = None  # not kept in memory longer than the bind
            if not (clean and self._kept.give(key, connection)):
                self._discard(connection)

    def _discard(self, connection: Connection) -> None:
        self._observer.request_sent("unbind")
        _close(connection)
        self._observer.connection_closed()

    def _answered(self, index: int, address: ServerAddress) -> None:
        self._pool.mark_ok(index)
        self._observer.server_answered(address.url, answered=True)

    def _failed(self, index: int, address: ServerAddress) -> None:
        self._pool.mark_failed(index)
        self._observer.server_answered(address.url, answered=False)

    def _connection(self, address: ServerAddress, account: BindAccount) -> Connection:
        server = Server(
            address.host,
            port=address.port,
            use_ssl=address.use_ssl,
            tls=self._tls,
            get_info=NO_SERVER_INFO,
            connect_timeout=self._config.connect_timeout,
        )
        return Connection(
            server,
            user=account.dn,
            password=account.password,
            authentication=SIMPLE,
            client_strategy=SYNC,
            auto_bind=False,
            raise_exceptions=False,
            # Referrals would send these credentials to a server we were not given.
            auto_referrals=False,
            read_only=account.role is not BindRole.WRITER,
            receive_timeout=self._receive_timeout,
            check_names=False,
        )

    def _open(self, connection: Connection, address: ServerAddress) -> None:
        self._observer.request_sent("connect")
        connection.open(read_server_info=False)
        if self._config.use_tls is TlsMode.STARTTLS:
            self._observer.request_sent("starttls")
            # ldap3 raises on failure; a False return (operations pending) is a failure too.
            if not connection.start_tls(read_server_info=False):
                raise ServerFault("StartTLS was not established")

    def _bind(self, connection: Connection, account: BindAccount) -> None:
        if account.role is BindRole.USER:
            self._bind_user(connection)
            return
        self._observer.request_sent("bind")
        if connection.bind(read_server_info=False):
            return
        result = cast(dict[str, Any], connection.result or {})
        # The broker's own account was refused: a configuration fault (or a directory in
        # trouble), never the user's — the same on every server, but try them all.
        raise BindRefused(account.role, result.get("result"), result.get("description"))

    def _bind_user(self, connection: Connection) -> None:
        """Bind as the user, with the password policy request control: the refusal or
        restriction the server answered, or `BindSent` when no answer came back once the
        bind may have left."""
        self._observer.request_sent("bind")
        try:
            bound = connection.bind(read_server_info=False, controls=[PPOLICY_REQUEST])
        except LDAPSocketOpenError:
            raise  # the connection was not open: nothing was sent
        except (LDAPException, OSError) as exc:
            # A timeout, or a connection broken while sending or waiting: the request
            # may be in the server's hands already.
            raise BindSent(f"no answer to the user bind: {type(exc).__name__}: {exc}") from exc
        result = cast(dict[str, Any], connection.result or {})
        if bound:
            restriction = restriction_after_bind(result)
            if restriction is not None:
                raise restriction
            return
        if result.get("result") is None:
            raise BindSent("the user bind ended without a result")
        raise refusal_for(result)

    def search(
        self,
        connection: Connection,
        *,
        base: str,
        search_filter: str,
        attributes: list[str],
        size_limit: int,
        base_only: bool = False,
        binary: frozenset[str] = frozenset(),
    ) -> SearchResult:
        """Run a search on a bound connection and decode every value as UTF-8, but
        those of the `binary` attributes (names folded) as hex."""
        self._observer.request_sent("search")
        scope = BASE if base_only else SUBTREE
        search = Search(
            base=base,
            scope=_SCOPES[scope],
            size_limit=size_limit,
            time_limit=self._receive_timeout,
            search_filter=search_filter,
            attributes=attributes or ["1.1"],
        )
        if not send_search(connection, search):
            connection.search(
                base,
                search_filter,
                search_scope=scope,
                attributes=list(search.attributes),
                size_limit=size_limit,
                time_limit=search.time_limit,
            )
        result = cast(dict[str, Any], connection.result or {})
        code = result.get("result")
        if code not in (RESULT_SUCCESS, RESULT_SIZE_LIMIT_EXCEEDED):
            # noSuchObject included: a missing search base is a configuration fault, and
            # reading it as "no such user" would hide it behind wrong-password messages.
            raise ServerFault(
                f"search under {base!r} failed: {code} {result.get('description')}"
                f" {result.get('message') or ''}".rstrip()
            )
        entries = [
            decode_entry(item, binary)
            for item in cast(list[dict[str, Any]], connection.response or [])
            if item.get("type") == "searchResEntry"
        ]
        return SearchResult(entries=entries, truncated=code == RESULT_SIZE_LIMIT_EXCEEDED)


def decode_entry(item: Mapping[str, Any], binary: frozenset[str] = frozenset()) -> Entry:
    """An ldap3 search response item as an `Entry` (names folded, values UTF-8, or
    lower-case hex for the `binary` attributes, so no two values read the same)."""
    values: dict[str, list[str]] = {}
    raw = cast(Mapping[str, list[bytes]], item.get("raw_attributes") or {})
    for name, items in raw.items():
        # Attribute names come back as the server spells them (AD: its schema's case).
        key = name.split(";", 1)[0].casefold()
        values.setdefault(key, []).extend(
            value.hex() if key in binary else value.decode("utf-8", errors="replace")
            for value in items
        )
    return Entry(dn=str(item.get("dn", "")), values=values)


def _quiet(connection: Connection) -> bool:
    """Whether a kept connection is open with nothing waiting to be read, as an idle one is.

    A server that closed it (a restart, its idle timeout) leaves end-of-file to read, and
    one that gives up on it may first send a Notice of Disconnection (RFC 4511 §4.4.1):
    either way the connection is not used. Looked at before anything is sent on it, so a
    password bind is not sent down a connection already known to be dead.
    """
    sock = getattr(connection, "socket", None)
    if connection.closed or not isinstance(sock, socket.socket):
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False  # TLS records already read and not yet consumed
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False  # the socket is closed underneath


def _close(connection: Connection) -> None:
    try:
        connection.unbind()
    except (LDAPException, OSError):
        pass  # the connection is being thrown away; unbind is only a courtesy
    # ldap3 leaves the socket of a failed connect (or a dead connection) open.
    sock = getattr(connection, "socket", None)
    if isinstance(sock, socket.socket):
        sock.close()
