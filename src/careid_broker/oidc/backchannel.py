"""OpenID Connect Back-Channel Logout 1.0: tell every RP of an ended session.

`BackchannelLogout.enqueue` queues one delivery per RP (in the store's outbox, so several
broker instances share the work and a crash loses nothing); a daemon thread per process
(`DeliveryWorker`) claims due deliveries, signs a logout token for each and POSTs it,
retrying with back-off when the RP is down or refuses.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from careid_broker.oidc.claims import public_sid
from careid_broker.oidc.clients import ClientRegistry
from careid_broker.oidc.keys import TokenSigner
from careid_broker.store import (
    AuditLog,
    Delivery,
    EndedSession,
    KeyAlgorithm,
    LogoutOutbox,
    Outcome,
    Settlement,
    StoreError,
    Subjects,
)

log = logging.getLogger(__name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYP = "logout+jwt"  # noqa: S105 - a JWT type (Back-Channel Logout 1.0 §2.4)
LOGOUT_TOKEN_LIFETIME = timedelta(minutes=2)


class Poster(Protocol):
    """POST a form; the HTTP status, or OSError when nothing came back."""

    def __call__(self, url: str, form: Mapping[str, str], *, timeout: float) -> int: ...


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect answer is not a 200: the RP did not log the user out.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post_form(url: str, form: Mapping[str, str], *, timeout: float) -> int:
    """POST application/x-www-form-urlencoded with urllib; the status code."""
    body = urllib.parse.urlencode(dict(form)).encode("ascii")
    request = urllib.request.Request(  # noqa: S310 - URLs come from clients.toml, http(s) only
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"},
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryReport:
    """What one pass over the outbox did."""

    delivered: int = 0
    retrying: int = 0
    abandoned: int = 0


class BackchannelLogout:
    """Queue, sign and deliver logout tokens."""

    def __init__(
        self,
        *,
        issuer: str,
        clients: ClientRegistry,
        outbox: LogoutOutbox,
        signer: TokenSigner,
        subjects: Subjects,
        audit: AuditLog,
        clock: Callable[[], datetime],
        post: Poster = post_form,
        timeout: float = 5.0,
    ) -> None:
        self._issuer = issuer
        self._clients = clients
        self._outbox = outbox
        self._signer = signer
        self._subjects = subjects
        self._audit = audit
        self._clock = clock
        self._post = post
        self._timeout = timeout

    def enqueue(self, ended: EndedSession) -> list[Delivery]:
        """One delivery per RP of the session that registered a back-channel URI."""
        if not ended.ended_now:
            return []  # ending an ended session again must not log RPs out twice
        targets = [
            client_id
            for client_id in ended.relying_parties
            if (client := self._clients.get(client_id)) is not None
            and client.backchannel_logout_uri is not None
        ]
        if not targets:
            return []
        return self._outbox.enqueue(sid=ended.sid, sub=ended.sub, client_ids=targets)

    def logout_token(self, delivery: Delivery) -> str:
        """The signed logout token for one delivery (Back-Channel Logout 1.0 §2.4)."""
        client = self._clients.get(delivery.client_id)
        alg = KeyAlgorithm(client.id_token_alg.value) if client else KeyAlgorithm.RS256
        now = self._clock()
        claims = {
            "iss": self._issuer,
            "sub": delivery.sub,
            "aud": delivery.client_id,
            "iat": int(now.timestamp()),
            "exp": int((now + LOGOUT_TOKEN_LIFETIME).timestamp()),
            "jti": delivery.jti,
            "events": {LOGOUT_EVENT: {}},
            "sid": public_sid(delivery.sid),
        }
        return self._signer.sign(claims, alg=alg, typ=LOGOUT_TOKEN_TYP)

    def deliver_due(self, limit: int = 20) -> DeliveryReport:
        """Claim and send every due delivery (up to `limit`), one at a time."""
        delivered = retrying = abandoned = 0
        # The lease only has to outlast one send: a worker that cannot record the result
        # (the database went away) must not hold the logout back for long. So each claim
        # is for the one delivery about to be sent; a batch would outlive its lease and
        # be claimed and sent again by another worker while this one was still busy.
        lease = timedelta(seconds=self._timeout * 2 + 5)
        for _ in range(limit):
            claimed = self._outbox.claim_due(1, lease=lease)
            if not claimed:
                break
            delivery = claimed[0]
            error = self._send(delivery)
            settled = (
                self._outbox.mark_delivered(delivery)
                if error is None
                else self._outbox.mark_failed(delivery, error)
            )
            if settled is Settlement.DELIVERED:
                delivered += 1
                self._record(delivery, Outcome.SUCCESS, attempts=delivery.attempts + 1)
            elif settled is Settlement.RETRYING:
                retrying += 1
                log.info(
                    "back-channel logout to %s failed (%s); will retry", delivery.client_id, error
                )
            elif settled is Settlement.ABANDONED:
                abandoned += 1
                log.warning(
                    "back-channel logout to %s abandoned after %d attempts (%s)",
                    delivery.client_id,
                    delivery.attempts + 1,
                    error,
                )
                self._record(delivery, Outcome.FAILURE, attempts=delivery.attempts + 1, error=error)
            else:
                # The lease ran out mid-send and another worker claimed the delivery
                # again: the outcome is that worker's to record, not this one's.
                log.warning(
                    "back-channel logout to %s was taken over by another worker while this "
                    "one sent it (%s); leaving it to that worker",
                    delivery.client_id,
                    error or "delivered",
                )
        return DeliveryReport(delivered=delivered, retrying=retrying, abandoned=abandoned)

    def _send(self, delivery: Delivery) -> str | None:
        client = self._clients.get(delivery.client_id)
        if client is None or client.backchannel_logout_uri is None:
            return "client no longer has a backchannel_logout_uri"
        token = self.logout_token(delivery)
        try:
            status = self._post(
                client.backchannel_logout_uri, {"logout_token": token}, timeout=self._timeout
            )
        except OSError as exc:
            # The reason only (refused, timed out): never the token.
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:200]
        # §2.8: 200 on success; some frameworks answer 204 for an empty body.
        return None if status in (200, 204) else f"HTTP {status}"

    def _record(
        self, delivery: Delivery, outcome: Outcome, *, attempts: int, error: str | None = None
    ) -> None:
        details: dict[str, Any] = {"attempts": attempts}
        if error:
            details["error"] = error
        try:
            self._audit.append(
                event="oidc.backchannel_logout",
                outcome=outcome,
                subject=self._subjects.account_for_sub(delivery.sub),
                relying_party=delivery.client_id,
                details=details,
            )
        except StoreError as exc:
            log.warning("could not audit a back-channel logout: %s", exc)


class DeliveryWorker:
    """A daemon thread delivering logout tokens; `wake()` makes it look at once."""

    def __init__(self, backchannel: BackchannelLogout, *, poll_seconds: float = 2.0) -> None:
        self._backchannel = backchannel
        self._poll = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (again after a fork: threads do not survive one)."""
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="careid-backchannel-logout", daemon=True
            )
            self._thread.start()

    def wake(self) -> None:
        """Deliver now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._backchannel.deliver_due()
            except StoreError as exc:
                # The database is away: nothing is lost (the deliveries wait in it).
                log.warning("back-channel logout delivery paused: %s", exc.code.value)
                report = DeliveryReport()
            except Exception:  # noqa: BLE001 - the thread must outlive a bad pass
                log.exception("back-channel logout delivery pass failed")
                report = DeliveryReport()
            if report.delivered or report.retrying or report.abandoned:
                continue  # there may be more due: look again at once
            self._wake.wait(self._poll)
            self._wake.clear()
