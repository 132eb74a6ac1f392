"""Fetching OCSP responses and CRLs over HTTP: a small Protocol and a urllib implementation.

Revocation checks are the one place certificate validation does network I/O, so the
fetcher is passed in: production uses `UrllibFetcher`, tests inject one that fails,
stalls or answers for another request. Every failure is an `HttpFetchError`, which the
revocation checkers turn into "status unavailable".

The timeout is a deadline for the whole exchange (connecting, TLS, each redirect,
headers and body), not only for each socket operation: a server that drips a byte at a
time must not hold a sign-in (and the CRL lock other sign-ins queue behind) for longer.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

#: CRLs of large issuers run to megabytes; an answer beyond this is refused, not read.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 3


class HttpFetchError(Exception):
    """The URL could not be fetched: refused, timed out, too large, not HTTP 200."""


class HttpFetcher(Protocol):
    """What revocation checking needs from HTTP (RFC 6960 Appendix A, RFC 5280 §4.2.1.13)."""

    def post(self, url: str, body: bytes, content_type: str, timeout: float) -> bytes:
        """POST `body` and return the answer's body; HttpFetchError on any failure."""
        ...

    def get(self, url: str, timeout: float) -> bytes:
        """GET the URL and return the answer's body; HttpFetchError on any failure."""
        ...


def check_fetchable(url: str) -> None:
    """Refuse anything but http(s) URLs with a host: certificates carry URLs we fetch."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpFetchError(f"{url!r} is not an http(s) URL")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a few redirects, and only to http(s): never to file: or ftp:."""

    max_redirections = _MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        check_fetchable(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _shut_down(sock: socket.socket) -> None:
    """Wake whatever waits on `sock` (connect, TLS, read): it sees the connection end.

    The plain socket's own shutdown, also for TLS: `ssl.SSLSocket.shutdown` would drop
    the TLS state under a read in progress in another thread.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or closed already


class _Deadline:
    """One exchange's deadline: a connection starts only while time is left and waits at
    most that long, and every socket opened for it is shut down when it passes."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.passed = False
        self._timer = threading.Timer(seconds, self._pass)
        self._timer.name = "careid-http-deadline"
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        """Seconds left; TimeoutError once the deadline has passed."""
        left = self._end - time.monotonic()
        if self.passed or left <= 0:
            raise TimeoutError("the deadline has passed")
        return left

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline (at once if it has passed)."""
        with self._lock:
            if not self.passed:
                self._sockets.append(sock)
                return
        _shut_down(sock)

    def cancel(self) -> None:
        """The exchange is over: nothing to shut down."""
        self._timer.cancel()

    def _pass(self) -> None:
        with self._lock:
            self.passed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut_down(sock)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection held to its exchange's deadline."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = partial(_connect, deadline)

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:  # the TLS socket, for HTTPS
            self._deadline.watch(self.sock)


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, http.client.HTTPSConnection):
    """An HTTPS connection held to its exchange's deadline (the handshake included: it
    waits at most the time left when the TCP connection was made)."""


def _connect(
    deadline: _Deadline,
    address: tuple[str, int],
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """`socket.create_connection`, each address tried only while the deadline leaves
    time and its socket watched from the start (a connect in progress is shut down too)."""
    host, port = address
    failure: OSError = OSError(f"{host}: no address to connect to")
    for family, kind, proto, _name, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.left())
            if source_address:
                sock.bind(source_address)
            deadline.watch(sock)
            sock.connect(where)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    raise failure


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_DeadlineHTTPConnection, deadline=self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # The default TLS context, made for each connection as urllib's own handler does.
        return self.do_open(partial(_DeadlineHTTPSConnection, deadline=self._deadline), req)


class UrllibFetcher:
    """`HttpFetcher` over urllib: http/https only, an overall deadline, a size limit."""

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, user_agent: str = "careid-broker"
    ) -> None:
        self._max_bytes = max_bytes
        self._user_agent = user_agent

    def post(self, url: str, body: bytes, content_type: str, timeout: float) -> bytes:
        """POST `body` (e.g. a DER OCSP request) and return the answer's body."""
        headers = {"Content-Type": content_type}
        return self._fetch(url, timeout, data=body, headers=headers, method="POST")

    def get(self, url: str, timeout: float) -> bytes:
        """GET the URL (e.g. a CRL distribution point) and return the answer's body."""
        return self._fetch(url, timeout, data=None, headers={}, method="GET")

    @staticmethod
    def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
        """An opener for one exchange, its connections held to `deadline`."""
        # Only the handlers we need: no file:, ftp: or data: handler to be redirected to.
        opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            _DeadlineHTTPHandler(deadline),
            _DeadlineHTTPSHandler(deadline),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _HttpOnlyRedirects(),
        ):
            opener.add_handler(handler)
        return opener

    def _fetch(
        self,
        url: str,
        timeout: float,
        *,
        data: bytes | None,
        headers: dict[str, str],
        method: str,
    ) -> bytes:
        check_fetchable(url)
        request = urllib.request.Request(  # noqa: S310 - scheme checked above: http(s) only
            url,
            data=data,
            headers={**headers, "User-Agent": self._user_agent},
            method=method,
        )
        deadline = _Deadline(timeout)
        try:
            return self._exchange(request, url, method, deadline)
        except (TimeoutError, HttpFetchError) as exc:
            # Whatever the sockets shut down at the deadline made of it, it is a timeout.
            if isinstance(exc, HttpFetchError) and not deadline.passed:
                raise
            raise HttpFetchError(f"{method} {url}: timed out after {timeout:g} s") from exc
        finally:
            deadline.cancel()

    def _exchange(
        self, request: urllib.request.Request, url: str, method: str, deadline: _Deadline
    ) -> bytes:
        """The answer's body; TimeoutError when out of time, else HttpFetchError."""
        try:
            with self._opener(deadline).open(request, timeout=deadline.left()) as reply:
                if reply.status != 200:
                    raise HttpFetchError(f"{method} {url}: HTTP {reply.status}")
                length = reply.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self._max_bytes:
                    raise HttpFetchError(f"{method} {url}: answer of {length} bytes is too large")
                return self._read(reply, url, deadline)
        except urllib.error.HTTPError as exc:
            raise HttpFetchError(f"{method} {url}: HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise exc.reason from exc
            raise HttpFetchError(f"{method} {url}: {exc.reason}") from exc
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise HttpFetchError(f"{method} {url}: {exc}") from exc

    def _read(self, reply: IO[bytes], url: str, deadline: _Deadline) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            deadline.left()
            chunk = reply.read(_CHUNK)
            if not chunk:
                # The end of the answer, or a socket shut down at the deadline.
                deadline.left()
                return b"".join(chunks)
            size += len(chunk)
            if size > self._max_bytes:
                raise HttpFetchError(f"{url}: answer larger than {self._max_bytes} bytes")
            chunks.append(chunk)
