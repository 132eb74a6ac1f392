"""The broker's sign-in sessions, the RPs that joined them, and ending them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, select, true, update
from sqlalchemy.orm import Session

from careid_broker.store._sql import insert_ignore, insert_new, scalars_in_chunks, table_of
from careid_broker.store.base import new_secret, sha256_hex
from careid_broker.store.engine import Store
from careid_broker.store.models import (
    OAuthToken,
    RoleChoice,
    SessionRelyingParty,
    SigninSession,
)
from careid_broker.store.prepared import Prepared
from careid_broker.store.subjects import normalise_mail
from careid_broker.store.tokens import lock_families_where, revoke_tokens_where


class EndReason(StrEnum):
    """Why a session ended (recorded, audited, shown to administrators)."""

    LOGOUT = "logout"
    CARD_REMOVED = "card_removed"
    CARD_REVOKED = "card_revoked"
    REGISTRATION_REMOVED = "registration_removed"
    ADMIN = "admin"
    EXPIRED = "expired"
    ACCOUNT_REFUSED = "account_refused"  # the directory no longer lets the account sign in
    LOCK_NOT_ARMED = "lock_not_armed"  # the agent did not take the card lock: the page ended it


@dataclass(frozen=True, slots=True)
class CertificateRef:
    """A certificate by its issuer's DN and serial number (hex, any case)."""

    issuer_dn: str
    serial_hex: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionRecord:
    """A sign-in session."""

    sid: str
    sub: str
    account_mail: str
    card_uuid: str | None
    acr: str
    amr: tuple[str, ...]
    auth_time: datetime
    created_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    selected_role_id: str | None = None
    cert_issuer_dn: str | None = None
    cert_serial: str | None = None
    """The certificate a card's session was opened with (upper-case hex serial)."""

    @property
    def active(self) -> bool:
        """True until the session is ended."""
        return self.ended_at is None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewSession:
    """A created session; `card_session` (if any) is handed to the agent only."""

    record: SessionRecord
    card_session: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class EndedSession:
    """The result of ending a session.

    `ended_now` is False when it had already ended: nothing changed, and
    `relying_parties` is empty so a repeated end never sends a second logout.
    """

    sid: str
    sub: str
    account_mail: str
    ended_at: datetime
    reason: str
    ended_now: bool
    relying_parties: tuple[str, ...]
    tokens_revoked: int
    # RPs of the session that keep their sign-in (not told, tokens kept): those whose
    # `card_removal = "none"` when a card removal ended it.
    kept_relying_parties: tuple[str, ...] = ()


def _record(row: SigninSession) -> SessionRecord:
    return SessionRecord(
        sid=row.sid,
        sub=row.sub,
        account_mail=row.account_mail,
        card_uuid=row.card_uuid,
        acr=row.acr,
        amr=tuple(row.amr),
        auth_time=row.auth_time,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        selected_role_id=row.selected_role_id,
        cert_issuer_dn=row.cert_issuer_dn,
        cert_serial=row.cert_serial,
    )


_SESSIONS = table_of(SigninSession).c
# The session, if it is still open, share-locked until the transaction ends (the token
# endpoint runs it for every code): one statement, compiled once.
_SHARE_ACTIVE = Prepared(
    select(_SESSIONS.sid)
    .where(_SESSIONS.sid == bindparam("sid"), _SESSIONS.ended_at.is_(None))
    .with_for_update(read=True)
)


