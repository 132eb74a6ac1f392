"""What local administrators can find out: search, a person's page, registrations.

No Flask here: the console, the API and the CLI each build an `AdminService` with the
broker's repositories, directory, clock and audit function, and pass the `Actor` doing
the work. Every lookup is scoped: an account or registration outside the actor's
organisations is `OutOfScopeError`, exactly as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from careid_broker.admin.config import AdminSettings, org_key
from careid_broker.admin.errors import OutOfScopeError
from careid_broker.admin.rights import Actor
from careid_broker.auditing import Auditor
from careid_broker.directory import CareIdentity, Directory, MailAccount, account_refusals
from careid_broker.store import (
    AuditRecord,
    EndedSession,
    Outcome,
    RegistrationPage,
    RegistrationRecord,
    Repositories,
    SessionRecord,
)
from careid_broker.store.subjects import normalise_mail

SessionEndedHook = Callable[[EndedSession], None]
MAX_SEARCH_TEXT = 128
# How much of a search's text its audit entry keeps: enough to see what was looked for.
AUDITED_SEARCH_TEXT = 40
EVENT_SEARCH = "admin.search"
EVENT_USER_VIEW = "admin.user.view"
EXPORT_BATCH = 200
# How many recent card sign-in rows are searched for the registered certificate.
CERTIFICATE_SCAN = 500


@dataclass(frozen=True, kw_only=True)
class UserSummary:
    """One search result: a directory account, a registration, or both."""

    mail: str
    name: str
    org_code: str | None
    care_identity_uuid: str | None
    registration: RegistrationRecord | None
    in_directory: bool


@dataclass(frozen=True, kw_only=True)
class UserDetails:
    """Everything the person's page shows."""

    mail: str
    account: MailAccount | None
    # Error codes of every reason the account may not sign in now (empty: it may).
    refusals: tuple[str, ...]
    current_aup_version: str
    care_identity: CareIdentity | None
    registration: RegistrationRecord | None
    active_sessions: tuple[SessionRecord, ...]
    recent_signins: tuple[AuditRecord, ...]
    audit_trail: tuple[AuditRecord, ...]
    previous_holders_registration: bool = False
    """The address keeps a registration made for the entry that held it before, in an
    organisation the actor does not cover: not shown, not the actor's to remove."""

    @property
    def name(self) -> str:
        """The display name, or the address when the directory has no account."""
        return self.account.display_name if self.account else self.mail

    @property
    def aup_current(self) -> bool:
        """Whether the current acceptable use policy is accepted."""
        accepted = (self.account.aup_version or "") if self.account else ""
        return accepted.strip().casefold() == self.current_aup_version.strip().casefold()


def clean_search_text(text: str | None) -> str:
    """Search text as used: trimmed, bounded, without control characters."""
    cleaned = "".join(ch for ch in (text or "") if ch.isprintable())
    return cleaned.strip()[:MAX_SEARCH_TEXT]


