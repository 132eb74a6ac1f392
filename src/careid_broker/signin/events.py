"""`SessionEvents`: "a sign-in session ended", published to whoever subscribed.

The OpenID Provider subscribes when the broker is built (it queues back-channel logout
for the session's relying parties); nothing that ends a session needs to know that.
Subscribers run inside the transaction that ended the session, so what they write
(the logout outbox) commits or rolls back with it.
"""

from __future__ import annotations

from collections.abc import Callable

from careid_broker.store import EndedSession

SessionEndedHandler = Callable[[EndedSession], None]


class SessionEvents:
    """Subscribers to "a session ended", called in the order they subscribed."""

    def __init__(self) -> None:
        self._ended: list[SessionEndedHandler] = []

    def on_ended(self, handler: SessionEndedHandler) -> None:
        """Call `handler` for every session that ends from now on."""
        self._ended.append(handler)

    def session_ended(self, ended: EndedSession) -> None:
        """Tell every subscriber that `ended` has just ended."""
        for handler in self._ended:
            handler(ended)
