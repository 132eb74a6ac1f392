"""The `oidc` blueprint: thin views over the provider (discovery, JWKS, the endpoints)."""

from __future__ import annotations

import functools
import json
import logging
import urllib.parse
from collections.abc import Callable

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import Blueprint, current_app, render_template, request, url_for
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException

from careid_broker.codes import BrokerCode, message_for
from careid_broker.errors import BrokerError
from careid_broker.logging_setup import current_request_id
from careid_broker.oidc.discovery import provider_metadata
from careid_broker.oidc.logout import hinted_sub
from careid_broker.oidc.request_checks import refusing_unworded
from careid_broker.origins import origin_of
from careid_broker.store import MAX_TRANSACTION_ID_LENGTH, EndReason, Outcome, StoreError
from careid_broker.web import oidc_authorize as authorize_flow
from careid_broker.web.context import current_broker
from careid_broker.web.csrf import csrf_exempt
from careid_broker.web.errors import UNAVAILABLE_RETRY_AFTER
from careid_broker.web.security_headers import allow_form_action
from careid_broker.web.signin_cookie import cookie_name, current_signin, end_signin

log = logging.getLogger(__name__)

#: The longest address a POST is carried on to by GET: gunicorn's request line is at most
#: 8190 bytes (`server.py`), method and protocol included.
MAX_CARRIED_URL = 8000

blueprint = Blueprint("oidc", __name__)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@blueprint.before_request
def _start_worker() -> None:
    # Started here rather than in create_app: under gunicorn each worker process must
    # start its own thread after the fork.
    current_broker().oidc.ensure_worker()


def _public_json(document: object, *, max_age: int) -> Response:
    # Public documents that browser-based RPs fetch cross-origin.
    response = Response(json.dumps(document), mimetype="application/json")
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@blueprint.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """OpenID Provider metadata."""
    oidc = current_broker().oidc
    metadata = provider_metadata(oidc.issuer, auth_methods_allowed=oidc.config.auth_methods)
    return _public_json(metadata, max_age=3600)


@blueprint.get("/jwks")
def jwks() -> Response:
    """The published signing keys (next, current and previous of each algorithm)."""
    # Short caching: a rotation publishes the next key a whole rotation ahead anyway.
    return _public_json(current_broker().oidc.signer.jwks(), max_age=300)


@blueprint.route("/authorize", methods=["GET", "POST"])
@csrf_exempt
def authorize() -> Response:
    """The authorization endpoint (GET, or POST from an RP's auto-submitted form).

    An RP's form POSTed from its own site arrives without the browser's SameSite=Lax
    cookies: answered as it came, single sign-on would be missed and the browser's
    cookie (its CSRF token, its other tabs' sign-ins) replaced. So a POST that carries
    none of them goes on by GET, with which the browser sends them.
    """
    if request.method == "POST" and not _carries_our_cookies():
        again = _again_by_get("oidc.authorize")
        if again is not None:
            return again
    return authorize_flow.authorize(current_broker().oidc, current_signin())


def _carries_our_cookies() -> bool:
    browser = current_app.config["SESSION_COOKIE_NAME"]
    return browser in request.cookies or cookie_name() in request.cookies


@blueprint.get("/authorize/resume")
def resume() -> Response:
    """Where the login page returns after a sign-in for a login transaction."""
    tx = request.args.get("tx") or None
    if tx is not None and len(tx) > MAX_TRANSACTION_ID_LENGTH:
        tx = None
    return authorize_flow.resume(current_broker().oidc, tx, current_signin())


@blueprint.route("/authorize/role", methods=["GET", "POST"])
def choose_role() -> Response:
    """Choose one of your roles (the `selectedrole` scope), then go on to the service."""
    provider = current_broker().oidc
    tx = request.args.get("tx") or None
    if tx is not None and len(tx) > MAX_TRANSACTION_ID_LENGTH:
        tx = None
    signin = current_signin()
    failed = False
    if request.method == "POST":
        chosen = request.form.get("person_roleid", "")
        done = authorize_flow.choose_role(provider, tx, signin, chosen)
        if done is not None:
            return done
        failed = True
        provider.audit(
            "oidc.role_selected",
            outcome=Outcome.FAILURE,
            code=BrokerCode.OIDC_ROLE_NOT_CHOSEN,
            actor=signin.account_mail if signin else None,
            subject=signin.account_mail if signin else None,
            details={"chosen": chosen[:32]},
        )
    choice = authorize_flow.role_choice(provider, tx, signin)
    if isinstance(choice, Response):
        return choice
    # The form's answer ends in a redirect to the RP, which form-action must allow.
    allow_form_action(origin_of(choice.redirect_uri))
    page = render_template(
        "oidc_choose_role.html",
        choice=choice,
        failed=failed,
        code=BrokerCode.OIDC_ROLE_NOT_CHOSEN.value,
        message=message_for(BrokerCode.OIDC_ROLE_NOT_CHOSEN),
    )
    return Response(page, status=400 if failed else 200, mimetype="text/html")


