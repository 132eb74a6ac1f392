"""The `admin` blueprint: the local administrators' web console under `/admin`.

Thin views over `AdminService` and `remove_registration`; access is decided by
`access.admin_view`. Anything outside the administrator's organisations is the
broker's ordinary "page not found" — the same page as for an address that never
existed. Every form posts a CSRF token (checked app-wide); no page has inline script.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.wrappers import Response
from werkzeug.wrappers import Response as BaseResponse

from careid_broker.admin.errors import (
    OutOfScopeError,
    RegistrationChangedError,
    RemovalReasonError,
)
from careid_broker.admin.export import csv_lines
from careid_broker.admin.reasons import MAX_REASON_TEXT, Reason, RemovalReason, parse_reason
from careid_broker.admin.removal import (
    audit_refused_removal,
    registration_tag,
    remove_registration,
)
from careid_broker.admin.rights import Actor, describe_orgs
from careid_broker.admin.service import UserDetails, clean_search_text
from careid_broker.card.revocation import EVENT_CHECK, CheckResult
from careid_broker.codes import BrokerCode, message_for, words_for
from careid_broker.store import Outcome
from careid_broker.store.subjects import normalise_mail
from careid_broker.web.admin_access import admin_view
from careid_broker.web.context import current_broker
from careid_broker.web.errors import error_response
from careid_broker.web.forms import MAX_MAIL_LENGTH

blueprint = Blueprint("admin", __name__, url_prefix="/admin")

_FILENAME_CHARS = frozenset(string.ascii_uppercase + string.digits)
_TEXT_ERROR = f"Describe the other reason, in up to {MAX_REASON_TEXT} characters"


@blueprint.app_template_filter("admin_time")
def admin_time(value: datetime | None) -> str:
    """ "21 Nov 2026, 05:42 UTC": times as an administrator reads them."""
    if value is None:
        return ""
    utc = value.astimezone(UTC)
    return f"{utc.day} {utc:%b %Y, %H:%M} UTC"


# Audit events in words, for the person's page; the event name stays beside them.
_EVENT_WORDS = {
    "signin.card": "Smartcard sign-in",
    "signin.password": "Password sign-in",
    "session.end": "Sign-in session ended",
    "subject.reassigned": "Email address now on a new directory entry: new identifier for services",
    "subject.retired": "Identifier for services retired by the broker host's administrator",
    "oidc.authorize": "Sign-in request from a service",
    "oidc.role_selected": "Role chosen",
    "oidc.logout": "Sign-out request from a service",
    "oidc.backchannel_logout": "Service told to sign out",
    "registration.start": "Registration step 1: email and password",
    "registration.aup": "Acceptable use policy accepted here",
    "aup.password": "Email and password checked to accept the acceptable use policy",
    "aup.accept": "Acceptable use policy accepted at sign-in",
    "registration.card": "Registration step 2: smartcard and PIN",
    "registration.create": "Smartcard registered",
    "registration.cancel": "Registration cancelled",
    "registration.certificate_renewed": "Renewed smartcard recorded",
    "card.removed": "Smartcard taken out of the reader",
    "card.revoked": "Smartcard found revoked",
    "admin.registration.remove": "Registration removed by an administrator",
    "admin.revocation.check": "Revocation checked by an administrator",
    "admin.user.view": "Person's page opened",
    "admin.search": "People searched for",
    "csrf.refused": "Expired form refused",
}


@blueprint.app_template_filter("event_words")
def event_words(event: str) -> str:
    """An audit event as an administrator reads it (the event name if not known)."""
    return _EVENT_WORDS.get(event, event)


@blueprint.app_template_filter("code_words")
def code_words(code: str | None) -> str:
    """An error code in a few words (`careid_broker.codes.words_for`)."""
    return words_for(code)


def _page(template: str, *, status: int = 200, **context: object) -> Response:
    return Response(render_template(template, **context), status=status, mimetype="text/html")


def _not_found() -> Response:
    return error_response(BrokerCode.PAGE_NOT_FOUND)


def _details(actor: Actor, mail: str, *, viewed: bool = True) -> UserDetails | None:
    """The person, if in scope; `viewed` False for a step whose action is audited."""
    # Measured as looked up, too: "İ".lower() is two characters.
    if len(mail) > MAX_MAIL_LENGTH or len(normalise_mail(mail)) > MAX_MAIL_LENGTH:
        return None
    try:
        return current_broker().admin.user(actor, mail, viewed=viewed)
    except OutOfScopeError:
        return None


@blueprint.get("/")
@blueprint.get("")
@admin_view
def home(actor: Actor) -> BaseResponse:
    """Search the people of my organisations."""
    query = clean_search_text(request.args.get("q"))
    results = current_broker().admin.search(actor, query) if query else None
    return _page(
        "admin_home.html",
        actor=actor,
        orgs=describe_orgs(actor.org_codes or ()),
        query=query,
        results=results,
    )


@blueprint.get("/users/<mail>")
@admin_view
def user(actor: Actor, mail: str) -> BaseResponse:
    """A person's account, registration, sign-ins and audit trail."""
    details = _details(actor, mail)
    if details is None:
        return _not_found()
    return _page("admin_user.html", actor=actor, user=details)


