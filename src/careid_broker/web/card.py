"""The card sign-in endpoints (blueprint `card`), thin over `CardSignin`.

- `POST /card/challenge` `{"tx": T|null}` → `{"challenge": C, "expiresAt": RFC3339}`
- `POST /card/authenticate` `{"tx": T|null, "challenge": C, "token": {careid-auth:1}}`
  → `{"redirect": URL, "cardSession": S|null}` or 4xx/5xx `{"error", "message", …}`
- `POST /card/removed` `{"cardSession": S}` (the agent; no cookie, no CSRF) → 204, or
  429 for an address sending too many reports that end nothing; with `"lockNotArmed":
  true` from the sign-in page, for a session the agent did not take the lock for
- `GET /card/agent-help`: how to install and start the agent.

The first two are same-origin script calls: CSRF token in `X-CSRF-Token`, `Origin` /
`Sec-Fetch-Site` checked, and `tx` must be a login transaction this browser was shown
(see `binding`). Without `tx` the sign-in is the broker's own (ending on "You are
signed in"). Every attempt is audited (`signin.card`) with its code, the certificate's
issuer and serial, the UUID, the client address and the relying party.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from flask import Blueprint, jsonify, render_template, request, url_for
from flask.wrappers import Response

from careid_broker.card.service import AttemptFacts, CardRefusal, CardSigninDecision
from careid_broker.card.wiring import CardServices
from careid_broker.codes import AupRoute, BrokerCode, Code, aup_message
from careid_broker.errors import BrokerError
from careid_broker.signin.sessions import EVENT_CARD, SigninDecision
from careid_broker.store import (
    MAX_TRANSACTION_ID_LENGTH,
    CertificateRef,
    LoginTransactionRecord,
    NewSession,
    Outcome,
    SessionRecord,
    TransactionStatus,
)
from careid_broker.web import browser_binding as binding
from careid_broker.web import oidc_authorize as authorize_flow
from careid_broker.web.card_pages import (
    RefusedBodyError,
    install_url,
    json_refusal,
    read_json_body,
    refuse_body,
    rfc3339,
    same_origin,
)
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import csrf_exempt
from careid_broker.web.signin_cookie import complete_signin
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

blueprint = Blueprint("card", __name__)

# A renewed card (same Care Identity, new certificate) signed in: its registration now
# holds the new certificate.
EVENT_CERTIFICATE_RENEWED = "registration.certificate_renewed"
#: `{"cardSession": S}` with S at most 256 characters: anything much larger is not one.
MAX_REMOVED_BODY_BYTES = 1024
# Codes after which the page offers registration (with a link in the answer).
_OFFER_REGISTRATION = frozenset(
    {BrokerCode.CARD_NOT_REGISTERED, BrokerCode.CARD_CERTIFICATE_NOT_REGISTERED}
)


@dataclass(frozen=True, kw_only=True)
class _Binding:
    """The transaction a card request is for: an RP's, or this browser's own."""

    transaction_id: str
    rp_tx: str | None
    rp: str | None
    record: LoginTransactionRecord | None = None  # the RP's transaction, as read


def _binding(tx: object, *, create_local: bool, read_state: bool = True) -> _Binding:
    """The transaction for this request's `tx`, checked against this browser's session.

    Without `read_state` its state is not read here (its id says whether it has
    expired): the caller's own write checks that it is still pending.
    """
    svc = current_broker()
    if tx is None:
        local = binding.local_transaction(
            svc.repos.transactions, issuer=svc.config.broker.issuer, create=create_local
        )
        if local is None:
            # This browser never asked for a challenge: whatever it holds came from
            # another browser's window.
            raise BrokerError(
                ErrorCode.CHALLENGE_WRONG_TRANSACTION, detail="no local card transaction"
            )
        return _Binding(transaction_id=local, rp_tx=None, rp=None)
    if (
        not isinstance(tx, str)
        or len(tx) > MAX_TRANSACTION_ID_LENGTH
        or not binding.knows_login_transaction(tx)
    ):
        raise BrokerError(
            ErrorCode.CHALLENGE_WRONG_TRANSACTION,
            detail="the login transaction was not opened in this browser",
        )
    transactions = svc.repos.transactions
    record = transactions.get(tx) if read_state else transactions.opened(tx)
    if record is None or record.status is not TransactionStatus.PENDING:
        raise BrokerError(BrokerCode.OIDC_SIGNIN_EXPIRED, detail="login transaction not pending")
    return _Binding(transaction_id=tx, rp_tx=tx, rp=record.request.client_id, record=record)


def _precheck(card: CardServices) -> Response | None:
    if not same_origin(card.origin):
        current_broker().audit(
            EVENT_CARD,
            outcome=Outcome.FAILURE,
            code=BrokerCode.REQUEST_NOT_SAME_ORIGIN,
            details={"endpoint": request.endpoint},
        )
        return json_refusal(BrokerCode.REQUEST_NOT_SAME_ORIGIN)
    if not card.available:
        return _request_refused(BrokerCode.CARD_SIGNIN_UNAVAILABLE, "no [pki] section")
    return None


@blueprint.post("/card/challenge")
def challenge() -> Response:
    """A fresh single-use challenge for this browser's login transaction."""
    card = current_broker().card
    refused = _precheck(card)
    if refused is not None:
        return refused
    try:
        body = read_json_body()
    except RefusedBodyError as exc:
        return refuse_body(exc, EVENT_CARD)
    if body is None:
        return _request_refused(BrokerCode.REQUEST_INVALID, "not a JSON object")
    try:
        # Whether the transaction is still pending is read once, in the challenge's
        # own write (`issue`).
        bound = _binding(body.get("tx"), create_local=True, read_state=False)
        issued = current_broker().repos.challenges.issue(bound.transaction_id)
    except BrokerError as exc:
        return _request_refused(exc.code, exc.detail)
    if issued is None:
        return _request_refused(BrokerCode.OIDC_SIGNIN_EXPIRED, "login transaction not pending")
    return jsonify({"challenge": issued.challenge, "expiresAt": rfc3339(issued.expires_at)})


