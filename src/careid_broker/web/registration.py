"""One-time registration pages (blueprint `registration`), thin over `RegistrationService`.

- `GET /register[?tx=T]` step 1 page; `POST /register` email + password
- `GET /register/card` the prerequisites (each missing one named) or step 2's page;
  `POST /register/aup` accepts the current AUP when the directory is writable
- `POST /register/challenge`, `POST /register/authenticate` (JSON, like `/card/*`)
- `GET /register/confirm` step 3's page; `POST /register/confirm` stores the link and
  signs the person in by card; `POST /register/cancel` abandons it

The pending step's id lives only in this browser's session (`steps` loads it for each
view after step 1); each step is audited (`registration.*`) with its outcome and, for the
card, issuer, serial and UUID.
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, redirect, request, session, url_for
from flask.wrappers import Response
from werkzeug.wrappers import Response as BaseResponse

from careid_broker.card.service import CardRefusal
from careid_broker.card.wiring import CardServices
from careid_broker.codes import AupRoute, BrokerCode, Code, aup_message, message_for, status_for
from careid_broker.directory import AupRecordedButUnreadError
from careid_broker.errors import BrokerError, DirectoryUnavailableError, InvalidCredentialsError
from careid_broker.registration.service import (
    Confirmed,
    RegistrationAlreadyDoneError,
    RegistrationExpiredError,
    RegistrationService,
)
from careid_broker.registration.state import PendingRegistration, Stage
from careid_broker.signin.password import SigninThrottledError
from careid_broker.signin.sessions import SigninDecision
from careid_broker.store import CertificateRef, NewSession, Outcome
from careid_broker.web.card_pages import (
    RefusedBodyError,
    json_refusal,
    read_json_body,
    refuse_body,
    rfc3339,
)
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
from careid_broker.web.registration_pages import (
    PENDING_KEY,
    audit_step,
    available_card,
    current_pending,
    form_step_refused,
    render_page,
    restart,
    return_tx,
)
from careid_broker.web.registration_steps import page_step, script_refused, script_step
from careid_broker.web.signin_cookie import complete_signin
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

blueprint = Blueprint("registration", __name__)

# Step 1 ----------------------------------------------------------------------------------


@blueprint.get("/register")
def start() -> BaseResponse:
    """Step 1: the email address and password (or carry on where this browser left off)."""
    card = available_card()
    service = current_broker().registration
    try:
        pending = current_pending(service)
    except RegistrationExpiredError:
        return _start_form(card, tx=return_tx(request.args.get("tx")))
    if pending.stage is Stage.CARD:
        return redirect(url_for("registration.confirm_page"), code=303)
    return redirect(url_for("registration.card_page"), code=303)


def _start_form(
    card: CardServices,
    *,
    tx: str | None,
    email: str = "",
    summary: list[tuple[str, str]] | None = None,
    code: Code | None = None,
    status: int = 200,
) -> Response:
    return render_page(
        card,
        "register_start.html",
        status=status,
        tx=tx,
        email=email,
        summary=summary or [],
        code=code.value if code else None,
    )


def _expired_start_form() -> Response:
    """Step 1's form again after its token expired (the relying party's request kept)."""
    return _start_form(
        available_card(),
        tx=return_tx(request.form.get("tx")),
        **expired_form_fields(),
    )


@blueprint.post("/register")
@spends_token
@reshow_on_expiry(_expired_start_form)
def submit_password() -> BaseResponse:
    """Step 1's form: check the password and every account prerequisite."""
    card = available_card()
    svc = current_broker()
    tx = return_tx(request.form.get("tx"))
    email = typed_mail()
    password = request.form.get("password", "")
    if not email or not password:
        return _start_form(
            card,
            tx=tx,
            email=email,
            summary=[("email", message_for(BrokerCode.SIGNIN_FORM_INCOMPLETE))],
            code=BrokerCode.SIGNIN_FORM_INCOMPLETE,
            status=400,
        )
    try:
        started = current_broker().registration.start(
            email, password, client_address=request.remote_addr or "unknown", return_tx=tx
        )
    except InvalidCredentialsError as exc:
        audit_step("registration.start", Outcome.FAILURE, code=exc.reason)
        return _start_form(
            card,
            tx=tx,
            email=email,
            summary=[("email", exc.message)],
            code=exc.code,
            status=400,
        )
    except SigninThrottledError as exc:
        audit_step("registration.start", Outcome.FAILURE, code=exc.code)
        return error_response(
            exc.code, retry_after=exc.retry_after, retry_url=url_for("registration.start")
        )
    except BrokerError as exc:  # directory down, locked, password expired
        if isinstance(exc, DirectoryUnavailableError):
            svc.metrics.directory_errors.inc(operation="registration")
        audit_step("registration.start", Outcome.FAILURE, code=exc.code)
        return error_response(exc.code, retry_url=url_for("registration.start"))
    account = started.account
    previous = session.get(PENDING_KEY)
    if isinstance(previous, str):
        current_broker().registration.cancel(previous)  # one registration per browser at a time
    session[PENDING_KEY] = started.pending.id
    audit_step(
        "registration.start",
        Outcome.FAILURE if started.problems else Outcome.SUCCESS,
        code=BrokerCode.REGISTRATION_PREREQUISITES_MISSING if started.problems else None,
        mail=account.mail,
        org=account.org_code,
        details={"missing": [p.code.value for p in started.problems]},
    )
    return redirect(url_for("registration.card_page"), code=303)