class SigninSessions:
    """Create, find and end sign-in sessions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(
        self,
        *,
        sub: str,
        account_mail: str,
        acr: str,
        amr: Sequence[str],
        auth_time: datetime,
        card_uuid: str | None = None,
        certificate: CertificateRef | None = None,
        with_card_session: bool = False,
    ) -> NewSession:
        """Start a session; a card sign-in names the certificate it used and asks for a
        card-session id for the agent."""
        now = self._store.now()
        card_session = new_secret() if with_card_session else None
        row = SigninSession(
            sid=new_secret(),
            sub=sub,
            account_mail=normalise_mail(account_mail),
            card_uuid=card_uuid,
            acr=acr,
            amr=list(amr),
            auth_time=auth_time,
            created_at=now,
            last_seen_at=now,
            ended_at=None,
            end_reason=None,
            card_session_hash=sha256_hex(card_session) if card_session else None,
            cert_issuer_dn=certificate.issuer_dn if certificate else None,
            cert_serial=certificate.serial_hex.upper() if certificate else None,
        )
        with self._store.transaction() as session:
            insert_new(session, row)
            return NewSession(record=_record(row), card_session=card_session)

    def get(self, sid: str) -> SessionRecord | None:
        """A session by sid (active or ended), or None."""
        with self._store.session() as session:
            row = session.get(SigninSession, sid)
            return _record(row) if row else None

    def find_by_card_session(self, card_session: str) -> SessionRecord | None:
        """The session the agent's card-removed report names, or None."""
        with self._store.session() as session:
            row = session.scalar(
                select(SigninSession).where(
                    SigninSession.card_session_hash == sha256_hex(card_session)
                )
            )
            return _record(row) if row else None

    def active_for_card(self, card_uuid: str) -> list[SessionRecord]:
        """The open sessions a card (its Care Identity UUID) signed in."""
        with self._store.session() as session:
            rows = session.scalars(
                select(SigninSession).where(
                    SigninSession.card_uuid == card_uuid, SigninSession.ended_at.is_(None)
                )
            ).all()
            return [_record(r) for r in rows]

    def opened_with(self, issuer_dn: str, serials_hex: Collection[str]) -> list[SessionRecord]:
        """The sessions (open or ended) a card opened with one of these certificates."""
        wanted = sorted({serial.upper() for serial in serials_hex})
        with self._store.session() as session:
            rows = scalars_in_chunks(
                session,
                wanted,
                lambda chunk: select(SigninSession).where(
                    SigninSession.cert_serial.in_(chunk), SigninSession.cert_issuer_dn == issuer_dn
                ),
            )
            return [_record(r) for r in rows]

    def active_for_account(self, mail: str) -> list[SessionRecord]:
        """The account's open sessions, newest first (for the admin console)."""
        with self._store.session() as session:
            rows = session.scalars(
                select(SigninSession)
                .where(
                    SigninSession.account_mail == normalise_mail(mail),
                    SigninSession.ended_at.is_(None),
                )
                .order_by(SigninSession.created_at.desc())
            ).all()
            return [_record(r) for r in rows]

    def select_role(self, sid: str, person_roleid: str) -> bool:
        """Record the role chosen in an active session, and as the person's last choice.

        False (and nothing written) if the session has ended or is unknown.
        """
        now = self._store.now()
        with self._store.transaction() as session:
            rows = session.execute(
                update(SigninSession)
                .where(SigninSession.sid == sid, SigninSession.ended_at.is_(None))
                .values(selected_role_id=person_roleid)
                .returning(SigninSession.sub),
                execution_options={"synchronize_session": False},
            ).all()
            if not rows:
                return False
            sub = rows[0].sub
            # Insert-or-update without a read first: two choices at once cannot collide.
            values = {"sub": sub, "person_roleid": person_roleid, "chosen_at": now}
            if not insert_ignore(session, RoleChoice, values, ["sub"]):
                session.execute(
                    update(RoleChoice)
                    .where(RoleChoice.sub == sub)
                    .values(person_roleid=person_roleid, chosen_at=now),
                    execution_options={"synchronize_session": False},
                )
            return True

    def last_role_choice(self, sub: str) -> str | None:
        """The person_roleid this subject chose last, in any session, or None."""
        with self._store.session() as session:
            row = session.get(RoleChoice, sub)
            return row.person_roleid if row else None

    def touch(self, sid: str) -> bool:
        """Record activity on an active session; False if it has ended or is unknown."""
        with self._store.transaction() as session:
            result = session.execute(
                update(SigninSession)
                .where(SigninSession.sid == sid, SigninSession.ended_at.is_(None))
                .values(last_seen_at=self._store.now()),
                execution_options={"synchronize_session": False},
            )
            return bool(getattr(result, "rowcount", 0))

    def add_relying_party(self, sid: str, client_id: str) -> bool:
        """Remember that a client receives tokens in this session; False if it ended.

        Call it in the same transaction that issues the tokens, and issue none on
        False. The session row is share-locked, so a concurrent `end_session` either
        waits and then sees (and revokes) the new tokens and tells this RP, or wins and
        this returns False.
        """
        with self._store.transaction() as session:
            active = _SHARE_ACTIVE.scalar(session, {"sid": sid})
            if active is None:
                return False
            insert_ignore(
                session,
                SessionRelyingParty,
                {"sid": sid, "client_id": client_id, "first_issued_at": self._store.now()},
                ["sid", "client_id"],
            )
            return True

    def relying_parties(self, sid: str) -> tuple[str, ...]:
        """The clients that received tokens in a session, in the order they joined."""
        with self._store.session() as session:
            return _relying_parties(session, sid)

    def end_session(
        self, sid: str, reason: str, *, keep_clients: frozenset[str] = frozenset()
    ) -> EndedSession | None:
        """End a session and revoke its tokens; None if the sid is unknown.

        The tokens of `keep_clients` stay valid and those RPs are listed as kept, not
        as relying parties to tell. Idempotent: ending an ended session changes
        nothing (`ended_now=False`).
        """
        now = self._store.now()
        with self._store.transaction() as session:
            rows = session.execute(
                update(SigninSession)
                .where(SigninSession.sid == sid, SigninSession.ended_at.is_(None))
                .values(ended_at=now, end_reason=str(reason))
                .returning(SigninSession.sid, SigninSession.sub, SigninSession.account_mail),
                execution_options={"synchronize_session": False},
            ).all()
            if rows:
                return _finish_ending(
                    session, rows[0], now=now, reason=str(reason), keep=keep_clients
                )
            existing = session.get(SigninSession, sid)
            if existing is None:
                return None
            return EndedSession(
                sid=existing.sid,
                sub=existing.sub,
                account_mail=existing.account_mail,
                ended_at=existing.ended_at or now,
                reason=existing.end_reason or str(reason),
                ended_now=False,
                relying_parties=(),
                tokens_revoked=0,
            )

    def end_kept_signins(
        self,
        reason: str,
        *,
        card_uuid: str | None = None,
        account_mail: str | None = None,
        sids: Collection[str] | None = None,
        client_id: str | None = None,
    ) -> list[EndedSession]:
        """Revoke the tokens relying parties kept when a card removal ended a session
        (`end_session`'s `keep_clients`), for the ended sessions of one card, of one
        account or of these ids: a revoked card or a removed registration leaves no
        sign-in alive. With `client_id`, only that relying party's (its own logout):
        the others keep theirs.

        One `EndedSession` per session that still had such tokens, naming the relying
        parties that held them (to be told now, as if the session ended now).
        """
        if [card_uuid, account_mail, sids].count(None) != 2:
            raise ValueError("name a card, an account or sessions")
        if card_uuid is not None:
            ended_of = SigninSession.card_uuid == card_uuid
        elif account_mail is not None:
            ended_of = SigninSession.account_mail == normalise_mail(account_mail)
        else:
            ended_of = SigninSession.sid.in_(sorted(sids or ()))
        now = self._store.now()
        with self._store.transaction() as session:
            sessions = {
                row.sid: row
                for row in session.execute(
                    select(SigninSession.sid, SigninSession.sub, SigninSession.account_mail).where(
                        ended_of, SigninSession.ended_at.is_not(None)
                    )
                )
            }
            if not sessions:
                return []
            of_client = OAuthToken.client_id == client_id if client_id is not None else true()
            live = (
                OAuthToken.sid.in_(sorted(sessions)),
                OAuthToken.revoked_at.is_(None),
                OAuthToken.expires_at > now,
                of_client,
            )
            holders: dict[str, set[str]] = {}
            for sid, holder in session.execute(
                select(OAuthToken.sid, OAuthToken.client_id).where(*live).distinct()
            ):
                if sid is not None:  # always, given the IN above; for the type
                    holders.setdefault(sid, set()).add(holder)
            # Every family up front, in one sorted pass, as `end_sessions_for_account`.
            lock_families_where(session, OAuthToken.sid.in_(sorted(holders)) & of_client)
            ended: list[EndedSession] = []
            for sid in sorted(holders):
                row = sessions[sid]
                revoked = revoke_tokens_where(session, (OAuthToken.sid == sid) & of_client, now)
                ended.append(
                    EndedSession(
                        sid=sid,
                        sub=row.sub,
                        account_mail=row.account_mail,
                        ended_at=now,
                        reason=reason,
                        ended_now=True,
                        relying_parties=tuple(sorted(holders[sid])),
                        tokens_revoked=revoked,
                    )
                )
            return ended

    def kept_signins(self, sub: str, client_id: str) -> list[str]:
        """The ended sessions of `sub` in which `client_id` still holds live tokens
        (the sign-ins it kept when a card removal ended them), oldest first."""
        now = self._store.now()
        with self._store.session() as session:
            return list(
                session.scalars(
                    select(SigninSession.sid)
                    .join(OAuthToken, OAuthToken.sid == SigninSession.sid)
                    .where(
                        SigninSession.sub == sub,
                        SigninSession.ended_at.is_not(None),
                        OAuthToken.client_id == client_id,
                        OAuthToken.revoked_at.is_(None),
                        OAuthToken.expires_at > now,
                    )
                    .group_by(SigninSession.sid, SigninSession.created_at)
                    .order_by(SigninSession.created_at, SigninSession.sid)
                )
            )

    def end_sessions_for_account(self, mail: str, reason: str) -> list[EndedSession]:
        """End every open session of an account (e.g. its registration was removed)."""
        now = self._store.now()
        with self._store.transaction() as session:
            rows = session.execute(
                update(SigninSession)
                .where(
                    SigninSession.account_mail == normalise_mail(mail),
                    SigninSession.ended_at.is_(None),
                )
                .values(ended_at=now, end_reason=str(reason))
                .returning(SigninSession.sid, SigninSession.sub, SigninSession.account_mail),
                execution_options={"synchronize_session": False},
            ).all()
            # All the families up front, in one sorted pass: two removals of the same
            # account at once then cannot lock them in different orders.
            lock_families_where(session, OAuthToken.sid.in_([row.sid for row in rows]))
            return [_finish_ending(session, row, now=now, reason=str(reason)) for row in rows]