@blueprint.get("/users/<mail>/remove")
@admin_view
def remove_form(actor: Actor, mail: str) -> BaseResponse:
    """Step 1 of removal: choose the reason."""
    details = _details(actor, mail)
    if details is None:
        return _not_found()
    if details.registration is None:
        return redirect(url_for("admin.user", mail=details.mail), code=303)
    return _removal_form(actor, details)


def _removal_form(
    actor: Actor,
    details: UserDetails,
    *,
    chosen: str | None = None,
    text: str = "",
    failed: bool = False,
) -> Response:
    return _page(
        "admin_remove.html",
        status=400 if failed else 200,
        actor=actor,
        user=details,
        reasons=list(RemovalReason),
        chosen=chosen,
        text=text,
        max_text=MAX_REASON_TEXT,
        error=message_for(BrokerCode.ADMIN_REASON_REQUIRED) if failed else None,
        # "Another reason" with no words: the error is the box's, not the choice's.
        text_error=_TEXT_ERROR if failed and chosen == RemovalReason.OTHER.value else None,
        code=BrokerCode.ADMIN_REASON_REQUIRED.value if failed else None,
    )


@blueprint.post("/users/<mail>/remove")
@admin_view
def remove_check(actor: Actor, mail: str) -> BaseResponse:
    """Step 2: the reason checked, ask for confirmation (nothing is removed yet)."""
    details = _details(actor, mail)
    if details is None:
        return _not_found()
    if details.registration is None:
        return redirect(url_for("admin.user", mail=details.mail), code=303)
    chosen = request.form.get("reason")
    text = request.form.get("reason_text", "")[: MAX_REASON_TEXT * 2]
    try:
        reason = parse_reason(chosen, text)
    except RemovalReasonError:
        return _removal_form(actor, details, chosen=chosen, text=text, failed=True)
    return _page(
        "admin_confirm.html",
        actor=actor,
        user=details,
        registration=details.registration,
        # What is confirmed is this registration, not whatever holds the card later.
        registration_tag=registration_tag(details.registration),
        reason=reason,
    )


