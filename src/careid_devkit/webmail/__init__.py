"""The demo relying party: an "NHSmail-style webmail" that signs people in through the
broker (OpenID Connect, authlib's client) and honours back-channel logout.

DEMO MATERIAL: it shows what an integrating web app does; it holds no mail.
"""

from __future__ import annotations

from careid_devkit.webmail.app import create_webmail_app
from careid_devkit.webmail.config import WebmailConfig

__all__ = ["WebmailConfig", "create_webmail_app"]