class AdminService:
    """Scoped queries for local administrators; removal lives in `removal.py`."""

    def __init__(
        self,
        *,
        repos: Repositories,
        directory: Directory,
        settings: AdminSettings,
        session_ended: SessionEndedHook,
        audit: Auditor,
        now: Callable[[], datetime],
    ) -> None:
        self.repos = repos
        self.directory = directory
        self.settings = settings
        self.session_ended = session_ended
        self.audit = audit
        self.now = now

    # Scope.

    def covers_registration(self, actor: Actor, registration: RegistrationRecord) -> bool:
        """Whether the actor may act on a registration.

        The organisation recorded at registration, or the person's organisation in the
        directory now: someone who moved trusts can be helped by either administrator.
        The second only while the entry holding the address is the one registered: an
        address given to someone else gives their administrators no say over the
        previous holder's card (the organisation recorded at registration, and the
        CLI, still do).
        """
        if actor.covers(registration.org_code):
            return True
        account = self.directory.find_account(registration.account_mail)
        return account is not None and self._covers_through(actor, registration, account)

    @staticmethod
    def _covers_through(
        actor: Actor, registration: RegistrationRecord, account: MailAccount
    ) -> bool:
        """Whether the account read for a registration's address puts it in scope."""
        return actor.covers(account.org_code) and account.is_entry(
            dn=registration.account_dn, entry_id=registration.account_entry_id
        )

    def _shown_registration(
        self, actor: Actor, account: MailAccount | None, registration: RegistrationRecord | None
    ) -> RegistrationRecord | None:
        """The registration of an address as an administrator may see it beside the
        account holding the address now: not one made for a previous holder, unless the
        actor covers the organisation it was made at."""
        if registration is None or actor.covers(registration.org_code):
            return registration
        if account is not None and self._covers_through(actor, registration, account):
            return registration
        return None

    def _stored_org_codes(self, actor: Actor) -> list[str] | None:
        # Stored as the directory spelled them at registration ("Rx1" too): the store
        # compares them upper-cased, as `Actor.covers` does.
        return actor.sql_org_codes()

    # Search and the person's page.

    def search(self, actor: Actor, text: str | None) -> list[UserSummary]:
        """Accounts and registrations of the actor's organisations matching the text.

        Audited (the text cut short, and how many were found): who looked for whom is
        part of what an administrator did (threat model T36).
        """
        query = clean_search_text(text)
        if not query:
            return []
        limit = self.settings.search_limit
        accounts: list[MailAccount] = []
        if actor.org_codes:
            accounts = self.directory.search_accounts(query, sorted(actor.org_codes), limit)
        page = self.repos.registrations.search(
            org_codes=self._stored_org_codes(actor), text=query, limit=min(limit, 200)
        )
        by_mail = {r.account_mail: r for r in page.items}
        results: list[UserSummary] = []
        for account in accounts:
            if not actor.covers(account.org_code):
                continue
            mail = normalise_mail(account.mail)
            registration = self._shown_registration(
                actor,
                account,
                by_mail.pop(mail, None) or self.repos.registrations.by_mail(mail),
            )
            results.append(
                UserSummary(
                    mail=mail,
                    name=account.display_name,
                    org_code=account.org_code,
                    care_identity_uuid=account.care_identity_uuid,
                    registration=registration,
                    in_directory=True,
                )
            )
        # Registrations the directory search did not bring back: made at one of the
        # actor's organisations by someone who has since moved, or matched on the DN.
        for registration in by_mail.values():
            moved = self.directory.find_account(registration.account_mail)
            results.append(
                UserSummary(
                    mail=registration.account_mail,
                    name=moved.display_name if moved else registration.account_mail,
                    org_code=moved.org_code if moved else registration.org_code,
                    care_identity_uuid=registration.card_uuid,
                    registration=registration,
                    in_directory=moved is not None,
                )
            )
        results = results[:limit]
        self.audit(
            EVENT_SEARCH,
            outcome=Outcome.SUCCESS,
            actor=actor.name,
            details={
                "via": actor.via,
                "query": query[:AUDITED_SEARCH_TEXT],
                "results": len(results),
            },
        )
        return results

    def user(self, actor: Actor, mail: str, *, viewed: bool = True) -> UserDetails:
        """A person's page; `OutOfScopeError` when unknown or not the actor's.

        Audited as a view of the person (T36), unless `viewed` is False: a step that
        only checks its scope before an action audited on its own (a removal, a check).
        """
        wanted = normalise_mail(mail)
        account = self.directory.find_account(wanted) if wanted else None
        stored = self.repos.registrations.by_mail(wanted) if wanted else None
        registration = self._shown_registration(actor, account, stored)
        in_scope = (account is not None and actor.covers(account.org_code)) or (
            registration is not None and actor.covers(registration.org_code)
        )
        if not in_scope:
            self._refused(actor, EVENT_USER_VIEW, wanted)
            raise OutOfScopeError(detail=f"{actor.name} asked for {wanted!r}: not in scope")
        now = self.now()
        refusals: tuple[str, ...] = ()
        if account is not None:
            refusals = tuple(
                error.code.value
                for error in account_refusals(
                    account, now=now, current_aup_version=self.directory.current_aup_version
                )
            )
        uuid = (registration.card_uuid if registration else None) or (
            account.care_identity_uuid if account else None
        )
        identity = self.directory.find_care_identity(uuid) if uuid else None
        audit = self.repos.audit
        subjects = [wanted, *([uuid] if uuid else [])]
        details = UserDetails(
            mail=wanted,
            account=account,
            refusals=refusals,
            current_aup_version=self.directory.current_aup_version,
            care_identity=identity,
            registration=registration,
            previous_holders_registration=stored is not None and registration is None,
            active_sessions=tuple(self.repos.sessions.active_for_account(wanted)),
            recent_signins=self._recent_signins(wanted, account, registration),
            audit_trail=tuple(audit.list_for_subject(subjects, limit=self.settings.audit_entries)),
        )
        if viewed:
            # After the trail is read: the page shows earlier views, not this one.
            self.audit(
                EVENT_USER_VIEW,
                outcome=Outcome.SUCCESS,
                actor=actor.name,
                subject=wanted,
                org=(account.org_code if account else None)
                or (registration.org_code if registration else None),
                details={"via": actor.via},
            )
        return details

    def _recent_signins(
        self,
        mail: str,
        account: MailAccount | None,
        registration: RegistrationRecord | None,
    ) -> tuple[AuditRecord, ...]:
        """Sign-in attempts by the address, by the Care Identity UUID, and by the
        registered certificate.

        A refused card (revoked, expired, untrusted, not registered) is audited before
        the broker knows whose it is: under the UUID it claims, or with no subject at
        all. "Why can't this person sign in?" needs those rows too.
        """
        limit = self.settings.recent_signins
        subjects = {mail}
        for uuid in (
            registration.card_uuid if registration else None,
            account.care_identity_uuid if account else None,
        ):
            if uuid:
                subjects.add(uuid)
        audit = self.repos.audit
        found = {
            e.seq: e for e in audit.list_for_subject(subjects, event_prefix="signin.", limit=limit)
        }
        if registration is not None:
            serial = registration.cert_serial.lower()
            recent_cards = audit.list_recent(event_prefix="signin.card", limit=CERTIFICATE_SCAN)
            for entry in recent_cards:
                details = entry.details
                if str(details.get("cert_serial", "")).lower() == serial and details.get(
                    "cert_issuer"
                ) in (None, registration.cert_issuer_dn):
                    found.setdefault(entry.seq, entry)
        return tuple(sorted(found.values(), key=lambda e: e.seq, reverse=True)[:limit])

    # Registrations (the API and the CLI).

    def registration(self, actor: Actor, card_uuid: str) -> RegistrationRecord:
        """One registration by Care Identity UUID; `OutOfScopeError` if not the actor's."""
        found = self.repos.registrations.by_uuid(card_uuid.strip())
        if found is None or not self.covers_registration(actor, found):
            self._refused(actor, "admin.registration.view", found.account_mail if found else None)
            raise OutOfScopeError(detail=f"{actor.name} asked for registration {card_uuid!r}")
        return found

    def list_registrations(
        self,
        actor: Actor,
        *,
        org: str | None = None,
        card_uuid: str | None = None,
        text: str | None = None,
        offset: int = 0,
        limit: int = 50,
        after: RegistrationRecord | None = None,
    ) -> RegistrationPage:
        """A page of the actor's registrations, newest first, optionally filtered
        (`after`: the page after that registration, by key).

        Naming an organisation the actor may not act on is `OutOfScopeError` (404), not
        an empty page: an integration with a wrong setting should hear about it.
        """
        codes = self._stored_org_codes(actor)
        if org is not None:
            if not actor.covers(org):
                self._refused(actor, "admin.registrations.list", None)
                raise OutOfScopeError(detail=f"{actor.name} asked for organisation {org!r}")
            codes = [org_key(org)]
        return self.repos.registrations.search(
            org_codes=codes,
            card_uuid=card_uuid.strip() if card_uuid else None,
            text=clean_search_text(text) or None,
            offset=offset,
            limit=limit,
            after=after,
        )

    def all_registrations(
        self, actor: Actor, *, org: str | None = None
    ) -> Iterator[RegistrationRecord]:
        """Every registration in scope (for exports), newest first, in batches.

        Paged by key, not by offset: a registration removed between two batches would
        otherwise shift the next one past a row that is still there.
        """
        last: RegistrationRecord | None = None
        while True:
            page = self.list_registrations(actor, org=org, after=last, limit=EXPORT_BATCH)
            yield from page.items
            if len(page.items) < EXPORT_BATCH:
                return
            last = page.items[-1]

    def _refused(self, actor: Actor, event: str, subject: str | None) -> None:
        # Probing another organisation is worth knowing about; the answer stays a 404.
        self.audit(
            event,
            outcome=Outcome.FAILURE,
            code=OutOfScopeError.default_code,
            actor=actor.name,
            subject=subject or None,
            details={"via": actor.via},
        )