def _request_refused(code: Code, detail: str | None) -> Response:
    """A card request refused before any card was looked at: audited like every refusal
    (a transaction from another browser may be an attack). Each costs the sender a
    request past the CSRF and same-origin checks, whose own refusals are audited too."""
    current_broker().audit(
        EVENT_CARD,
        outcome=Outcome.FAILURE,
        code=code,
        details={"endpoint": request.endpoint, "detail": detail},
    )
    return json_refusal(code)


@blueprint.post("/card/authenticate")
def authenticate() -> Response:
    """Check the agent's token; sign in by card, or say why not."""
    card = current_broker().card
    refused = _precheck(card)
    if refused is not None:
        return refused
    tx: object = None
    rp: str | None = None
    try:
        try:
            body = read_json_body()
        except RefusedBodyError as exc:
            # Too large or too deep to be a careid-auth:1 token message (the contract's
            # size check comes first, with its own code).
            raise CardRefusal(
                ErrorCode.TOKEN_MALFORMED, facts=AttemptFacts(), detail=exc.detail
            ) from exc
        tx = body.get("tx") if body is not None else None
        if body is None:
            raise CardRefusal(ErrorCode.TOKEN_MALFORMED, facts=AttemptFacts(), detail="no JSON")
        bound = _binding(tx, create_local=False)
        rp = bound.rp
        signin = card.signin
        assert signin is not None  # noqa: S101 - _precheck refused when unavailable
        decision = signin.signin(
            body.get("token"), challenge=body.get("challenge"), transaction_id=bound.transaction_id
        )
    except CardRefusal as refusal:
        return _refused(refusal, rp=rp, tx=tx if isinstance(tx, str) else None)
    except BrokerError as exc:
        return _refused(
            CardRefusal(exc.code, facts=AttemptFacts(), detail=exc.detail), rp=rp, tx=None
        )
    try:
        return _signed_in(card, decision, bound)
    except CardRefusal as refusal:  # found when the session was about to start
        return _refused(refusal, rp=rp, tx=tx if isinstance(tx, str) else None)


def _refused(refusal: CardRefusal, *, rp: str | None, tx: str | None) -> Response:
    svc = current_broker()
    code = refusal.code
    facts = refusal.facts
    svc.metrics.signins.inc(method="card", result=code.value)
    if code is BrokerCode.DIRECTORY_UNAVAILABLE:
        svc.metrics.directory_errors.inc(operation="card_signin")
    log.info(
        "card sign-in refused: %s",
        code.value,
        extra={"error_code": code.value, "detail": refusal.detail},
    )
    current_broker().audit(
        EVENT_CARD,
        outcome=Outcome.FAILURE,
        code=code,
        actor=facts.account_mail,
        subject=facts.account_mail or facts.uuid,
        org=facts.org_code,
        rp=rp,
        details=facts.audit_details(),
    )
    extra: dict[str, str] = {}
    message = None
    if code in _OFFER_REGISTRATION:
        extra["register"] = url_for("registration.start", tx=tx)
    elif code is BrokerCode.AUP_NOT_ACCEPTED and svc.aup.writable:
        # A card cannot record acceptance: the broker can, after a password check.
        extra["aup"] = url_for("aup.page", tx=tx)
        message = aup_message(AupRoute.PASSWORD)
    elif code is BrokerCode.AUP_NOT_ACCEPTED:
        extra["aup"] = svc.config.signin.aup_url
    response = json_refusal(code, extra=extra, message=message)
    if response.status_code == 503:
        response.headers["Retry-After"] = "30"
    return response


