"""The sign-in page (`/login`), password sign-in, the card button's fallback and `/signout`.

`/login?tx=<login transaction>` is where the OpenID Provider sends a browser that must
sign in; a successful sign-in goes straight on with that transaction in the same
request (`oidc_authorize.continue_signin`): the browser's next stop is the relying party
with its code. Without `tx` the page ends on "You are signed in".

The smartcard button is driven by `static/card-signin.js` (the `card` blueprint's
endpoints). Only the browser whose `/authorize` request made `tx` may use it, by
password or card (`oidc_authorize.in_this_browser`). `/login/card` is only
reached without the script: it explains what the browser lacks.
"""

from __future__ import annotations

import logging

from flask import Blueprint, redirect, render_template, request, url_for
from flask.wrappers import Response
from werkzeug.wrappers import Response as BaseResponse

from careid_broker.assurance import ACR_CARD, demands_card
from careid_broker.codes import BrokerCode, Code, message_for, status_for
from careid_broker.directory.models import CareIdentity
from careid_broker.errors import BrokerError, DirectoryUnavailableError, InvalidCredentialsError
from careid_broker.origins import origin_of
from careid_broker.signin.password import SigninThrottledError
from careid_broker.signin.sessions import EVENT_CARD, EVENT_PASSWORD, SigninDecision
from careid_broker.store import (
    MAX_TRANSACTION_ID_LENGTH,
    EndReason,
    LoginTransactionRecord,
    Outcome,
    TransactionStatus,
)
from careid_broker.web import aup, browser_binding
from careid_broker.web import oidc_authorize as authorize_flow
from careid_broker.web.card_pages import script_context, with_agent_csp
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import reshow_on_expiry, spends_token
from careid_broker.web.errors import error_response
from careid_broker.web.forms import MAX_MAIL_LENGTH, expired_form_fields, typed_mail
from careid_broker.web.security_headers import allow_form_action
from careid_broker.web.signin_cookie import complete_signin, current_signin, end_signin

log = logging.getLogger(__name__)

blueprint = Blueprint("login", __name__)


@blueprint.app_context_processor
def _header_signin() -> dict[str, object]:
    """Every broker page offers "Sign out" in its header while someone is signed in."""
    try:
        return {"header_signin": current_signin()}
    except BrokerError:
        # The store is down: the page saying so must still render, without the button.
        return {"header_signin": None}


def _transaction(tx_id: str | None) -> LoginTransactionRecord | None:
    """The pending login transaction named by `tx`; a page for an unusable one."""
    if tx_id is None:
        return None
    record = None
    if len(tx_id) <= MAX_TRANSACTION_ID_LENGTH:
        record = current_broker().repos.transactions.get(tx_id)
    if record is None or record.status is not TransactionStatus.PENDING:
        raise BrokerError(BrokerCode.OIDC_SIGNIN_EXPIRED)
    authorize_flow.in_this_browser(current_broker().oidc, tx_id, record)
    # The form's answer is a redirect on to this relying party (see security_headers).
    allow_form_action(origin_of(record.request.redirect_uri))
    return record


def _audit_name(text: str) -> str | None:
    """The typed address, for the audit log, only if it looks like one.

    People sometimes type their password into the email field; that must not be kept.
    """
    text = text.strip().lower()
    if 3 <= len(text) <= MAX_MAIL_LENGTH and "@" in text and not any(c.isspace() for c in text):
        return text
    return None


def _login_hint(tx: LoginTransactionRecord | None) -> str:
    hint = tx.request.extras.get("login_hint") if tx else None
    return hint if isinstance(hint, str) and _audit_name(hint) else ""


def _form(
    *,
    tx_id: str | None,
    card_only: bool,
    email: str = "",
    errors: dict[str, str] | None = None,
    summary: list[tuple[str, str]] | None = None,
    code: Code | None = None,
    status: int = 200,
) -> Response:
    card = current_broker().card
    page = render_template(
        "login.html",
        tx=tx_id,
        card_only=card_only,
        email=email,
        errors=errors or {},
        summary=summary or [],
        code=code.value if code else None,
        card=script_context(card),
    )
    return with_agent_csp(Response(page, status=status, mimetype="text/html"), card)


@blueprint.get("/login")
def page() -> BaseResponse:
    """The sign-in page, or "You are signed in" when there is nothing to sign in to."""
    tx_id = request.args.get("tx") or None
    tx = _transaction(tx_id)
    card_only = request.args.get("card") == "required" or (
        tx is not None and demands_card(tx.request.acr_values)
    )
    if tx is None:
        # A broker page that sent the browser here (the admin console's step-up) names
        # where to go back to; only a path on this broker is kept.
        browser_binding.remember_next(request.args.get("next"))
        current = current_signin()
        if current is not None and not (card_only and current.acr != ACR_CARD):
            target = browser_binding.pop_next()
            if target is not None:
                return redirect(target, code=303)
            return Response(
                render_template("signed_in.html", session=current), mimetype="text/html"
            )
    return _form(tx_id=tx_id, card_only=card_only, email=_login_hint(tx))


def _expired_form() -> Response:
    """The sign-in form again after its token expired: same request, same address."""
    tx_id = request.form.get("tx") or None
    tx = _transaction(tx_id)
    return _form(
        tx_id=tx_id,
        card_only=tx is not None and demands_card(tx.request.acr_values),
        **expired_form_fields(),
    )


