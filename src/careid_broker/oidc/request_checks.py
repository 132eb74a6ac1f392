"""The guard for the refusals authlib cannot word, and what a refusal may name.

authlib 1.9 will not build an `OAuth2Error` whose description holds a character outside
RFC 6749 §5.2's set (%x20-21 / %x23-5B / %x5D-7E); some of its descriptions repeat what
the request sent (a redirect URI, a response_type, a JOSE header's alg or kid), so such
a request raises `ValueError` instead of being refused. `refusing_unworded` turns that
into the endpoint's own refusal, with fixed text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from authlib.oauth2 import OAuth2Error

#: The parameters a token request may carry (RFC 6749 §4.1.3, §6, RFC 7636 §4.5,
#: RFC 7523 §2.2) and a revocation request (RFC 7009 §2.1): a repeated one is named in
#: the refusal, any other is not, so nothing the request made up is repeated back.
CLIENT_REQUEST_PARAMETERS = frozenset(
    {
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "token",
        "token_type_hint",
    }
)


def repeated_parameter(lists: Iterable[tuple[str, list[str]]], known: frozenset[str]) -> str | None:
    """The refusal's description when a parameter is sent more than once, else None."""
    for name, values in lists:
        if len(values) > 1:
            if name in known:
                return f"{name} is sent more than once."
            return "A parameter is sent more than once."
    return None


_OAUTH2_ERROR_INIT = OAuth2Error.__init__.__code__


def unworded(exc: ValueError) -> bool:
    """Whether `exc` is authlib refusing to build an OAuth2Error over its description.

    Told by where it was raised (the error's own constructor), not by its wording; a
    ValueError from anywhere else is a fault and goes on as one.
    """
    traceback = exc.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code is _OAUTH2_ERROR_INIT


@contextmanager
def refusing_unworded(refusal: Callable[[], OAuth2Error]) -> Iterator[None]:
    """Raise `refusal()` where authlib could not word its own refusal of the request."""
    try:
        yield
    except ValueError as exc:
        if not unworded(exc):
            raise
        raise refusal() from exc
