"""What the registration views share: the service over the app's current parts, the
browser's pending step, page rendering with the agent CSP, and the audit call."""

from __future__ import annotations

from collections.abc import Mapping

from flask import render_template, request, session, url_for
from flask.wrappers import Response

from careid_broker.card.wiring import CardServices
from careid_broker.codes import BrokerCode, Code
from careid_broker.errors import BrokerError
from careid_broker.registration.service import RegistrationService
from careid_broker.registration.state import PendingRegistration
from careid_broker.store import MAX_TRANSACTION_ID_LENGTH, Outcome
from careid_broker.web import browser_binding as binding
from careid_broker.web.card_pages import script_context, with_agent_csp
from careid_broker.web.context import current_broker
from careid_broker.web.errors import error_response
from careid_broker.web.forms import STEP_FIELD, step_refusal
from careid_broker.web.signin_cookie import REGISTRATION_STEP_KEY

PENDING_KEY = REGISTRATION_STEP_KEY


def available_card() -> CardServices:
    """The card services; `card_signin_unavailable` without a `[pki]` section."""
    card = current_broker().card
    if not card.available:
        raise BrokerError(BrokerCode.CARD_SIGNIN_UNAVAILABLE, detail="no [pki] configured")
    return card


def current_pending(service: RegistrationService) -> PendingRegistration:
    """This browser's pending step, or `RegistrationExpiredError`."""
    pending_id = session.get(PENDING_KEY)
    return service.pending(pending_id if isinstance(pending_id, str) else None)


def render_page(
    card: CardServices, template: str, *, status: int = 200, **context: object
) -> Response:
    """A registration page, its script allowed to reach the agent (CSP `connect-src`)."""
    page = render_template(template, card=script_context(card), **context)
    return with_agent_csp(Response(page, status=status, mimetype="text/html"), card)


def return_tx(value: object) -> str | None:
    """An RP login transaction to go back to afterwards, if this browser opened it."""
    if isinstance(value, str) and len(value) <= MAX_TRANSACTION_ID_LENGTH:
        if binding.knows_login_transaction(value):
            return value
    return None


def audit_step(
    event: str,
    outcome: Outcome,
    *,
    code: Code | None = None,
    mail: str | None = None,
    org: str | None = None,
    details: Mapping[str, object] | None = None,
) -> None:
    """Audit a registration step; the person is both actor and subject."""
    current_broker().audit(
        event, outcome=outcome, code=code, actor=mail, subject=mail, org=org, details=details
    )


#: The audit event of each form that acts on a pending step.
_FORM_EVENTS = {
    "registration.accept_aup": "registration.aup",
    "registration.confirm": "registration.create",
    "registration.cancel": "registration.cancel",
}


def restart(*, mail: str | None = None, details: Mapping[str, object] | None = None) -> Response:
    """Forget the browser's pending step and say the registration must start again.

    A form posted for a step that has gone (expired, finished, replayed, or its account
    no longer the entry step 1 checked: `mail` and `details` then say whose and why) is
    a refusal and audited; a page opened without one is only told to start again."""
    session.pop(PENDING_KEY, None)
    if request.method == "POST":
        audit_step(
            _FORM_EVENTS.get(request.endpoint or "", "registration.start"),
            Outcome.FAILURE,
            code=BrokerCode.REGISTRATION_EXPIRED,
            mail=mail,
            details={"endpoint": request.endpoint, **(details or {})},
        )
    return error_response(BrokerCode.REGISTRATION_EXPIRED, retry_url=url_for("registration.start"))


def form_step_refused(pending: PendingRegistration) -> Response | None:
    """The refusal of a form that does not name this browser's step (`step_refusal`),
    audited; the step is left as it is. None when the form names it."""
    code = step_refusal(
        request.form.get(STEP_FIELD), pending.id, unnamed=BrokerCode.REGISTRATION_EXPIRED
    )
    if code is None:
        return None
    current_broker().audit(
        _FORM_EVENTS.get(request.endpoint or "", "registration.card"),
        outcome=Outcome.FAILURE,
        code=code,
        subject=pending.mail,
        details={"endpoint": request.endpoint},
    )
    return error_response(code, retry_url=url_for("registration.start"))
