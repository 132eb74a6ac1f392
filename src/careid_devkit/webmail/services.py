"""What the webmail's views use, built once per app by `create_webmail_app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import current_app

from careid_devkit.webmail.config import WebmailConfig
from careid_devkit.webmail.cookie_sessions import ServerSideSessions
from careid_devkit.webmail.logout_token import LogoutTokenValidator
from careid_devkit.webmail.provider import Provider
from careid_devkit.webmail.sessions import SessionStore

EXTENSION = "careid_webmail"
STATUS_PATH = "/session-status"


@dataclass(frozen=True, kw_only=True, slots=True)
class WebmailServices:
    """What the views use, built once per app."""

    config: WebmailConfig
    store: SessionStore
    sessions: ServerSideSessions
    provider: Provider
    logout_tokens: LogoutTokenValidator
    clock: Callable[[], datetime]


def current_webmail() -> WebmailServices:
    """The current app's services (inside a request or app context)."""
    found: WebmailServices = current_app.extensions[EXTENSION]
    return found
