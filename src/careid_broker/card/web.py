"""The card sign-in endpoints (blueprint `card`), thin over `CardSignin`.

- `POST /card/challenge` `{"tx": T|null}` → `{"challenge": C, "expiresAt": RFC3339}`
- `POST /card/authenticate` `{"tx": T|null, "challenge": C, "token": {careid-auth:1}}`
  → `{"redirect": URL, "cardSession": S|null}` or 4xx/5xx `{"error", "message", …}`
- `POST /card/removed` `{"cardSession": S}` (the agent; no cookie, no CSRF) → 204
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
from datetime import UTC, datetime

from flask import Blueprint, jsonify, render_template, request, url_for
from flask.wrappers import Response

from careid_broker.assurance import ACR_CARD, AMR_CARD
from careid_broker.auditing import audit
from careid_broker.card import binding
from careid_broker.card.pages import install_url, json_refusal, read_json_body, same_origin
from careid_broker.card.service import AttemptFacts, CardRefusal, CardSigninDecision
from careid_broker.card.wiring import CardServices, card_services
from careid_broker.errors import BrokerError
from careid_broker.services import services
from careid_broker.store import Outcome, TransactionStatus
from careid_broker.web.csrf import csrf_exempt
from careid_broker.web.signin_session import begin_signin_session
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

blueprint = Blueprint("card", __name__)

EVENT_CARD = "signin.card"
MAX_TX_LENGTH = 128
# Codes after which the page offers registration (with a link in the answer).
_OFFER_REGISTRATION = frozenset(
    {ErrorCode.CARD_NOT_REGISTERED, ErrorCode.CARD_CERTIFICATE_NOT_REGISTERED}
)


@dataclass(frozen=True, kw_only=True)
class _Binding:
    """The transaction a card request is for: an RP's, or this browser's own."""

    transaction_id: str
    rp_tx: str | None
    rp: str | None


def _binding(tx: object, *, create_local: bool) -> _Binding:
    """The transaction for this request's `tx`, checked against this browser's session."""
    svc = services()
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
        or len(tx) > MAX_TX_LENGTH
        or not binding.knows_login_transaction(tx)
    ):
        raise BrokerError(
            ErrorCode.CHALLENGE_WRONG_TRANSACTION,
            detail="the login transaction was not opened in this browser",
        )
    record = svc.repos.transactions.get(tx)
    if record is None or record.status is not TransactionStatus.PENDING:
        raise BrokerError(ErrorCode.OIDC_SIGNIN_EXPIRED, detail="login transaction not pending")
    return _Binding(transaction_id=tx, rp_tx=tx, rp=record.request.client_id)


def _precheck(card: CardServices) -> Response | None:
    if not same_origin(card.origin):
        audit(
            EVENT_CARD,
            outcome=Outcome.FAILURE,
            code=ErrorCode.REQUEST_NOT_SAME_ORIGIN,
            details={"endpoint": request.endpoint},
        )
        return json_refusal(ErrorCode.REQUEST_NOT_SAME_ORIGIN)
    if not card.available:
        return json_refusal(ErrorCode.CARD_SIGNIN_UNAVAILABLE)
    return None


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@blueprint.post("/card/challenge")
def challenge() -> Response:
    """A fresh single-use challenge for this browser's login transaction."""
    card = card_services()
    refused = _precheck(card)
    if refused is not None:
        return refused
    body = read_json_body()
    if body is None:
        return json_refusal(ErrorCode.REQUEST_INVALID)
    try:
        bound = _binding(body.get("tx"), create_local=True)
        issued = services().repos.challenges.issue(bound.transaction_id)
    except BrokerError as exc:
        return json_refusal(exc.code)
    if issued is None:
        return json_refusal(ErrorCode.OIDC_SIGNIN_EXPIRED)
    return jsonify({"challenge": issued.challenge, "expiresAt": rfc3339(issued.expires_at)})