# Step 2 ----------------------------------------------------------------------------------


@blueprint.get("/register/card")
@page_step
def card_page(
    card: CardServices, service: RegistrationService, pending: PendingRegistration
) -> BaseResponse:
    """What the account still lacks, each named; else step 2 (present the card)."""
    if pending.stage is Stage.CARD:
        return redirect(url_for("registration.confirm_page"), code=303)
    account, problems = service.account(pending)
    if problems:
        writable = current_broker().config.directory.writable
        # The policy's one message: accepted on this page, or in the portal.
        aup_text = aup_message(AupRoute.HERE if writable else AupRoute.PORTAL)
        return render_page(
            card,
            "register_checks.html",
            status=403,
            account=account,
            problems=[
                (p.code.value, aup_text if p.code is BrokerCode.AUP_NOT_ACCEPTED else p.message)
                for p in problems
            ],
            aup_missing=any(p.code is BrokerCode.AUP_NOT_ACCEPTED for p in problems),
            aup_writable=writable,
            aup_version=current_broker().directory.current_aup_version,
            aup_url=current_broker().config.signin.aup_url,
            code=BrokerCode.REGISTRATION_PREREQUISITES_MISSING.value,
            form_step=step_tag(pending.id),
        )
    return render_page(card, "register_card.html", account=account, form_step=step_tag(pending.id))


@blueprint.post("/register/aup")
@page_step
def accept_aup(
    card: CardServices, service: RegistrationService, pending: PendingRegistration
) -> BaseResponse:
    """Accept the current acceptable use policy in the directory, then carry on."""
    if (refused := form_step_refused(pending)) is not None:
        return refused
    if request.form.get("accept") != "yes":
        return redirect(url_for("registration.card_page"), code=303)
    unread: AupRecordedButUnreadError | None = None
    try:
        account = service.accept_aup(pending)
    except RegistrationExpiredError as exc:
        # The address is another entry's now (or no one's): nothing is recorded, and
        # the registration starts again with the password of whoever holds it.
        return restart(mail=pending.mail, details=_refused_entry(pending, exc))
    except AupRecordedButUnreadError as exc:
        # The directory holds the acceptance: audited as made, whatever the read back
        # did. Only this step stops; the card step reads the account afresh.
        account, unread = exc.recorded, exc
    except BrokerError as exc:  # read-only directory, directory down
        audit_step("registration.aup", Outcome.FAILURE, code=exc.code, mail=pending.mail)
        return error_response(exc.code, retry_url=url_for("registration.card_page"))
    audit_step(
        "registration.aup",
        Outcome.SUCCESS,
        mail=account.mail,
        org=account.org_code,
        details={"aup_version": account.aup_version, "dn": account.dn},
    )
    if unread is not None:
        log.warning("AUP acceptance recorded, registration step stopped: %s", unread.detail)
        audit_step(
            "registration.aup",
            Outcome.FAILURE,
            code=unread.code,
            mail=account.mail,
            org=account.org_code,
            details={"aup_recorded": account.aup_version},
        )
        return error_response(unread.code, retry_url=url_for("registration.card_page"))
    return redirect(url_for("registration.card_page"), code=303)


def _refused_entry(pending: PendingRegistration, exc: RegistrationExpiredError) -> dict[str, str]:
    """Audit details of a step refused because it expired or its account changed: the
    entry step 1 checked, and why (which entry holds the address now)."""
    return {"dn": pending.dn, "detail": exc.detail or ""}