def _signed_in(card: CardServices, decision: CardSigninDecision, bound: _Binding) -> Response:
    svc = current_broker()
    started: list[NewSession] = []

    def start_session() -> SessionRecord:
        used = decision.card.certificate
        with svc.store.transaction():  # a renewed card's certificate, then the session
            registration = decision.registration
            if not svc.repos.registrations.hold(registration.id, card_uuid=decision.card.uuid):
                # Removed by an administrator while the directory was being read.
                raise CardRefusal(
                    BrokerCode.CARD_NOT_REGISTERED,
                    facts=decision.facts,
                    detail="the registration was removed during the sign-in",
                )
            _record_certificate(card, decision, bound)
            if card.signin is not None:  # the sign-in that decided: never None here
                card.signin.record_entry_id(decision)
            new = complete_signin(
                SigninDecision.by_card(
                    decision.account,
                    card_uuid=decision.card.uuid,
                    certificate=CertificateRef(used.issuer_dn, used.serial_hex),
                    org_code=decision.facts.org_code,
                    card_session=card.settings.session_lock,
                    audit_details=decision.facts.audit_details(),
                ),
                rp=bound.rp,
            )
        started.append(new)
        return new.record

    if bound.rp_tx is None or bound.record is None:
        # A local transaction is kept (until it expires) for this browser's next card
        # sign-in.
        start_session()
        redirect = binding.pop_next() or url_for("login.page")
    else:
        # An RP's goes on to its code in this request (`continue_signin`), with the
        # account and Care Identity the card check has just read; the browser's next
        # stop is the address the answer names.
        answer = authorize_flow.continue_signin(
            svc.oidc,
            bound.rp_tx,
            bound.record,
            account=decision.account,
            identity=decision.identity,
            start_session=start_session,
        )
        # Without a Location (the RP's registration no longer allows the request and
        # its redirect URI cannot be trusted), resume shows the same error page.
        redirect = answer.headers.get("Location") or url_for("oidc.resume", tx=bound.rp_tx)
    return jsonify({"redirect": redirect, "cardSession": started[-1].card_session})


def _record_certificate(card: CardServices, decision: CardSigninDecision, bound: _Binding) -> None:
    svc = current_broker()
    if card.signin is None or not card.signin.record_certificate(decision):
        return
    registration = decision.registration
    svc.audit(
        EVENT_CERTIFICATE_RENEWED,
        outcome=Outcome.SUCCESS,
        actor=decision.account.mail,
        subject=registration.account_mail,
        org=decision.facts.org_code,
        rp=bound.rp,
        details={
            "card_uuid": registration.card_uuid,
            "previous_serial": registration.cert_serial,
            "cert_issuer": decision.card.certificate.issuer_dn,
            "cert_serial": decision.card.certificate.serial_hex,
        },
    )


@blueprint.post("/card/removed")
@csrf_exempt
def removed() -> Response:
    """The agent's card-removed report: 204, whatever it names.

    A report that ends a session is never throttled: workstations often share a NAT
    address, and junk from one of them must not keep another's card removal from ending
    its session (threat model T18). Only reports that end nothing count against their
    address's limit, and past it they are answered 429 with Retry-After (finding that a
    report names a session is one indexed lookup of its hash).
    """
    card = current_broker().card
    try:
        body = read_json_body(max_bytes=MAX_REMOVED_BODY_BYTES)
    except RefusedBodyError as exc:
        # Counted before it is audited: a flood of these fills no audit log.
        return _removal_throttled(card) or refuse_body(exc, "card.removed")
    reference = body.get("cardSession") if body is not None else None
    # The sign-in page's own report of a session the agent did not lock (card-signin.js).
    not_armed = body is not None and body.get("lockNotArmed") is True
    ended = (
        card.lock.card_removed(reference, lock_not_armed=not_armed)
        if card.settings.session_lock
        else None
    )
    if ended is not None:
        log.info("card removed: session ended (%s)", ended.reason)
        return Response(status=204)
    return _removal_throttled(card) or Response(status=204)


def _removal_throttled(card: CardServices) -> Response | None:
    """Count a report that ended nothing against its address; 429 once over the limit."""
    address = request.remote_addr or "unknown"
    wait = card.removal_limiter.allow(address)
    if wait is None:
        return None
    log.warning("card/removed reports from %s throttled", address)
    response = json_refusal(ErrorCode.CARD_REMOVAL_THROTTLED)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


@blueprint.get("/card/agent-help")
def agent_help() -> Response:
    """How to install and start the smartcard agent (the default install link)."""
    card = current_broker().card
    page = render_template(
        "card_agent_help.html",
        agent_url=card.settings.agent_url,
        install_url=install_url(card),
        origin=card.origin,
    )
    return Response(page, mimetype="text/html")
