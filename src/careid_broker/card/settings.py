"""The `[card]` settings: the agent, challenges, how registrations link, the session lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from careid_broker.settings import SettingsReader
from careid_broker.store.registrations import LinkMode

DEFAULT_AGENT_URL = "http://127.0.0.1:47600"


@dataclass(frozen=True, kw_only=True)
class CardSettings:
    """`[card]`: card sign-in, one-time registration and the session lock."""

    agent_url: str = DEFAULT_AGENT_URL
    """Where the login page's script finds the workstation agent (its origin)."""
    challenge_lifetime: timedelta = timedelta(minutes=5)
    link_mode: LinkMode = LinkMode.UUID
    """What a new registration pins: the Care Identity UUID, or the exact certificate."""
    session_lock: bool = True
    """End a card sign-in's session when that card leaves the reader."""
    agent_install_url: str | None = None
    """Install instructions for the agent; None: the broker's own page."""
    registration_lifetime: timedelta = timedelta(minutes=15)
    """How long each step of a registration may take before it must start again."""
    removal_rate_limit: int = 300
    removal_rate_window: timedelta = timedelta(seconds=60)
    """`/card/removed` reports accepted per client address per window (it is unauthenticated)."""

    @property
    def agent_origin(self) -> str:
        """`scheme://host:port` of the agent, for the pages' CSP `connect-src`."""
        parts = urlsplit(self.agent_url)
        return f"{parts.scheme}://{parts.netloc}"


def read_card_settings(reader: SettingsReader) -> CardSettings:
    """`[card]` from the parsed TOML table; problems go to the reader."""
    agent_url = reader.string("agent_url", DEFAULT_AGENT_URL).rstrip("/")
    parts = urlsplit(agent_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.problem(
            "agent_url", f"{agent_url!r} must be an http:// URL such as {DEFAULT_AGENT_URL}"
        )
    elif parts.path or parts.query or parts.fragment or parts.username or parts.password:
        reader.problem("agent_url", "must be scheme://host:port only (no path, query or user)")
    install_url = reader.optional_string("agent_install_url")
    if install_url is not None and urlsplit(install_url).scheme not in ("http", "https"):
        reader.problem("agent_install_url", f"{install_url!r} must be an http(s) URL")
    settings = CardSettings(
        agent_url=agent_url,
        challenge_lifetime=timedelta(
            seconds=reader.integer("challenge_lifetime_seconds", 300, minimum=30, maximum=3600)
        ),
        link_mode=reader.choice("link_mode", LinkMode, LinkMode.UUID),
        session_lock=reader.boolean("session_lock", True),
        agent_install_url=install_url,
        registration_lifetime=timedelta(
            seconds=reader.integer("registration_lifetime_seconds", 900, minimum=60, maximum=7200)
        ),
        removal_rate_limit=reader.integer("removal_rate_limit", 300, minimum=1, maximum=100_000),
        removal_rate_window=timedelta(
            seconds=reader.integer("removal_rate_window_seconds", 60, minimum=1, maximum=3600)
        ),
    )
    reader.finish()
    return settings
