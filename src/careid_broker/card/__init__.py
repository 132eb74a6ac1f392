"""Card sign-in (`careid-auth:1`) and the session lock on card removal.

`service.CardSignin` checks a token in DESIGN.md's order and decides whether the card
may sign in (no Flask, no HTTP); `web` is the blueprint (`/card/challenge`,
`/card/authenticate`, `/card/removed`) and `init_app` wires it into the broker.
Importing this package loads neither Flask nor the views.
"""

from __future__ import annotations

from careid_broker.card.settings import DEFAULT_AGENT_URL, CardSettings, read_card_settings

__all__ = ["DEFAULT_AGENT_URL", "CardSettings", "read_card_settings"]