def _grant_type_label() -> str:
    grant_type = request.form.get("grant_type", "")
    return grant_type if grant_type in ("authorization_code", "refresh_token") else "other"


View = Callable[[], Response]


def _answers_json(audit: Callable[[str], None]) -> Callable[[View], View]:
    """For an endpoint RPs call (token, revocation, userinfo): the broker's own failures,
    expected (the store or the directory down) or not, are answered as OAuth JSON,
    each `audit`ed with its code, never as the error page."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def answered() -> Response:
            try:
                return view()
            except HTTPException:
                raise
            except BrokerError as exc:
                failure = exc
            except Exception:
                log.exception("unexpected error at %s", request.path)
                failure = BrokerError(BrokerCode.BROKER_INTERNAL)
            try:
                audit(failure.code.value)
            except StoreError as exc:
                # A failure of the store itself cannot be audited into it: logged.
                log.warning("refusal not audited: %s", exc.code.value)
            return _broker_failure(failure)

        return answered

    return decorate


def _token_failed(code: str) -> None:
    current_broker().oidc.metrics.tokens.inc(grant_type=_grant_type_label(), result=code)
    _audit_refused_token_request("oidc.token", code)


@blueprint.post("/token")
@csrf_exempt
@_answers_json(_token_failed)
def token() -> Response:
    """The token endpoint: code exchange and refresh."""
    provider = current_broker().oidc
    response: Response = provider.server.create_token_response()
    result = "success"
    if response.status_code != 200:
        result = _oauth_error_of(response)
    provider.metrics.tokens.inc(grant_type=_grant_type_label(), result=result)
    if response.status_code != 200:
        _audit_refused_token_request("oidc.token", result)
    return response


def _oauth_error_of(response: Response, *, none: str = "error") -> str:
    """The `error` of an OAuth JSON error response (`none` when it names none)."""
    try:
        return str(json.loads(response.get_data(as_text=True)).get("error", none))
    except (ValueError, AttributeError):
        return none


def _broker_failure(exc: BrokerError) -> Response:
    """A broker-level failure as RFC 6749 §5.2 JSON.

    An RP's OAuth library parses JSON with an RFC 6749 `error`, whatever its Accept
    header said. The broker's own stable code, which the service desk and the audit
    log know it by, goes with it as `careid_error`, with the request id.
    """
    # `detail` is for operators and never holds a secret (BrokerError's contract).
    log.warning(
        "refused: %s", exc.code.value, extra={"error_code": exc.code.value, "detail": exc.detail}
    )
    unavailable = exc.status == 503
    body = {
        "error": "temporarily_unavailable" if unavailable else "server_error",
        "error_description": exc.message,
        "careid_error": exc.code.value,
        "request_id": current_request_id(),
    }
    response = Response(json.dumps(body), status=503 if unavailable else 500)
    response.mimetype = "application/json"
    response.headers.update(_NO_STORE)
    if unavailable:
        response.headers["Retry-After"] = str(int(UNAVAILABLE_RETRY_AFTER.total_seconds()))
    return response


def _claimed_client_id() -> str | None:
    """The client id a token request claims (Basic credentials or the form), unverified."""
    authorization = request.authorization
    claimed = authorization.username if authorization is not None else None
    claimed = claimed or request.form.get("client_id")
    return claimed[:255] if claimed else None


def _audit_refused_token_request(event: str, error: str) -> None:
    # Every refusal leaves a row: a run of invalid_client or invalid_grant is someone
    # guessing secrets or codes. The claimed client id is recorded as claimed only.
    current_broker().audit(
        event,
        outcome=Outcome.FAILURE,
        code=BrokerCode.OIDC_TOKEN_REFUSED,
        details={
            "reason": error,
            "grant_type": _grant_type_label(),
            "client_id_claimed": _claimed_client_id(),
        },
    )


def _audit_refused_userinfo(reason: str) -> None:
    current_broker().audit(
        "oidc.userinfo",
        outcome=Outcome.FAILURE,
        code=BrokerCode.OIDC_TOKEN_REFUSED,
        details={"reason": reason},
    )


@blueprint.route("/userinfo", methods=["GET", "POST"])
@csrf_exempt
@_answers_json(_audit_refused_userinfo)
def userinfo() -> Response:
    """OIDC userinfo (bearer token in the header, or in a POST form body)."""
    response: Response = current_broker().oidc.server.create_endpoint_response("userinfo")
    response.headers.update(_NO_STORE)
    if response.status_code != 200:
        # No error code is the RFC 6750 §3.1 answer to a request without a bearer token.
        _audit_refused_userinfo(_oauth_error_of(response, none="no_bearer_token"))
    return response


def _revocation_failed(code: str) -> None:
    _audit_refused_token_request("oidc.revocation", code)


@blueprint.post("/revoke")
@csrf_exempt
@_answers_json(_revocation_failed)
def revoke() -> Response:
    """RFC 7009 token revocation."""
    response: Response = current_broker().oidc.server.create_endpoint_response("revocation")
    response.headers.update(_NO_STORE)
    if response.status_code != 200:
        _audit_refused_token_request("oidc.revocation", _oauth_error_of(response))
    return response


def _logout_page(template: str, *, status: int = 200, **context: object) -> Response:
    page = render_template(template, **context)
    return Response(page, status=status, mimetype="text/html", headers=_NO_STORE)


@blueprint.route("/logout", methods=["GET", "POST"])
@csrf_exempt
def logout() -> Response:
    """RP-initiated logout (the `end_session_endpoint`)."""
    if request.method == "POST" and cookie_name() not in request.cookies:
        # RP-Initiated Logout §2 lets an RP's page POST here, but the sign-in cookie is
        # SameSite=Lax: a browser keeps it off another site's POST. Answered without
        # it, the POST would end nothing yet send the RP back told the person had
        # signed out.
        again = _again_by_get("oidc.logout")
        if again is None:
            # Too long to carry on: refused, never answered as a sign-out it was not.
            return _logout_refused(
                InvalidRequestError(description="The sign-out request is too long.")
            )
        return again
    server = current_broker().oidc.server
    try:
        with refusing_unworded(_unworded_logout):
            validated = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        return _logout_refused(error)
    if validated.needs_confirmation:
        signin = current_signin()
        if signin is None:
            return _logout_page("oidc_logout_done.html", client=validated.client)
        return _logout_page("oidc_logout_confirm.html", signin=signin, client=validated.client)
    _end_browser_session(hinted_sub(validated))
    response: Response | None = server.create_endpoint_response("end_session", validated)
    if response is not None:
        response.headers.update(_NO_STORE)
        return response
    return _logout_page("oidc_logout_done.html", client=validated.client)


def _unworded_logout() -> InvalidRequestError:
    # authlib's refusal would have repeated the id_token_hint header's alg or kid.
    return InvalidRequestError(
        description="The sign-out request is not valid: the id_token_hint (or another"
        " parameter) holds characters it may not."
    )


def _again_by_get(endpoint: str) -> Response | None:
    """303 to the same request by GET, every parameter carried, repeats and order kept,
    so it is checked and answered exactly as this POST would have been; None when the
    parameters would not fit in a request line (the POST is answered as it came)."""
    query = urllib.parse.urlencode(list(request.values.items(multi=True)))
    target = url_for(endpoint) + (f"?{query}" if query else "")
    if len(target) > MAX_CARRIED_URL:
        return None
    return Response(status=303, headers={"Location": target, **_NO_STORE})


def _logout_refused(error: OAuth2Error) -> Response:
    """A logout request that does not check out: nothing ends by itself, but the page
    offers the same way out as a valid request does (a bad hint must never trap anyone
    in a session on a shared computer)."""
    log.info("logout request refused: %s", error.get_error_description())
    signin = current_signin()
    current_broker().audit(
        "oidc.logout",
        outcome=Outcome.FAILURE,
        code=BrokerCode.OIDC_LOGOUT_INVALID,
        actor=signin.account_mail if signin else None,
        subject=signin.account_mail if signin else None,
        details={"oauth_error": error.error, "signed_in": signin is not None},
    )
    return _logout_page(
        "oidc_logout_refused.html",
        status=400,
        signin=signin,
        code=BrokerCode.OIDC_LOGOUT_INVALID.value,
        message=message_for(BrokerCode.OIDC_LOGOUT_INVALID),
        oauth_error=error.error,
        oauth_description=error.get_error_description(),
    )


def _end_browser_session(hinted: str | None) -> None:
    """End the current browser's sign-in if it is the hinted user's (or any, unhinted).

    An ID token for someone else (an old hint after another person signed in on this
    browser) must not sign the current person out.
    """
    current = current_signin()
    if current is None:
        return
    if hinted is not None and hinted != current.sub:
        return
    end_signin(EndReason.LOGOUT)


@blueprint.post("/logout/confirm")
def logout_confirm() -> Response:
    """The user's own "Sign out" after a logout request without an ID token hint."""
    end_signin(EndReason.LOGOUT)
    return _logout_page("oidc_logout_done.html", client=None)
