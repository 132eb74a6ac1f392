"""Fetching OCSP responses and CRLs over HTTP: a small Protocol and a urllib implementation.

Revocation checks are the one place certificate validation does network I/O, so the
fetcher is passed in: production uses `UrllibFetcher`, tests inject one that fails,
stalls or answers for another request. Every failure is an `HttpFetchError`, which the
revocation checkers turn into "status unavailable".
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from typing import IO, Protocol
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


class UrllibFetcher:
    """`HttpFetcher` over urllib: http/https only, an overall deadline, a size limit."""

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, user_agent: str = "careid-broker"
    ) -> None:
        self._max_bytes = max_bytes
        self._user_agent = user_agent
        # Only the handlers we need: no file:, ftp: or data: handler to be redirected to.
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _HttpOnlyRedirects(),
        ):
            self._opener.add_handler(handler)

    def post(self, url: str, body: bytes, content_type: str, timeout: float) -> bytes:
        """POST `body` (e.g. a DER OCSP request) and return the answer's body."""
        headers = {"Content-Type": content_type}
        return self._fetch(url, timeout, data=body, headers=headers, method="POST")

    def get(self, url: str, timeout: float) -> bytes:
        """GET the URL (e.g. a CRL distribution point) and return the answer's body."""
        return self._fetch(url, timeout, data=None, headers={}, method="GET")

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
        # urllib's timeout bounds each socket operation; a slow drip of bytes could still
        # hold a sign-in for ever, so the whole exchange also has a deadline.
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(  # noqa: S310 - scheme checked above: http(s) only
            url,
            data=data,
            headers={**headers, "User-Agent": self._user_agent},
            method=method,
        )
        try:
            with self._opener.open(request, timeout=timeout) as reply:
                if reply.status != 200:
                    raise HttpFetchError(f"{method} {url}: HTTP {reply.status}")
                length = reply.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self._max_bytes:
                    raise HttpFetchError(f"{method} {url}: answer of {length} bytes is too large")
                return self._read(reply, url, deadline)
        except urllib.error.HTTPError as exc:
            raise HttpFetchError(f"{method} {url}: HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise HttpFetchError(f"{method} {url}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise HttpFetchError(f"{method} {url}: timed out after {timeout:g} s") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise HttpFetchError(f"{method} {url}: {exc}") from exc

    def _read(self, reply: IO[bytes], url: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise HttpFetchError(f"{url}: the answer took too long")
            chunk = reply.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self._max_bytes:
                raise HttpFetchError(f"{url}: answer larger than {self._max_bytes} bytes")
            chunks.append(chunk)