def _relying_parties(session: Session, sid: str) -> tuple[str, ...]:
    return tuple(
        session.scalars(
            select(SessionRelyingParty.client_id)
            .where(SessionRelyingParty.sid == sid)
            .order_by(SessionRelyingParty.first_issued_at, SessionRelyingParty.client_id)
        ).all()
    )


def _finish_ending(
    session: Session,
    row: Any,
    *,
    now: datetime,
    reason: str,
    keep: frozenset[str] = frozenset(),
) -> EndedSession:
    # Tokens die with the session: a removed card or a removed registration must not
    # leave a refresh token that keeps an RP signed in — unless the RP chose to keep
    # its sign-in when the card leaves.
    condition = OAuthToken.sid == row.sid
    if keep:
        condition = condition & OAuthToken.client_id.not_in(sorted(keep))
    revoked = revoke_tokens_where(session, condition, now)
    joined = _relying_parties(session, row.sid)
    return EndedSession(
        sid=row.sid,
        sub=row.sub,
        account_mail=row.account_mail,
        ended_at=now,
        reason=reason,
        ended_now=True,
        relying_parties=tuple(rp for rp in joined if rp not in keep),
        tokens_revoked=revoked,
        kept_relying_parties=tuple(rp for rp in joined if rp in keep),
    )
