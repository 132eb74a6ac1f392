"""Card ↔ account registrations: one card identity links to one mail account."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from careid_broker.store._sql import row_where, scalars_in_chunks
from careid_broker.store.engine import Store
from careid_broker.store.errors import ConflictSide, RegistrationConflictError
from careid_broker.store.models import Registration
from careid_broker.store.subjects import normalise_mail


class LinkMode(StrEnum):
    """What a registration pins: the Care Identity UUID (survives card renewal) or
    the exact certificate (a renewed card must register again)."""

    UUID = "uuid"
    CERTIFICATE = "certificate"


@dataclass(frozen=True, kw_only=True, slots=True)
class NewRegistration:
    """What the registration service asks to store."""

    card_uuid: str
    account_mail: str
    account_dn: str
    org_code: str
    link_mode: LinkMode
    cert_issuer_dn: str
    cert_serial: str  # hex
    cert_fingerprint: str  # SHA-256 of the DER certificate, hex
    how: str = "self-service"
    cert_der: bytes | None = None
    account_entry_id: str | None = None
    """The account entry's immutable identifier, when the directory gives one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistrationRecord:
    """A stored registration."""

    id: int
    card_uuid: str
    account_mail: str
    account_dn: str
    org_code: str
    link_mode: LinkMode
    cert_issuer_dn: str
    cert_serial: str
    cert_fingerprint: str
    registered_at: datetime
    how: str
    cert_der: bytes | None = None
    """The linked certificate (None for links made before it was kept)."""
    account_entry_id: str | None = None
    """The account entry's identifier (None: made before revision 0014, or the
    directory gives none); `account_dn` decides without it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistrationPage:
    """One page of a filtered listing, newest first, with the total match count."""

    items: tuple[RegistrationRecord, ...]
    total: int
    offset: int
    limit: int


def _record(row: Registration | Row[Any]) -> RegistrationRecord:
    return RegistrationRecord(
        id=row.id,
        card_uuid=row.card_uuid,
        account_mail=row.account_mail,
        account_dn=row.account_dn,
        org_code=row.org_code,
        link_mode=LinkMode(row.link_mode),
        cert_issuer_dn=row.cert_issuer_dn,
        cert_serial=row.cert_serial,
        cert_fingerprint=row.cert_fingerprint,
        registered_at=row.registered_at,
        how=row.how,
        cert_der=row.cert_der,
        account_entry_id=row.account_entry_id,
    )


def _escape_like(value: str) -> str:
    # A search for "a_b" must not match "axb": LIKE wildcards in user text are literal.
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Registrations:
    """Create, find, list and remove registrations."""

    MAX_PAGE = 200

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, new: NewRegistration) -> RegistrationRecord:
        """Store a link; `RegistrationConflictError` names the side already linked.

        The unique constraints decide, not a prior lookup: two instances registering
        the same card at once cannot both succeed.
        """
        mail = normalise_mail(new.account_mail)
        row = Registration(
            card_uuid=new.card_uuid,
            account_mail=mail,
            account_dn=new.account_dn,
            org_code=new.org_code,
            link_mode=new.link_mode.value,
            cert_issuer_dn=new.cert_issuer_dn,
            cert_serial=new.cert_serial.lower(),
            cert_fingerprint=new.cert_fingerprint.lower(),
            registered_at=self._store.now(),
            how=new.how,
            cert_der=new.cert_der,
            account_entry_id=new.account_entry_id,
        )
        try:
            # A savepoint keeps the caller's transaction usable after a conflict
            # (PostgreSQL aborts the whole transaction on a failed INSERT).
            with self._store.transaction(savepoint=True) as session:
                session.add(row)
                session.flush()
        except IntegrityError as exc:
            sides = self._conflicting_sides(new.card_uuid, mail)
            if not sides:
                raise  # not a uniqueness conflict: a real bug, let it surface
            raise RegistrationConflictError(
                frozenset(sides), detail=f"registration conflict on {sorted(sides)}"
            ) from exc
        return _record(row)

    def _conflicting_sides(self, card_uuid: str, mail: str) -> set[ConflictSide]:
        with self._store.session() as session:
            sides: set[ConflictSide] = set()
            if session.scalar(select(Registration.id).where(Registration.card_uuid == card_uuid)):
                sides.add(ConflictSide.CARD)
            if session.scalar(select(Registration.id).where(Registration.account_mail == mail)):
                sides.add(ConflictSide.ACCOUNT)
            return sides

    def by_uuid(self, card_uuid: str) -> RegistrationRecord | None:
        """The registration of a card identity, or None."""
        with self._store.session() as session:
            # Core: every card sign-in reads it (see `_sql.select_rows_where`).
            row = row_where(session, Registration, "card_uuid", card_uuid)
            return _record(row) if row else None

    def hold(self, registration_id: int, *, card_uuid: str) -> bool:
        """Whether the registration is still there, locked against its removal until the
        caller's transaction ends (call it inside one).

        A card sign-in reads the registration, then the directory, then starts the
        session: an administrator's removal in between must either wait for the session
        (and then end it with the others) or be seen here, so that no session is left
        for a card that is no longer registered. SQLite's write lock serialises the
        two; PostgreSQL's row lock (FOR UPDATE) does.
        """
        with self._store.transaction() as session:
            found = session.scalar(
                select(Registration.id)
                .where(Registration.id == registration_id, Registration.card_uuid == card_uuid)
                .with_for_update()
            )
            return found is not None

    def record_certificate(
        self, card_uuid: str, *, issuer_dn: str, serial_hex: str, fingerprint: str, der: bytes
    ) -> bool:
        """Make this the card's linked certificate (a renewed card, same identity), or fill
        in the DER of a registration made before it was kept.

        True when it changed something.
        """
        with self._store.transaction() as session:
            changed = session.execute(
                update(Registration)
                .where(
                    Registration.card_uuid == card_uuid,
                    or_(
                        Registration.cert_fingerprint != fingerprint.lower(),
                        Registration.cert_der.is_(None),
                    ),
                )
                .values(
                    cert_issuer_dn=issuer_dn,
                    cert_serial=serial_hex.lower(),
                    cert_fingerprint=fingerprint.lower(),
                    cert_der=der,
                ),
                execution_options={"synchronize_session": False},
            )
            return bool(getattr(changed, "rowcount", 0))

    def by_certificates(
        self, issuer_dn: str, serials_hex: Collection[str]
    ) -> list[RegistrationRecord]:
        """The registrations whose linked certificate is one of these (issuer, serials)."""
        wanted = sorted({serial.upper() for serial in serials_hex})
        with self._store.session() as session:
            rows = scalars_in_chunks(
                session,
                wanted,
                lambda chunk: select(Registration).where(
                    Registration.cert_issuer_dn == issuer_dn,
                    func.upper(Registration.cert_serial).in_(chunk),
                ),
            )
            return [_record(r) for r in rows]

    def without_entry_id(self, *, after: int = 0, limit: int = 500) -> list[RegistrationRecord]:
        """Registrations that keep no entry identifier yet (made before revision 0014),
        by id, the page after id `after`."""
        with self._store.session() as session:
            rows = session.scalars(
                select(Registration)
                .where(Registration.account_entry_id.is_(None), Registration.id > after)
                .order_by(Registration.id)
                .limit(limit)
            ).all()
            return [_record(r) for r in rows]

    def record_entry_id(self, registration: RegistrationRecord, entry_id: str) -> bool:
        """Keep `entry_id` with a registration that has none (made before revision 0014),
        if it is still that registration at the DN it was read with: a removal, a new
        registration or another instance's recording meanwhile leaves it alone. True if
        kept."""
        with self._store.transaction() as session:
            done = session.execute(
                update(Registration)
                .where(
                    Registration.id == registration.id,
                    Registration.card_uuid == registration.card_uuid,
                    Registration.account_dn == registration.account_dn,
                    Registration.account_entry_id.is_(None),
                )
                .values(account_entry_id=entry_id),
                execution_options={"synchronize_session": False},
            )
            return int(getattr(done, "rowcount", 0)) == 1

    def linked_certificates(self) -> list[bytes]:
        """The DER of every registered card's linked certificate (where known)."""
        with self._store.session() as session:
            rows = session.scalars(
                select(Registration.cert_der).where(Registration.cert_der.is_not(None))
            ).all()
        return [der for der in rows if der is not None]

    def by_mail(self, mail: str) -> RegistrationRecord | None:
        """The registration of a mail account, or None."""
        with self._store.session() as session:
            row = session.scalar(
                select(Registration).where(Registration.account_mail == normalise_mail(mail))
            )
            return _record(row) if row else None

    def search(
        self,
        *,
        org_codes: Collection[str] | None = None,
        card_uuid: str | None = None,
        text: str | None = None,
        offset: int = 0,
        limit: int = 50,
        after: RegistrationRecord | None = None,
    ) -> RegistrationPage:
        """Filtered registrations, newest first (ties broken by id: stable paging).

        `org_codes` scopes a local administrator to their organisations, compared as
        ODS codes are, whatever the case (`Rx1` is RX1); an empty collection matches
        nothing (an administrator with no organisations sees none). `text` matches part
        of the mail, DN or UUID, case-insensitively. `after` pages by key: only what
        comes after that registration in this order, so rows removed or added meanwhile
        do not shift the pages (an export reading every page misses none); the total is
        still of all that match.
        """
        if offset < 0 or not 1 <= limit <= self.MAX_PAGE:
            raise ValueError(f"offset must be >= 0 and limit 1..{self.MAX_PAGE}")
        query = select(Registration)
        if org_codes is not None:
            wanted = sorted({code.strip().upper() for code in org_codes})
            query = query.where(func.upper(func.trim(Registration.org_code)).in_(wanted))
        if card_uuid is not None:
            query = query.where(Registration.card_uuid == card_uuid)
        if text:
            pattern = f"%{_escape_like(text.strip().lower())}%"
            query = query.where(
                or_(
                    func.lower(Registration.account_mail).like(pattern, escape="\\"),
                    func.lower(Registration.account_dn).like(pattern, escape="\\"),
                    func.lower(Registration.card_uuid).like(pattern, escape="\\"),
                )
            )
        with self._store.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            if after is not None:
                query = query.where(
                    or_(
                        Registration.registered_at < after.registered_at,
                        and_(
                            Registration.registered_at == after.registered_at,
                            Registration.id < after.id,
                        ),
                    )
                )
            rows = session.scalars(
                query.order_by(Registration.registered_at.desc(), Registration.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            return RegistrationPage(
                items=tuple(_record(r) for r in rows), total=total, offset=offset, limit=limit
            )

    def remove(
        self, *, card_uuid: str | None = None, mail: str | None = None
    ) -> RegistrationRecord | None:
        """Delete the registration of a card or an account; what was removed, or None."""
        if (card_uuid is None) == (mail is None):
            raise ValueError("give exactly one of card_uuid or mail")
        condition = (
            Registration.card_uuid == card_uuid
            if card_uuid is not None
            else Registration.account_mail == normalise_mail(mail or "")
        )
        with self._store.transaction() as session:
            # DELETE … RETURNING: of two administrators removing at once, exactly one
            # gets the record back (and audits the removal); the other gets None.
            row = session.scalars(
                delete(Registration).where(condition).returning(Registration),
                execution_options={"synchronize_session": False},
            ).one_or_none()
            return _record(row) if row else None
