"""Security headers on every response: a strict CSP, HSTS outside development, and friends.

The CSP allows no inline script or style at all. `form-action` needs care: browsers
(Chromium at least) apply it to every redirect that follows a form submission, so the
sign-in form, whose answer is a redirect on to the relying party, must name that
party's origin. Views that render such a form call `allow_form_action(origin)` for the
origins the form may end up at.
"""

from __future__ import annotations

from flask import Flask, g, request
from flask.wrappers import Response

from careid_broker.origins import ORIGIN_RE
from careid_broker.web.context import current_broker

_FORM_ACTION_KEY = "careid_form_action_origins"

HSTS_VALUE = "max-age=31536000"
BASE_CSP = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


def allow_form_action(*origins: str | None) -> None:
    """Let this response's forms (and the redirects after them) reach these origins."""
    allowed: set[str] = g.setdefault(_FORM_ACTION_KEY, set())
    allowed.update(o for o in origins if o is not None and ORIGIN_RE.fullmatch(o))


def content_security_policy() -> str:
    """The CSP for the current response."""
    extra = sorted(g.get(_FORM_ACTION_KEY) or ())
    return "; ".join((*BASE_CSP, " ".join(("form-action 'self'", *extra))))


#: Set on every response unless the view set its own (the CSP comes per response).
_FIXED = tuple(
    (name, name.lower(), value)
    for name, value in (
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
    )
)


def _apply(response: Response) -> Response:
    headers = response.headers
    # One pass over what the view set (werkzeug's setdefault scans them all each time).
    present = {name.lower() for name, _ in headers.items()}
    if "content-security-policy" not in present:
        headers.add("Content-Security-Policy", content_security_policy())
    for name, lowered, value in _FIXED:
        if lowered not in present:
            headers.add(name, value)
    if "strict-transport-security" not in present and current_broker().config.broker.secure_cookies:
        headers.add("Strict-Transport-Security", HSTS_VALUE)
    if "cache-control" not in present and request.endpoint != "static":
        # Sign-in pages, tokens and error pages must never be served from a cache.
        headers.add("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    """Install the after-request hook."""
    app.after_request(_apply)