@blueprint.post("/register/challenge")
@script_step(refused=BrokerError)  # a store outage too is answered in JSON, as /card/* does
def challenge(
    card: CardServices, service: RegistrationService, pending: PendingRegistration
) -> Response:
    """A challenge bound to this browser's registration (JSON)."""
    try:
        issued = service.issue_challenge(pending)
    except BrokerError as exc:
        return script_refused(exc, mail=pending.mail)
    return jsonify({"challenge": issued.challenge, "expiresAt": rfc3339(issued.expires_at)})


@blueprint.post("/register/authenticate")
@script_step()
def authenticate(
    card: CardServices, service: RegistrationService, pending: PendingRegistration
) -> Response:
    """Step 2: the agent's token for this registration's challenge (JSON)."""
    svc = current_broker()
    try:
        body = read_json_body()
    except RefusedBodyError as exc:
        return refuse_body(exc, "registration.card")
    signin = card.signin
    assert signin is not None  # noqa: S101 - available_card() checked
    if body is not None:
        # The script names its page's step too (`step_refusal`).
        code = step_refusal(
            body.get(STEP_FIELD), pending.id, unnamed=BrokerCode.REGISTRATION_EXPIRED
        )
        if code is not None:
            refused = BrokerError(code, detail="the page does not name this browser's step")
            return script_refused(refused, mail=pending.mail)
    try:
        if body is None:
            raise BrokerError(ErrorCode.TOKEN_MALFORMED, detail="no JSON object")
        step = service.present_card(
            pending, body.get("token"), challenge=body.get("challenge"), card=signin
        )
    except CardRefusal as refusal:
        facts = refusal.facts
        log.info("registration card refused: %s", refusal.code.value)
        current_broker().audit(
            "registration.card",
            outcome=Outcome.FAILURE,
            code=refusal.code,
            actor=pending.mail,
            subject=pending.mail,
            org=facts.org_code,
            details=facts.audit_details(),
        )
        if refusal.code is BrokerCode.AUP_NOT_ACCEPTED and svc.aup.writable:
            # The checks page offers to accept it: this registration's password is checked.
            return json_refusal(
                refusal.code,
                extra={"aup": url_for("registration.card_page")},
                message=aup_message(AupRoute.REGISTRATION),
            )
        if refusal.code is BrokerCode.AUP_NOT_ACCEPTED:
            return json_refusal(refusal.code, extra={"aup": svc.config.signin.aup_url})
        return json_refusal(refusal.code)
    except BrokerError as exc:
        return script_refused(exc, mail=pending.mail)
    session[PENDING_KEY] = step.id
    assert step.card is not None  # noqa: S101 - a card step always has its card
    current_broker().audit(
        "registration.card",
        outcome=Outcome.SUCCESS,
        actor=step.mail,
        subject=step.mail,
        org=step.org_code or None,
        details={
            "uuid": step.card.uuid,
            "cert_issuer": step.card.issuer_dn,
            "cert_serial": step.card.serial_hex,
        },
    )
    return jsonify({"redirect": url_for("registration.confirm_page")})


# Step 3 ----------------------------------------------------------------------------------


@blueprint.get("/register/confirm")
@page_step
def confirm_page(
    card: CardServices, service: RegistrationService, pending: PendingRegistration
) -> BaseResponse:
    """Step 3: the card holder beside the mail account; confirm or cancel."""
    if pending.stage is not Stage.CARD or pending.card is None:
        return redirect(url_for("registration.card_page"), code=303)
    return _confirm_form(card, service, pending)


_TYPE_IT = "Type your NHSmail password to show that this smartcard is yours."


def _confirm_form(
    card: CardServices,
    service: RegistrationService,
    pending: PendingRegistration,
    *,
    refused: InvalidCredentialsError | None = None,
    typed: bool = False,
) -> BaseResponse:
    """The confirmation page; with the password asked again where the account names no
    Care Identity (`RegistrationService.needs_password`)."""
    account, _problems = service.account(pending)
    return render_page(
        card,
        "register_confirm.html",
        status=400 if refused is not None else 200,
        pending=pending,
        existing=current_broker().repos.registrations.by_mail(pending.mail),
        needs_password=service.needs_password(account),
        form_step=step_tag(pending.id),
        password_error=None if refused is None else refused.message if typed else _TYPE_IT,
        code=refused.code.value if refused is not None else None,
    )


