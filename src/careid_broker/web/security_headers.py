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


def _apply(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy())
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if current_broker().config.broker.secure_cookies:
        headers.setdefault("Strict-Transport-Security", HSTS_VALUE)
    if "Cache-Control" not in headers and request.endpoint != "static":
        # Sign-in pages, tokens and error pages must never be served from a cache.
        headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Install the after-request hook."""
    app.after_request(_apply)
