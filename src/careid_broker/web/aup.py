"""Accepting the acceptable use policy at sign-in (blueprint `aup`), over `AupAcceptance`.

- `GET /login/aup[?tx=T]`: the policy to accept, for the account whose password this
  browser has just checked; without such a check, an email-and-password form to make
  one (a card sign-in refused for the policy sends people here: a card cannot record it)
- `POST /login/aup/password`: that form
- `POST /login/aup`: record the acceptance (audited as `aup.accept`), then finish the
  password sign-in it interrupted and go on to the relying party, or, after the card's
  detour, send the person back to sign in with their card. An acceptance the directory
  took is audited as made even when the account cannot be read back afterwards; that
  stops only this sign-in (a second, failed `aup.accept` says so: `aup_recorded`)

With a read-only directory none of this records anything: each page says to accept the
policy in the NHSmail portal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask.wrappers import Response
from werkzeug.wrappers import Response as BaseResponse

from careid_broker.codes import AupRoute, BrokerCode, Code, aup_message, message_for
from careid_broker.directory import AupRecordedButUnreadError, MailAccount
from careid_broker.errors import BrokerError, InvalidCredentialsError
from careid_broker.origins import origin_of
from careid_broker.signin.aup import AupStepExpiredError, PendingAcceptance
from careid_broker.signin.password import SigninThrottledError
from careid_broker.signin.sessions import SigninDecision
from careid_broker.store import Outcome
from careid_broker.web import browser_binding
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import reshow_on_expiry, spends_token
from careid_broker.web.errors import error_response
from careid_broker.web.forms import (
    STEP_FIELD,
    expired_form_fields,
    step_refusal,
    step_tag,
    typed_mail,
)
from careid_broker.web.registration_pages import return_tx
from careid_broker.web.security_headers import allow_form_action
from careid_broker.web.signin_cookie import AUP_STEP_KEY, complete_signin

log = logging.getLogger(__name__)

blueprint = Blueprint("aup", __name__)

PENDING_KEY = AUP_STEP_KEY
EVENT_PASSWORD = "aup.password"  # noqa: S105 - an audit event name
EVENT_ACCEPT = "aup.accept"


def offer_acceptance(account: MailAccount, *, tx_id: str | None, sign_in: bool) -> Response:
    """The page for someone whose password was just checked and whose account lacks the
    current policy: accept it here (writable directory) or in the portal (read-only)."""
    aup = current_broker().aup
    if not aup.writable:
        return error_response(BrokerCode.AUP_NOT_ACCEPTED)
    pending = aup.begin(account, return_tx=tx_id, sign_in=sign_in)
    session[PENDING_KEY] = pending.id  # replaces any earlier one: one per browser
    return _accept_page(pending, status=403)


def _rp_of(tx_id: str | None) -> str | None:
    """The relying party of a login transaction; its origin may receive this form's
    redirect (CSP form-action follows redirects)."""
    record = current_broker().repos.transactions.get(tx_id) if tx_id else None
    if record is None:
        return None
    allow_form_action(origin_of(record.request.redirect_uri))
    return record.request.client_id


def _accept_page(pending: PendingAcceptance, *, status: int = 200) -> Response:
    svc = current_broker()
    _rp_of(pending.return_tx)
    page = render_template(
        "aup_accept.html",
        pending=pending,
        form_step=step_tag(pending.id),
        message=aup_message(AupRoute.HERE),
        code=BrokerCode.AUP_NOT_ACCEPTED.value,
        aup_url=svc.config.signin.aup_url,
        aup_version=svc.aup.current_version,
    )
    return Response(page, status=status, mimetype="text/html")


def _password_form(
    *,
    tx: str | None,
    email: str = "",
    summary: list[tuple[str, str]] | None = None,
    code: Code | None = None,
    status: int = 200,
) -> Response:
    page = render_template(
        "aup_accept.html",
        pending=None,
        message=aup_message(AupRoute.PASSWORD),
        tx=tx,
        email=email,
        summary=summary or [],
        code=code.value if code else None,
    )
    return Response(page, status=status, mimetype="text/html")


def _pending() -> PendingAcceptance:
    pending_id = session.get(PENDING_KEY)
    return current_broker().aup.pending(pending_id if isinstance(pending_id, str) else None)


@blueprint.get("/login/aup")
def page() -> BaseResponse:
    """The policy to accept; else the email-and-password form that leads to it."""
    tx = return_tx(request.args.get("tx"))
    if not current_broker().aup.writable:
        return error_response(BrokerCode.AUP_NOT_ACCEPTED, retry_url=url_for("login.page", tx=tx))
    try:
        return _accept_page(_pending())
    except AupStepExpiredError:
        return _password_form(tx=tx)


def _expired_password_form() -> Response:
    return _password_form(
        tx=return_tx(request.form.get("tx")),
        **expired_form_fields(),
    )


@blueprint.post("/login/aup/password")
@spends_token
@reshow_on_expiry(_expired_password_form)
def check_password() -> BaseResponse:
    """Check the password of someone who wants to accept the policy (after a card
    refusal); they go on by card afterwards, so this signs nobody in."""
    svc = current_broker()
    tx = return_tx(request.form.get("tx"))
    email = typed_mail()
    password = request.form.get("password", "")
    if not svc.aup.writable:
        return error_response(BrokerCode.AUP_NOT_ACCEPTED, retry_url=url_for("login.page", tx=tx))
    if not email or not password:
        code: Code = BrokerCode.SIGNIN_FORM_INCOMPLETE
        return _password_form(
            tx=tx, email=email, summary=[("email", message_for(code))], code=code, status=400
        )
    rp = _rp_of(tx)
    try:
        checked = svc.password.check(
            email, password, client_address=request.remote_addr or "unknown"
        )
    except InvalidCredentialsError as exc:
        # Audited without the typed address: it may be a mistyped password.
        svc.audit(EVENT_PASSWORD, outcome=Outcome.FAILURE, code=exc.reason, rp=rp)
        code = BrokerCode.INVALID_CREDENTIALS
        return _password_form(
            tx=tx, email=email, summary=[("email", message_for(code))], code=code, status=400
        )
    except BrokerError as exc:  # throttled, directory down, password expired
        svc.audit(EVENT_PASSWORD, outcome=Outcome.FAILURE, code=exc.code, rp=rp)
        retry_after = exc.retry_after if isinstance(exc, SigninThrottledError) else None
        return error_response(
            exc.code, retry_after=retry_after, retry_url=url_for("aup.page", tx=tx)
        )
    account = checked.account
    refusal = checked.refusal
    if refusal is not None and refusal.code is not BrokerCode.AUP_NOT_ACCEPTED:
        _audit_for(account, EVENT_PASSWORD, Outcome.FAILURE, rp=rp, code=refusal.code)
        return error_response(refusal.code)
    _audit_for(account, EVENT_PASSWORD, Outcome.SUCCESS, rp=rp)
    if refusal is None:
        return _done_page(account, tx=tx, already=True)
    return offer_acceptance(account, tx_id=tx, sign_in=False)


@blueprint.post("/login/aup")
def accept() -> BaseResponse:
    """Record acceptance for the account this browser just proved, then carry on."""
    svc = current_broker()
    try:
        pending = _pending()
    except AupStepExpiredError as exc:
        svc.audit(EVENT_ACCEPT, outcome=Outcome.FAILURE, code=exc.code)
        return error_response(exc.code, retry_url=url_for("login.page"))
    # A page for an earlier step: accepting now would record the policy for, and sign in,
    # whoever checked their password in this browser since (`step_refusal`).
    code = step_refusal(
        request.form.get(STEP_FIELD), pending.id, unnamed=AupStepExpiredError.default_code
    )
    if code is not None:
        svc.audit(
            EVENT_ACCEPT,
            outcome=Outcome.FAILURE,
            code=code,
            subject=pending.mail,
            rp=_rp_of(pending.return_tx),
        )
        return error_response(code, retry_url=url_for("aup.page"))
    if request.form.get("accept") != "yes":
        return redirect(url_for("aup.page"), code=303)
    rp = _rp_of(pending.return_tx)
    session.pop(PENDING_KEY, None)
    unread: AupRecordedButUnreadError | None = None
    try:
        account = svc.aup.accept(pending)
    except AupRecordedButUnreadError as exc:
        # The directory holds the acceptance: it is audited as made, whatever the read
        # back did. Only this sign-in stops; signing in again finds the policy accepted.
        account, unread = exc.recorded, exc
    except BrokerError as exc:  # used or expired, read-only, directory down
        svc.audit(
            EVENT_ACCEPT,
            outcome=Outcome.FAILURE,
            code=exc.code,
            actor=pending.mail,
            subject=pending.mail,
            rp=rp,
        )
        return error_response(exc.code, retry_url=url_for("login.page", tx=pending.return_tx))
    _audit_for(account, EVENT_ACCEPT, Outcome.SUCCESS, rp=rp)
    if unread is not None:
        log.warning("AUP acceptance recorded, sign-in stopped: %s", unread.detail)
        _audit_for(
            account,
            EVENT_ACCEPT,
            Outcome.FAILURE,
            rp=rp,
            code=unread.code,
            details={"aup_recorded": account.aup_version},
        )
        return error_response(unread.code, retry_url=url_for("login.page", tx=pending.return_tx))
    try:
        svc.aup.check(account)
    except BrokerError as exc:  # disabled or expired meanwhile: still refused
        log.info("account refused after accepting the AUP: %s", exc.code.value)
        return error_response(exc.code)
    if not pending.sign_in:
        return _done_page(account, tx=pending.return_tx, already=False)
    complete_signin(
        # Dated from the password's check, not this click (`signin.aup`).
        SigninDecision.by_password(
            account, auth_time=pending.checked_at, audit_details={"via": "aup"}
        ),
        rp=rp,
    )
    if pending.return_tx is None:
        return redirect(browser_binding.pop_next() or url_for("login.page"), code=303)
    return redirect(url_for("oidc.resume", tx=pending.return_tx), code=303)


def _audit_for(
    account: MailAccount,
    event: str,
    outcome: Outcome,
    *,
    rp: str | None,
    code: str | None = None,
    details: Mapping[str, object] | None = None,
) -> None:
    """An audit entry about this account's own step (it is actor and subject); a
    success names the policy version the account now has."""
    if details is None and code is None:
        details = {"aup_version": account.aup_version}
    current_broker().audit(
        event,
        outcome=outcome,
        code=code,
        actor=account.mail,
        subject=account.mail,
        org=account.org_code,
        rp=rp,
        details=details,
    )


def _done_page(account: MailAccount, *, tx: str | None, already: bool) -> Response:
    page = render_template(
        "aup_done.html",
        account=account,
        already=already,
        next_url=url_for("login.page", tx=tx),
    )
    return Response(page, mimetype="text/html")