@blueprint.post("/register/confirm")
@spends_token  # it may carry the password (`needs_password`)
@page_step
def confirm(
    card: CardServices, service: RegistrationService, pending: PendingRegistration
) -> BaseResponse:
    """Store the link and sign in by card; or say why not (nothing is stored then)."""
    svc = current_broker()
    # The page's step first: a confirmation from a page for another person's step must
    # leave that step alone, whatever stage it is at.
    if (refused := form_step_refused(pending)) is not None:
        return refused
    if pending.stage is not Stage.CARD:
        return restart()  # step 2 not done: nothing here to confirm
    started: list[NewSession] = []

    def audit_and_sign_in(confirmed: Confirmed) -> None:
        # In the transaction that stores the link: the link, its audit entry and the
        # sign-in are committed together, or none of them.
        record = confirmed.registration
        audit_step(
            "registration.create",
            Outcome.SUCCESS,
            mail=record.account_mail,
            org=record.org_code or None,
            details={
                "uuid": record.card_uuid,
                "link_mode": record.link_mode.value,
                "cert_issuer": record.cert_issuer_dn,
                "cert_serial": record.cert_serial,
                "replaced_serial": confirmed.replaced.cert_serial if confirmed.replaced else None,
            },
        )
        started.append(
            complete_signin(
                SigninDecision.by_card(
                    confirmed.account,
                    card_uuid=record.card_uuid,
                    certificate=CertificateRef(record.cert_issuer_dn, record.cert_serial),
                    org_code=confirmed.account.org_code,
                    card_session=card.settings.session_lock,
                    auth_time=confirmed.card_used_at,
                    audit_details={"uuid": record.card_uuid, "via": "registration"},
                )
            )
        )

    password = request.form.get("password")
    try:
        signin = card.signin
        assert signin is not None  # noqa: S101 - available_card() checked
        confirmed, _identity = service.confirm(
            pending,
            checker=signin,
            password=password,
            client_address=request.remote_addr or "unknown",
            within=audit_and_sign_in,
        )
    except RegistrationExpiredError as exc:
        return restart(mail=pending.mail, details=_refused_entry(pending, exc))
    except BrokerError as exc:  # a conflict; the account, identity, card or password
        details: dict[str, object] = {"uuid": pending.card.uuid} if pending.card else {}
        if isinstance(exc, CardRefusal):
            details |= exc.facts.audit_details()
        code = exc.code
        if isinstance(exc, InvalidCredentialsError):  # its real reason, for the audit
            code = exc.reason
            details["step"] = "password"
        audit_step(
            "registration.create",
            Outcome.FAILURE,
            code=code,
            mail=pending.mail,
            org=pending.org_code or None,
            details=details,
        )
        log.info("registration refused at confirmation: %s", exc.code.value)
        if isinstance(exc, InvalidCredentialsError):  # the password asked again
            return _confirm_form(card, service, pending, refused=exc, typed=bool(password))
        if isinstance(exc, RegistrationAlreadyDoneError):
            # Finished in another browser: this one has nothing left to do but sign in.
            session.pop(PENDING_KEY, None)
            return error_response(exc.code, retry_url=url_for("login.page", tx=pending.return_tx))
        if isinstance(exc, SigninThrottledError):  # the password asked again, too often
            return error_response(
                exc.code,
                retry_after=exc.retry_after,
                retry_url=url_for("registration.confirm_page"),
            )
        return error_response(exc.code, status=status_for(exc.code))
    session.pop(PENDING_KEY, None)
    record = confirmed.registration
    [new] = started
    svc.metrics.registry.counter(
        "careid_card_registrations_total", "Smartcards registered (linked to an account)."
    ).inc()
    next_url = (
        url_for("oidc.resume", tx=pending.return_tx) if pending.return_tx else url_for("login.page")
    )
    return render_page(
        card,
        "register_done.html",
        registration=record,
        account=confirmed.account,
        card_session=new.card_session,
        next_url=next_url,
    )


@blueprint.post("/register/cancel")
def cancel() -> BaseResponse:
    """Abandon the registration in progress (nothing was stored)."""
    service = current_broker().registration
    available_card()
    try:
        pending = current_pending(service)
    except RegistrationExpiredError:
        session.pop(PENDING_KEY, None)  # nothing left to cancel
        return redirect(url_for("registration.start"), code=303)
    if (refused := form_step_refused(pending)) is not None:
        return refused  # this page's step was cancelled already
    session.pop(PENDING_KEY, None)
    service.cancel(pending.id)
    audit_step("registration.cancel", Outcome.SUCCESS, mail=pending.mail)
    return redirect(url_for("registration.start"), code=303)