@blueprint.post("/login")
@spends_token
@reshow_on_expiry(_expired_form)
def submit() -> BaseResponse:
    """Password sign-in."""
    svc = current_broker()
    tx_id = request.form.get("tx") or None
    tx = _transaction(tx_id)
    rp = tx.request.client_id if tx else None
    card_only = tx is not None and demands_card(tx.request.acr_values)
    email = typed_mail()
    password = request.form.get("password", "")
    who = _audit_name(email)

    def refused(code: Code, *, org: str | None = None) -> None:
        svc.metrics.signins.inc(method="password", result=code.value)
        svc.audit(
            EVENT_PASSWORD,
            outcome=Outcome.FAILURE,
            code=code,
            actor=who,
            subject=who,
            org=org,
            rp=rp,
        )

    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Enter your email address"
    if not password:
        errors["password"] = "Enter your password"  # noqa: S105 - a message
    if errors:
        refused(BrokerCode.SIGNIN_FORM_INCOMPLETE)
        return _form(
            tx_id=tx_id,
            card_only=card_only,
            email=email,
            errors=errors,
            summary=list(errors.items()),
            code=BrokerCode.SIGNIN_FORM_INCOMPLETE,
            status=400,
        )
    if card_only:
        refused(BrokerCode.CARD_REQUIRED)
        return error_response(BrokerCode.CARD_REQUIRED, retry_url=url_for("login.page", tx=tx_id))

    identity: CareIdentity | None = None
    try:
        checked = svc.password.check(
            email, password, client_address=request.remote_addr or "unknown"
        )
        if tx is not None and checked.refusal is None:
            # The relying party's claims, read here so the sign-in goes on to the code
            # in this request (`continue_signin`) instead of reading them again.
            identity = authorize_flow.care_identity_of(svc.oidc, checked.account)
    except InvalidCredentialsError as exc:
        refused(exc.reason)  # the real reason for the audit; the same answer for all
        message = message_for(BrokerCode.INVALID_CREDENTIALS)
        return _form(
            tx_id=tx_id,
            card_only=False,
            email=email,
            summary=[("email", message)],
            code=BrokerCode.INVALID_CREDENTIALS,
            status=400,
        )
    except SigninThrottledError as exc:
        refused(exc.code)
        return error_response(
            exc.code, retry_after=exc.retry_after, retry_url=url_for("login.page", tx=tx_id)
        )
    except DirectoryUnavailableError as exc:
        svc.metrics.directory_errors.inc(operation="authenticate")
        log.warning("directory unavailable at sign-in: %s", exc.detail)
        refused(exc.code)
        return error_response(exc.code, retry_url=url_for("login.page", tx=tx_id))
    except BrokerError as exc:  # locked, password expired, unreadable directory data
        refused(exc.code)
        return error_response(exc.code, status=status_for(exc.code))

    account = checked.account
    if checked.refusal is not None:
        log.info("account refused at sign-in: %s", checked.refusal.code.value)
        refused(checked.refusal.code, org=account.org_code)
        if checked.refusal.code is BrokerCode.AUP_NOT_ACCEPTED:
            return aup.offer_acceptance(account, tx_id=tx_id, sign_in=True)
        return error_response(checked.refusal.code, status=status_for(checked.refusal.code))

    decision = SigninDecision.by_password(account)
    if tx is None or tx_id is None:
        complete_signin(decision, rp=rp)
        return redirect(browser_binding.pop_next() or url_for("login.page"), code=303)
    answer = authorize_flow.continue_signin(
        svc.oidc,
        tx_id,
        tx,
        account=account,
        identity=identity,
        start_session=lambda: complete_signin(decision, rp=rp).record,
    )
    return see_other(answer)


def see_other(response: Response) -> Response:
    """A redirect answering a form POST as 303 See Other, so the browser follows it
    with a GET and never re-posts the form (with its password) to the next address
    (RFC 9700 §4.12; authlib answers authorization requests with 302)."""
    if response.status_code in (301, 302, 307, 308):
        response.status_code = 303
    return response


@blueprint.get("/login/card")
def card() -> Response:
    """The smartcard button without its script: why card sign-in cannot go on here.

    With the script the button never navigates here. Without it the browser cannot
    talk to the agent (`browser_unsupported`); on a broker with no `[pki]` card
    sign-in is switched off altogether (`card_signin_unavailable`).
    """
    tx_id = request.args.get("tx") or None
    tx = _transaction(tx_id)
    code = (
        BrokerCode.BROWSER_UNSUPPORTED
        if current_broker().card.available
        else BrokerCode.CARD_SIGNIN_UNAVAILABLE
    )
    broker = current_broker()
    broker.metrics.signins.inc(method="card", result=code.value)
    rp = tx.request.client_id if tx else None
    broker.audit(EVENT_CARD, outcome=Outcome.FAILURE, code=code, rp=rp)
    card_only = tx is not None and demands_card(tx.request.acr_values)
    back = None if card_only else url_for("login.page", tx=tx_id)
    status = 400 if code is BrokerCode.BROWSER_UNSUPPORTED else None
    return error_response(code, status=status, retry_url=back)


@blueprint.get("/signout")
def signout_page() -> Response:
    """Asks before signing out (a GET must not end a session: links can be forged)."""
    current = current_signin()
    return Response(
        render_template("signout.html", session=current, done=False), mimetype="text/html"
    )


@blueprint.post("/signout")
def signout() -> Response:
    """Ends the broker session; its relying parties are told by back-channel logout."""
    ended = end_signin(EndReason.LOGOUT)
    return Response(
        render_template("signout.html", session=None, done=True, ended=ended is not None),
        mimetype="text/html",
    )