@blueprint.post("/users/<mail>/remove/confirm")
@admin_view
def remove_confirm(actor: Actor, mail: str) -> BaseResponse:
    """Step 3: remove, then back to the person's page with what was done."""
    details = _details(actor, mail, viewed=False)
    if details is None:
        return _not_found()
    card_uuid = request.form.get("card_uuid", "")[:64]
    try:
        reason: Reason = parse_reason(request.form.get("reason"), request.form.get("reason_text"))
        removal = remove_registration(
            current_broker().admin,
            actor,
            card_uuid=card_uuid,
            reason=reason,
            expected_mail=details.mail,
            # Missing (a page from before it was carried) is no match: nothing removed.
            expected_registration=request.form.get("registration", "")[:64],
        )
    except RemovalReasonError as exc:
        # The page offered only usable reasons: this one was changed on the way here.
        audit_refused_removal(
            current_broker().audit, actor, card_uuid, exc.code, subject=details.mail
        )
        return _removal_form(
            actor,
            details,
            chosen=request.form.get("reason"),
            text=request.form.get("reason_text", "")[: MAX_REASON_TEXT * 2],
            failed=True,
        )
    except RegistrationChangedError:
        flash(message_for(BrokerCode.ADMIN_REGISTRATION_CHANGED), "error")
        return redirect(url_for("admin.user", mail=details.mail), code=303)
    except OutOfScopeError:
        return _not_found()
    sessions = len(removal.ended)
    services_told = len(removal.relying_parties)
    if sessions:
        ended = (
            f" {sessions} signed-in session{'' if sessions == 1 else 's'} ended;"
            f" {services_told} service{'' if services_told == 1 else 's'} told to sign them"
            " out."
        )
    else:
        # Nothing to end is the ordinary case, not a fault: say it as such.
        ended = " They were not signed in anywhere, so no session had to end."
    flash(
        f"The smartcard registration was removed.{ended} They can now register a smartcard again.",
        "success",
    )
    return redirect(url_for("admin.user", mail=details.mail), code=303)


_CHECK_MESSAGES = {
    CheckResult.GOOD: ("The card is not revoked: its issuer says it is good now.", "success"),
    CheckResult.REVOKED: (
        "The card is revoked. {ended} signed-in session{s} ended; the services they used"
        " were told to sign them out.",
        "success",
    ),
    CheckResult.UNAVAILABLE: (
        "The card's revocation could not be checked now (its issuer did not answer)."
        " Try again in a few minutes.",
        "error",
    ),
    CheckResult.INVALID: (
        "The card's certificate is no longer valid (expired, or not trusted): it cannot sign in.",
        "error",
    ),
    CheckResult.NO_CERTIFICATE: (
        "This card was registered before the service kept certificates, so it cannot be"
        " checked without the card; it is checked at its next sign-in.",
        "error",
    ),
    CheckResult.NOT_CONFIGURED: ("Smartcard sign-in is not configured here.", "error"),
}


@blueprint.post("/users/<mail>/check-revocation")
@admin_view
def check_revocation(actor: Actor, mail: str) -> BaseResponse:
    """Ask now whether the person's card is revoked; if it is, their sessions end."""
    details = _details(actor, mail, viewed=False)
    if details is None:
        return _not_found()  # the refusal is the service's, audited
    broker = current_broker()
    if details.registration is None:
        broker.audit(
            EVENT_CHECK,
            outcome=Outcome.FAILURE,
            code=BrokerCode.REGISTRATION_NOT_FOUND,
            actor=actor.name,
            subject=details.mail,
            details={"via": actor.via},
        )
        return _not_found()
    try:
        registration = broker.admin.registration(actor, details.registration.card_uuid)
    except OutOfScopeError:
        return _not_found()
    outcome = broker.revocation_check.check(registration, actor=actor.name)
    text, category = _CHECK_MESSAGES[outcome.result]
    ended = outcome.sessions_ended
    flash(text.format(ended=ended, s="" if ended == 1 else "s"), category)
    return redirect(url_for("admin.user", mail=details.mail), code=303)


@blueprint.get("/registrations.csv")
@admin_view
def export_csv(actor: Actor) -> BaseResponse:
    """Every registration of my organisations, as CSV."""
    records = list(current_broker().admin.all_registrations(actor))
    current_broker().audit(
        "admin.registrations.export",
        outcome=Outcome.SUCCESS,
        actor=actor.name,
        details={
            "via": actor.via,
            "org_codes": sorted(actor.org_codes or ()),
            "rows": len(records),
        },
    )
    stamp = current_broker().store.now().strftime("%Y%m%d")
    # Rights hold ODS codes only (`admin_orgs`); kept to [A-Z0-9] here as well, since a
    # quote, a semicolon, a line break or a non-Latin-1 letter would break the header.
    cleaned = (
        "".join(ch for ch in code if ch in _FILENAME_CHARS) for code in actor.org_codes or ()
    )
    orgs = "-".join(sorted(filter(None, cleaned))) or "all"
    return Response(
        "".join(csv_lines(records)),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="registrations-{orgs}-{stamp}.csv"',
        },
    )
