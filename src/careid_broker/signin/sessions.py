"""`SigninSessions`: starting, finding and ending the browser's sign-in sessions.

A session starts when a sign-in completes (`complete`): any session the browser held
ends first (one browser, one signed-in person), the new one is stored, and the success
is audited, all in one database transaction, so a sign-in that cannot be audited does
not happen. Sessions end after `lifetime` from sign-in or `idle` without use; every
session that ends is published on `SessionEvents` (back-channel logout) in the same
transaction as the ending, and audited.

A session's `auth_time` is when its credential was checked. Usually that is now; a
sign-in finished on a later page (accepting the AUP after the password, confirming a
registration after the card) is dated from the password or the card, not the click:
max_age and prompt=login are judged by it (OIDC Core §3.1.2.1), and the session's
`lifetime` runs from it too, so a page left open never makes a sign-in look newer, nor
last longer, than the credential behind it.

The browser's cookie is the web layer's business (`web.signin_cookie`); this service
sees only session ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from careid_broker.assurance import ACR_CARD, ACR_PASSWORD, AMR_CARD, AMR_PASSWORD
from careid_broker.auditing import Auditor
from careid_broker.directory import Directory, MailAccount
from careid_broker.errors import BrokerError, DirectoryUnavailableError
from careid_broker.metrics import BrokerMetrics
from careid_broker.signin.events import SessionEvents
from careid_broker.signin.standing import refusal_words, session_standing
from careid_broker.store import (
    CertificateRef,
    EndedSession,
    EndReason,
    NewSession,
    Outcome,
    Repositories,
    SessionRecord,
    Store,
)

log = logging.getLogger(__name__)

Method = Literal["pwd", "card"]
# The audit events of a successful sign-in, by method.
EVENT_PASSWORD = "signin.password"  # noqa: S105 - an audit event name
EVENT_CARD = "signin.card"
# Recording activity costs a database write; once a minute is plenty for idle expiry.
TOUCH_INTERVAL = timedelta(seconds=60)
# Why a sign-in a relying party kept after the card left ended (its `session.end` entry).
KEPT_SIGNIN_LOGOUT = "its relying party signed out of the sign-in it kept after the card left"


@dataclass(frozen=True, kw_only=True)
class SigninDecision:
    """Who signed in, and how: what a sign-in method decided, ready to become a session."""

    account: MailAccount
    method: Method
    acr: str
    amr: tuple[str, ...]
    event: str
    """The audit event of the success (`signin.password`, `signin.card`)."""
    org_code: str | None = None
    card_uuid: str | None = None
    certificate: CertificateRef | None = None
    """The certificate a card signed in with (a CRL that lists it ends the session)."""
    card_session: bool = False
    """Whether the agent gets a card-session id (the session lock on card removal)."""
    auth_time: datetime | None = None
    """When the credential was checked, for a sign-in finished in a later request (the
    AUP accepted, a registration confirmed); None: in this one, now."""
    audit_details: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def by_password(
        cls,
        account: MailAccount,
        *,
        auth_time: datetime | None = None,
        audit_details: Mapping[str, object] | None = None,
    ) -> SigninDecision:
        """A password sign-in: its method, assurance and audit event follow from that."""
        return cls(
            account=account,
            method="pwd",
            acr=ACR_PASSWORD,
            amr=AMR_PASSWORD,
            event=EVENT_PASSWORD,
            org_code=account.org_code,
            auth_time=auth_time,
            audit_details=audit_details or {},
        )

    @classmethod
    def by_card(
        cls,
        account: MailAccount,
        *,
        card_uuid: str | None,
        certificate: CertificateRef,
        org_code: str | None,
        card_session: bool,
        auth_time: datetime | None = None,
        audit_details: Mapping[str, object] | None = None,
    ) -> SigninDecision:
        """A card sign-in: its method, assurance and audit event follow from that."""
        return cls(
            account=account,
            method="card",
            acr=ACR_CARD,
            amr=AMR_CARD,
            event=EVENT_CARD,
            org_code=org_code,
            card_uuid=card_uuid,
            certificate=certificate,
            card_session=card_session,
            auth_time=auth_time,
            audit_details=audit_details or {},
        )


@dataclass(frozen=True, kw_only=True)
class SigninBinding:
    """What the sign-in is for: a relying party's login transaction (or the broker's
    own sign-in), and the session this browser held before, which ends first."""

    rp: str | None = None
    previous_sid: str | None = None


class SigninSessions:
    """The sign-in session service (store, clock, auditor, session-ended events)."""

    def __init__(
        self,
        *,
        store: Store,
        repos: Repositories,
        auditor: Auditor,
        events: SessionEvents,
        metrics: BrokerMetrics,
        lifetime: timedelta,
        idle: timedelta,
        directory: Directory | None = None,
    ) -> None:
        self._directory = directory
        self._store = store
        self._repos = repos
        self._audit = auditor
        self._events = events
        self._metrics = metrics
        self._lifetime = lifetime
        self._idle = idle

    def expired(self, record: SessionRecord, now: datetime) -> bool:
        """Whether a session is past its lifetime or idle limit."""
        return now >= record.auth_time + self._lifetime or now >= record.last_seen_at + self._idle

    def find(self, sid: str) -> SessionRecord | None:
        """The active, unexpired session `sid`, or None.

        An expired session is ended here (and its relying parties told). Activity is
        recorded at most once a minute.
        """
        found = self._repos.sessions.get(sid)
        if found is None or not found.active:
            return None
        now = self._store.now()
        if self.expired(found, now):
            self.end(found.sid, EndReason.EXPIRED)
            return None
        if now - found.last_seen_at >= TOUCH_INTERVAL:
            self._repos.sessions.touch(found.sid)
        return found

    def refresh_refusal(self, sid: str | None) -> str | None:
        """Why a refresh token issued in sign-in session `sid` may not be used now, or None.

        A refresh token lives no longer than the sign-in it came from. An open session
        past its lifetime or idle limit is ended here (its tokens revoked, its relying
        parties told), as `find` would have ended it had its browser come back. An
        ended session's tokens were revoked when it ended, except those of the relying
        parties that keep their sign-in when the card leaves the reader: those outlive
        a card removal, never the session's absolute lifetime, nor a removal that came
        after the session had already expired (it kept nothing alive). A kept sign-in
        that stops here ends as an expiry does: its tokens revoked, its relying parties
        told. A session ended for any other reason refuses whatever token survived it.

        And the account must still be one that may sign in, read from the directory now
        as a new sign-in would read it (disabled, expired, AUP no longer current; for a
        card's session, its Care Identity suspended or gone: the session ends). A
        directory that cannot be read raises `DirectoryUnavailableError`: no answer, no
        refresh, and nothing ended.
        """
        if sid is None:
            return "the token belongs to no sign-in session"
        record = self._repos.sessions.get(sid)
        if record is None:
            return "the sign-in session is unknown"
        now = self._store.now()
        if record.active:
            if self.expired(record, now):
                self.end(record.sid, EndReason.EXPIRED)
                return "the sign-in session has expired"
        elif record.end_reason != EndReason.CARD_REMOVED:
            return "the sign-in session has ended"
        elif (expiry := self._kept_signin_expiry(record, now)) is not None:
            self._end_kept_signins(record.sid, why=expiry)
            return expiry
        refusal = self._standing_refusal(record)
        if refusal is not None and record.active:
            self.end(record.sid, EndReason.ACCOUNT_REFUSED, why=refusal)
        return refusal

    def _kept_signin_expiry(self, record: SessionRecord, now: datetime) -> str | None:
        """Why the sign-ins relying parties kept when the card ended `record` may no
        longer be used, or None while they may."""
        if now >= record.auth_time + self._lifetime:
            return "the sign-in session is past its lifetime"
        # Judged at the ending: idle time after the card left is the kept sign-in's
        # own business, but a session already dead by then had nothing left to keep.
        if record.ended_at is None or self.expired(record, record.ended_at):
            return "the sign-in session had expired before its card was removed"
        return None

    def _end_kept_signins(self, sid: str, *, why: str) -> None:
        """Revoke the sign-ins relying parties kept in ended session `sid` and tell
        them, audited as the expiry it is."""
        with self._store.transaction():
            for kept in self._repos.sessions.end_kept_signins(EndReason.EXPIRED, sids=[sid]):
                self.publish_ended(kept, why=why)

    def end_kept_signin(
        self, *, sub: str, client_id: str, named: Callable[[str], bool]
    ) -> EndedSession | None:
        """End the sign-in `client_id` kept in an ended session of `sub` when its card
        left the reader: the one `named` picks (an RP names a session only by its public
        `sid`). Its tokens are revoked, it is told and it is audited as the logout it
        is; the other relying parties keep theirs. None, nothing done, when it kept none
        there."""
        sid = next(
            (sid for sid in self._repos.sessions.kept_signins(sub, client_id) if named(sid)),
            None,
        )
        if sid is None:
            return None
        with self._store.transaction():
            # Checked again in the transaction: it may have ended meanwhile.
            for kept in self._repos.sessions.end_kept_signins(
                EndReason.LOGOUT, sids=[sid], client_id=client_id
            ):
                self.publish_ended(kept, why=KEPT_SIGNIN_LOGOUT)
                return kept
        return None

    def _standing_refusal(self, record: SessionRecord) -> str | None:
        """Why the session's account (and, for a card's session, its Care Identity) may
        no longer sign in, read from the directory now; None if it may (or no directory
        was given)."""
        if self._directory is None:
            return None
        try:
            session_standing(
                self._directory,
                account_mail=record.account_mail,
                card_uuid=record.card_uuid,
                registrations=self._repos.registrations,
                sub=record.sub,
                subjects=self._repos.subjects,
            )
        except DirectoryUnavailableError:
            raise
        except BrokerError as exc:
            return refusal_words(exc)
        return None

    def complete(self, decision: SigninDecision, binding: SigninBinding) -> NewSession:
        """Start the decided session: end the browser's previous one, store the new one
        and audit the success, in one transaction (SQLite takes its write lock once)."""
        now = self._store.now()
        # Never later than now: a clock step back between the check and the click must
        # not date a sign-in in the future.
        auth_time = now if decision.auth_time is None else min(decision.auth_time, now)
        details: dict[str, object] = dict(decision.audit_details)
        if decision.auth_time is not None:
            details["auth_time"] = auth_time.isoformat()
        with self._store.transaction():
            if binding.previous_sid is not None:
                self.end(binding.previous_sid, EndReason.LOGOUT, why="replaced by a new sign-in")
            account = decision.account
            subject = self._repos.subjects.subject_for_account(
                mail=account.mail, dn=account.dn, entry_id=account.entry_id
            )
            if subject.replaced_sub is not None:
                self._subject_reassigned(account, subject.replaced_sub, subject.sub)
            new = self._repos.sessions.create(
                sub=subject.sub,
                account_mail=account.mail,
                acr=decision.acr,
                amr=list(decision.amr),
                auth_time=auth_time,
                card_uuid=decision.card_uuid,
                certificate=decision.certificate,
                with_card_session=decision.card_session,
            )
            self._audit(
                decision.event,
                outcome=Outcome.SUCCESS,
                actor=account.mail,
                subject=account.mail,
                org=decision.org_code,
                rp=binding.rp,
                details={
                    **details,
                    "sid": new.record.sid,
                    "acr": new.record.acr,
                },
            )
        # Counted once it is committed: joined to a caller's transaction (a sign-in that
        # goes on to its code), the session may yet be rolled back with it.
        method = _metric_method(decision.method)
        self._store.after_commit(lambda: self._metrics.signins.inc(method=method, result="success"))
        return new

    def _subject_reassigned(self, account: MailAccount, previous: str, sub: str) -> None:
        """Audit and log an address now held by another directory entry: relying
        parties see a new `sub` for it, and the old one is never handed out again."""
        log.warning(
            "mail address %s now belongs to another directory entry (%s): new sub %s replaces %s",
            account.mail,
            account.dn,
            sub,
            previous,
        )
        self._audit(
            "subject.reassigned",
            outcome=Outcome.SUCCESS,
            actor=account.mail,
            subject=account.mail,
            details={
                "previous_sub": previous,
                "sub": sub,
                "dn": account.dn,
                "entry_id": account.entry_id,
            },
        )

    def end(
        self, sid: str, reason: EndReason | str, *, why: str | None = None
    ) -> EndedSession | None:
        """End session `sid` (idempotent), tell its relying parties and audit it."""
        # The transactional outbox: the session ends and its logout deliveries are queued
        # in one transaction, so a crash can never do one without the other.
        with self._store.transaction():
            ended = self._repos.sessions.end_session(sid, str(reason))
            if ended is not None and ended.ended_now:
                self.publish_ended(ended, why=why)
        return ended

    def end_by_card_session(
        self,
        card_session: str,
        *,
        keep_clients: frozenset[str] = frozenset(),
        lock_not_armed: bool = False,
    ) -> EndedSession | None:
        """End the session the agent's card-removed report names, if it is still open.

        `keep_clients` keep their sign-in: they are not told and their tokens stay. A
        session already past its idle or absolute limit ends as expired instead, every
        relying party told and none kept: the card leaving cannot bring it back to life
        for those that keep their sign-in. `lock_not_armed`: the sign-in page reports a
        session the agent did not take the lock for; it ends as that, none kept.
        """
        # Looked up before any write: most reports name nothing, and must stay cheap.
        record = self._repos.sessions.find_by_card_session(card_session)
        if record is None or not record.active:
            return None
        reason, keep, why = EndReason.CARD_REMOVED, keep_clients, None
        if lock_not_armed:
            reason, keep = EndReason.LOCK_NOT_ARMED, frozenset()
            why = "the smartcard agent did not take the card lock, so the sign-in page ended it"
        if self.expired(record, self._store.now()):
            reason, keep = EndReason.EXPIRED, frozenset()
            why = "found expired when its card was removed"
        with self._store.transaction():
            ended = self._repos.sessions.end_session(record.sid, reason, keep_clients=keep)
            if ended is None or not ended.ended_now:
                return None  # ended meanwhile by something else, which told the RPs
            self.publish_ended(ended, why=why)
        return ended

    def publish_ended(self, ended: EndedSession, *, why: str | None = None) -> None:
        """Tell subscribers (back-channel logout) and audit a session that just ended;
        call inside the transaction that ended it."""
        self._events.session_ended(ended)
        details: dict[str, object] = {
            "sid": ended.sid,
            "reason": ended.reason,
            "relying_parties": list(ended.relying_parties),
            "tokens_revoked": ended.tokens_revoked,
        }
        if ended.kept_relying_parties:
            details["kept_relying_parties"] = list(ended.kept_relying_parties)
        if why:
            details["why"] = why
        self._audit(
            "session.end",
            outcome=Outcome.SUCCESS,
            actor=ended.account_mail,
            subject=ended.account_mail,
            details=details,
        )


def _metric_method(method: Method) -> str:
    return "password" if method == "pwd" else "card"
