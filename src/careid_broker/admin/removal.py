"""Removing a registration: the link goes, the person's sessions end, their RPs are told.

One database transaction holds all of it — the link deleted, every open session of the
account ended (tokens revoked), a back-channel logout queued for each relying party of
those sessions (the OP's outbox), and the audit entry naming who removed what and why —
so a failure part-way leaves everything as it was. Afterwards the person can register
again, with the same card or a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from careid_broker.admin.errors import OutOfScopeError, RegistrationChangedError
from careid_broker.admin.reasons import Reason
from careid_broker.admin.rights import Actor
from careid_broker.admin.service import AdminService
from careid_broker.codes import Code
from careid_broker.store import EndedSession, EndReason, Outcome, RegistrationRecord
from careid_broker.store.subjects import normalise_mail

EVENT_REMOVE = "admin.registration.remove"


def registration_tag(registration: RegistrationRecord) -> str:
    """A short digest naming this one registration, for a confirmation to carry.

    The card and the account alone do not tell a registration from the same card
    registered again since (removed meanwhile, found, registered anew), and SQLite may
    give the new row the old one's id: its id and the moment it was made together do.
    A renewed certificate keeps the registration, so the certificate is left out.
    """
    named = "\n".join(
        (
            str(registration.id),
            registration.card_uuid,
            registration.account_mail,
            registration.registered_at.isoformat(),
        )
    )
    return hashlib.sha256(named.encode()).hexdigest()[:32]


def audit_refused_removal(
    audit: Callable[..., object],
    actor: Actor,
    card_uuid: str,
    code: Code,
    *,
    subject: str | None = None,
) -> None:
    """Audit a refused removal: one refused before it reached `remove_registration` (a
    reason that does not do, no confirmation), or a confirmation that no longer holds.

    `subject` is the person the administrator meant, when there is one (the console's
    page), even if the card named belongs to someone else or no one.
    """
    audit(
        EVENT_REMOVE,
        outcome=Outcome.FAILURE,
        code=code,
        actor=actor.name,
        subject=subject,
        details={"via": actor.via, "card_uuid": card_uuid[:64]},
    )


@dataclass(frozen=True, kw_only=True)
class Removal:
    """What a removal did."""

    registration: RegistrationRecord
    reason: Reason
    ended: tuple[EndedSession, ...]

    @property
    def relying_parties(self) -> tuple[str, ...]:
        """Every relying party told by back-channel logout (each once)."""
        return tuple(dict.fromkeys(rp for ended in self.ended for rp in ended.relying_parties))


def remove_registration(
    service: AdminService,
    actor: Actor,
    *,
    card_uuid: str,
    reason: Reason,
    expected_mail: str | None = None,
    expected_registration: str | None = None,
) -> Removal:
    """Remove the registration of a Care Identity UUID.

    `expected_mail` and `expected_registration` (its `registration_tag`) are what a
    confirmation showed: if the registration now belongs to someone else, is gone, or
    is another registration than the one shown, nothing is removed and
    `RegistrationChangedError` says so, audited under the expected person, whatever
    organisation the card is registered in (checked before the scope, so that the
    answer tells nothing of other organisations' registrations). Out of the actor's
    scope, or unknown without an expectation: `OutOfScopeError`, audited.
    """
    uuid = card_uuid.strip()
    expected = normalise_mail(expected_mail) if expected_mail is not None else None
    try:
        return _remove(
            service, actor, uuid=uuid, reason=reason, expected=expected, tag=expected_registration
        )
    except RegistrationChangedError as exc:
        # Audited here, after the removal's transaction rolled back (its own entries
        # with it): whichever way a removal is asked for, a stale one leaves a trace.
        audit_refused_removal(service.audit, actor, uuid, exc.code, subject=expected)
        raise


def _remove(
    service: AdminService,
    actor: Actor,
    *,
    uuid: str,
    reason: Reason,
    expected: str | None,
    tag: str | None,
) -> Removal:
    current = service.repos.registrations.by_uuid(uuid) if uuid else None
    if expected is not None or tag is not None:
        # What the confirmation showed is checked before the scope: a card registered
        # in another organisation must get the answer an unregistered one gets, or the
        # confirmation would tell an administrator which UUIDs are registered elsewhere.
        # Only a registration that is the one shown (the page's own person, whose scope
        # the caller checked) goes on to the scope check below.
        if current is None:
            raise RegistrationChangedError(detail=f"{uuid!r} is no longer registered")
        if expected is not None and current.account_mail != expected:
            raise RegistrationChangedError(detail=f"{uuid!r} now belongs to another account")
        if tag is not None and registration_tag(current) != tag:
            raise RegistrationChangedError(detail=f"{uuid!r} was registered again since")
    if current is not None and not service.covers_registration(actor, current):
        _refused(service, actor, current.account_mail, reason)
        raise OutOfScopeError(detail=f"{actor.name} may not remove {uuid!r}")
    if current is None:
        _refused(service, actor, None, reason)
        raise OutOfScopeError(detail=f"{actor.name} asked to remove unknown {uuid!r}")

    repos = service.repos
    with repos.store.transaction():
        removed = repos.registrations.remove(card_uuid=uuid)
        if removed is None or registration_tag(removed) != registration_tag(current):
            # Another administrator got there first (or it was re-made): roll back.
            raise RegistrationChangedError(detail=f"{uuid!r} changed during removal")
        ended = (
            *repos.sessions.end_sessions_for_account(
                removed.account_mail, EndReason.REGISTRATION_REMOVED
            ),
            # The sign-ins relying parties kept when the card last left the reader.
            *repos.sessions.end_kept_signins(
                EndReason.REGISTRATION_REMOVED, account_mail=removed.account_mail
            ),
        )
        for session in ended:
            service.session_ended(session)
        removal = Removal(registration=removed, reason=reason, ended=ended)
        # Last, inside the transaction: the chain lock is held only until the commit.
        service.audit(
            EVENT_REMOVE,
            outcome=Outcome.SUCCESS,
            actor=actor.name,
            subject=removed.account_mail,
            org=removed.org_code,
            details={
                "via": actor.via,
                "card_uuid": removed.card_uuid,
                "reason": reason.kind.value,
                "reason_text": reason.text,
                "link_mode": removed.link_mode.value,
                "cert_serial": removed.cert_serial,
                "registered_at": removed.registered_at.isoformat(),
                "sessions_ended": len(ended),
                "relying_parties": list(removal.relying_parties),
            },
        )
    return removal


def _refused(service: AdminService, actor: Actor, subject: str | None, reason: Reason) -> None:
    service.audit(
        EVENT_REMOVE,
        outcome=Outcome.FAILURE,
        code=OutOfScopeError.default_code,
        actor=actor.name,
        subject=subject,
        details={"via": actor.via, "reason": reason.kind.value},
    )