@blueprint.post("/card/authenticate")
def authenticate() -> Response:
    """Check the agent's token; sign in by card, or say why not."""
    card = card_services()
    refused = _precheck(card)
    if refused is not None:
        return refused
    svc = services()
    body = read_json_body()
    tx = body.get("tx") if body is not None else None
    rp: str | None = None
    try:
        if body is None:
            raise CardRefusal(ErrorCode.TOKEN_MALFORMED, facts=AttemptFacts(), detail="no JSON")
        bound = _binding(tx, create_local=False)
        rp = bound.rp
        signin = card.signin(svc)
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
    return _signed_in(card, decision, bound)


def _refused(refusal: CardRefusal, *, rp: str | None, tx: str | None) -> Response:
    svc = services()
    code = refusal.code
    facts = refusal.facts
    svc.metrics.signins.inc(method="card", result=code.value)
    if code is ErrorCode.DIRECTORY_UNAVAILABLE:
        svc.metrics.directory_errors.inc(operation="card_signin")
    log.info(
        "card sign-in refused: %s",
        code.value,
        extra={"error_code": code.value, "detail": refusal.detail},
    )
    audit(
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
    if code in _OFFER_REGISTRATION:
        extra["register"] = url_for("registration.start", tx=tx)
    elif code is ErrorCode.AUP_NOT_ACCEPTED:
        extra["aup"] = svc.config.signin.aup_url
    response = json_refusal(code, extra=extra)
    if response.status_code == 503:
        response.headers["Retry-After"] = "30"
    return response


def _signed_in(card: CardServices, decision: CardSigninDecision, bound: _Binding) -> Response:
    svc = services()
    facts = decision.facts
    # One transaction: a sign-in that cannot be audited does not happen (and SQLite
    # takes its write lock once, not twice).
    with svc.store.transaction():
        new = begin_signin_session(
            decision.account,
            method="card",
            acr=ACR_CARD,
            amr=AMR_CARD,
            card_uuid=decision.card.uuid,
            card_session=card.settings.session_lock,
        )
        audit(
            EVENT_CARD,
            outcome=Outcome.SUCCESS,
            actor=decision.account.mail,
            subject=decision.account.mail,
            org=facts.org_code,
            rp=bound.rp,
            details={**facts.audit_details(), "sid": new.record.sid, "acr": new.record.acr},
        )
    svc.metrics.signins.inc(method="card", result="success")
    # A local transaction is kept (until it expires) for this browser's next card
    # sign-in; an RP's is completed by the OpenID Provider when it issues the code.
    redirect = (
        (binding.pop_next() or url_for("login.page"))
        if bound.rp_tx is None
        else url_for("oidc.resume", tx=bound.rp_tx)
    )
    return jsonify({"redirect": redirect, "cardSession": new.card_session})


@blueprint.post("/card/removed")
@csrf_exempt
def removed() -> Response:
    """The agent's card-removed report: always 204, whatever it names (rate-limited)."""
    card = card_services()
    address = request.remote_addr or "unknown"
    wait = card.removal_limiter.allow(address)
    if wait is not None:
        log.warning("card/removed reports from %s throttled", address)
        response = json_refusal(ErrorCode.CARD_REMOVAL_THROTTLED)
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    body = request.get_json(silent=True)
    reference = body.get("cardSession") if isinstance(body, dict) else None
    if card.settings.session_lock and reference is not None:
        svc = services()
        ended = card.lock.card_removed(reference, on_ended=lambda e: services().session_ended(e))
        if ended is not None:
            log.info("card removed: session ended")
            audit(
                "session.end",
                outcome=Outcome.SUCCESS,
                actor=ended.account_mail,
                subject=ended.account_mail,
                details={
                    "sid": ended.sid,
                    "reason": ended.reason,
                    "relying_parties": list(ended.relying_parties),
                    "tokens_revoked": ended.tokens_revoked,
                },
            )
            svc.metrics.registry.counter(
                "careid_card_removals_total", "Sessions ended because their card was removed."
            ).inc()
    return Response(status=204)


@blueprint.get("/card/agent-help")
def agent_help() -> Response:
    """How to install and start the smartcard agent (the default install link)."""
    card = card_services()
    page = render_template(
        "card_agent_help.html",
        agent_url=card.settings.agent_url,
        install_url=install_url(card),
        origin=card.origin,
    )
    return Response(page, mimetype="text/html")
