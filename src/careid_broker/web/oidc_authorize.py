"""The authorization endpoint's decisions: validate, reuse a sign-in or hand off to login.

`GET|POST /authorize` validates the request with authlib's code grant (client, exact
redirect URI, scope, PKCE, nonce) and then decides:

- a current sign-in satisfies it (no prompt=login or select_account, within max_age,
  acr_values met, the id_token_hint's user) → a code at once;
- prompt=none and none does → `login_required` to the RP;
- otherwise the request is stored as a login transaction and the browser goes to the
  login page. A password or card sign-in there goes on with the transaction in its own
  request (`continue_signin`), so its answer sends the browser to the RP with the code;
  the pages that sign in some other way (accepting the AUP, registering, choosing a
  role) come back to `GET /authorize/resume?tx=…` instead. The transaction keeps the
  id_token_hint's person: if someone else signs in, the RP gets `login_required`, not
  a code for them (OIDC Core §3.1.2.1). Each of these steps checks the sign-in against
  the request again (`_needs_signin`): prompt=login against when the request was made,
  max_age against the time the code is issued.

With the `selectedrole` scope, a person holding several roles chooses one first
(`GET|POST /authorize/role?tx=…`); the choice holds for the rest of the sign-in
session, and is offered first next time. One role is chosen without asking.

Errors go back to the RP only when its redirect URI was checked; otherwise an error page.
A parameter it knows sent twice is refused (RFC 6749 §3.1), never read as one of its
values; one it does not know is ignored.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oidc.core.errors import (
    LoginRequiredError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from flask import redirect, render_template, url_for
from flask.wrappers import Response

from careid_broker import assurance
from careid_broker.codes import BrokerCode, message_for
from careid_broker.directory.models import CareIdentity, MailAccount
from careid_broker.errors import BrokerError
from careid_broker.oidc.claims import scope_values, selected_role_claims, user_claims
from careid_broker.oidc.errors import SigninExpiredError
from careid_broker.oidc.models import SignedInUser
from careid_broker.oidc.provider import OidcProvider
from careid_broker.oidc.request_checks import (
    AUTHORIZATION_PARAMETERS,
    refusing_unworded,
    repeated_parameter,
)
from careid_broker.signin.standing import session_standing
from careid_broker.store import (
    FIELD_LIMITS,
    MAX_HINT_LENGTH,
    AuthorizationRequest,
    LoginTransactionRecord,
    SessionRecord,
    TransactionStatus,
    TransactionTooLargeError,
)
from careid_broker.web import browser_binding

log = logging.getLogger(__name__)

# UI hints kept with a login transaction for the login page; they change nothing else.
_UI_HINTS = ("login_hint", "ui_locales", "display")
# OIDC Core §3.1.2.1 prompt values, as discovery lists them. select_account is a fresh
# sign-in: at a shared workstation the person at the keyboard chooses the account by
# signing in, never by picking whoever signed in last. consent asks for nothing more:
# the trust registering the relying party is the consent (as CIS2's terms of use are),
# so it is already obtained and an RP that always asks for it is not refused.
_PROMPTS = frozenset({"none", "login", "consent", "select_account"})
#: The largest max_age accepted (about 68 years): the store keeps it in a 32-bit integer
#: column (PostgreSQL's int4).
MAX_MAX_AGE = 2**31 - 1
# C0 controls and DEL. RFC 6749 Appendix A allows none in state, scope or the PKCE
# values, no other parameter kept has a use for one, and PostgreSQL stores no NUL.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class _Checks:
    """The OIDC parameters that decide whether a sign-in can be reused."""

    prompts: frozenset[str]
    max_age: int | None
    acr_values: str | None
    hinted_sub: str | None


class StoredAuthorizationRequest(OAuth2Request):  # type: ignore[misc]
    """A login transaction's request, replayed through authlib's grant after sign-in."""

    def __init__(self, issuer: str, params: Mapping[str, str]) -> None:
        super().__init__("GET", f"{issuer}/authorize")
        self._params = dict(params)
        self.payload = BasicOAuth2Payload(self._params)

    @property
    def args(self) -> dict[str, str]:
        return self._params

    @property
    def form(self) -> dict[str, str]:
        return {}


def _stored_params(request: AuthorizationRequest) -> dict[str, str]:
    values: dict[str, Any] = {
        "response_type": "code",
        "client_id": request.client_id,
        "redirect_uri": request.redirect_uri,
        "scope": request.scope,
        "state": request.state,
        "nonce": request.nonce,
        "code_challenge": request.code_challenge,
        "code_challenge_method": request.code_challenge_method,
        "prompt": request.prompt,
        "max_age": None if request.max_age is None else str(request.max_age),
        "acr_values": request.acr_values,
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def with_iss(provider: OidcProvider, response: Response) -> Response:
    """RFC 9207 §2: `iss` in every authorization response that goes to the RP."""
    location = response.headers.get("Location")
    if location and "iss" not in parse_qs(urlsplit(location).query):
        response.headers["Location"] = add_params_to_uri(location, {"iss": provider.issuer})
    return response


class AcrNotSupportedError(InvalidRequestError):  # type: ignore[misc]
    """The request asks for an assurance the broker cannot tell it meets: acr_values
    naming no value it knows, or an essential `acr` in the claims parameter."""

    code = BrokerCode.OIDC_ACR_UNSUPPORTED


def _error(provider: OidcProvider, request: OAuth2Request, error: OAuth2Error) -> Response:
    details: dict[str, Any] = {"error": error.error, "redirected": bool(error.redirect_uri)}
    code = BrokerCode.OIDC_REQUEST_INVALID
    if isinstance(error, AcrNotSupportedError):
        code = AcrNotSupportedError.code
        details["detail"] = error.get_error_description()
    provider.audit(
        "oidc.authorize",
        outcome="failure",
        code=code,
        rp=request.payload.client_id if isinstance(request.payload.client_id, str) else None,
        details=details,
    )
    if error.redirect_uri:
        response: Response = provider.server.handle_error_response(request, error)
        return with_iss(provider, response)
    # The redirect URI is missing or not registered: sending the browser there would
    # make the broker an open redirector (RFC 6749 §4.1.2.1), so the user sees a page.
    log.info(
        "authorization request refused without redirect: %s (%s)",
        error.error,
        error.get_error_description(),
    )
    page = render_template(
        "oidc_error.html",
        code=BrokerCode.OIDC_REQUEST_INVALID.value,
        message=message_for(BrokerCode.OIDC_REQUEST_INVALID),
        oauth_error=error.error,
        oauth_description=error.get_error_description(),
    )
    return Response(page, status=400, mimetype="text/html")


def _checks(provider: OidcProvider, request: OAuth2Request, redirect_uri: str) -> _Checks:
    # RFC 6749 §3.1. authlib refuses a repeated response_type, client_id, redirect_uri,
    # scope or state itself, before the redirect URI is known good; any other it knows
    # would be read as its first value (prompt=none&prompt=login as none). Parameters
    # it does not know are ignored, however often sent (§3.1; RFC 8707's `resource`
    # may come more than once).
    repeated = repeated_parameter(request.payload.datalist.items(), AUTHORIZATION_PARAMETERS)
    if repeated is not None:
        raise InvalidRequestError(repeated, redirect_uri=redirect_uri)
    data = request.payload.data
    # Discovery says request objects are not supported, so one must be refused, not
    # ignored: its acr_values or max_age would silently not apply (OIDC Core §6.1-6.2).
    if data.get("request") is not None:
        raise RequestNotSupportedError(redirect_uri=redirect_uri)
    if data.get("request_uri") is not None:
        raise RequestURINotSupportedError(redirect_uri=redirect_uri)
    # Likewise another response_mode (discovery advertises query only): the RP would
    # wait for a form post or a fragment that never comes. The refusal itself can only
    # go back in the query.
    if data.get("response_mode") not in (None, "", "query"):
        raise InvalidRequestError(
            "response_mode must be query, the only mode this provider supports.",
            redirect_uri=redirect_uri,
        )
    for name, limit in FIELD_LIMITS.items():
        value = data.get(name)
        if isinstance(value, str) and len(value) > limit:
            # Kept whole in the login transaction: too long a value is refused, not cut.
            raise InvalidRequestError(
                f"{name} is longer than {limit} characters.", redirect_uri=redirect_uri
            )
    for name in (*FIELD_LIMITS, *_UI_HINTS):
        value = data.get(name)
        if isinstance(value, str) and _CONTROL_CHARACTER.search(value):
            raise InvalidRequestError(
                f"{name} must not contain control characters.", redirect_uri=redirect_uri
            )
    _refuse_an_essential_acr_claim(data.get("claims"), redirect_uri)
    acr_values = _acr_values(provider, request, data.get("acr_values") or None, redirect_uri)
    prompts = frozenset((data.get("prompt") or "").split()) & _PROMPTS
    if "none" in prompts and len(prompts) > 1:
        raise InvalidRequestError("prompt=none cannot be combined.", redirect_uri=redirect_uri)
    max_age = _max_age(data.get("max_age"), redirect_uri)
    hinted_sub: str | None = None
    if data.get("id_token_hint"):
        claims = provider.signer.verify(data["id_token_hint"])
        if claims is None or claims.get("iss") != provider.issuer:
            raise InvalidRequestError(
                "id_token_hint is not an ID token from this provider.", redirect_uri=redirect_uri
            )
        hinted_sub = str(claims.get("sub"))
    return _Checks(
        prompts=prompts,
        max_age=max_age,
        acr_values=acr_values,
        hinted_sub=hinted_sub,
    )


def _supported_acr_values() -> str:
    return ", ".join(value for value in assurance.SUPPORTED_ACR_VALUES)


def _acr_values(
    provider: OidcProvider, request: OAuth2Request, requested: str | None, redirect_uri: str
) -> str | None:
    """The acr_values the request is judged by: its own, under the client's
    `default_acr_values` (`assurance.with_floor`); None when nothing is asked.

    Values that are all unknown (`aal3_any`, `AAL3`) are refused, not read as nothing
    asked: the relying party wanted some assurance, and the weakest sign-in would
    otherwise meet it (OIDC Core §3.1.2.1 lets an OP refuse what it cannot satisfy).
    """
    if requested is not None and assurance.requested_values(requested):
        if not assurance.known_values(requested):
            raise AcrNotSupportedError(
                "acr_values names no value this provider supports"
                f" (it supports: {_supported_acr_values()}; names are case-sensitive).",
                redirect_uri=redirect_uri,
            )
    client = provider.clients.get(request.payload.client_id)
    floor = client.default_acr_values if client is not None else ()
    return " ".join(assurance.with_floor(requested, floor)) or None


def _refuse_an_essential_acr_claim(claims: str | None, redirect_uri: str) -> None:
    """Refuse a claims parameter (OIDC Core §5.5) that asks for an essential `acr`.

    Discovery says claims_parameter_supported is false, so other requests in it are
    ignored; but an essential acr cannot be: §5.5.1.1 makes one not met a failed
    authentication, and ignoring it would hand the RP whatever sign-in there was. A
    value that is not a JSON object might ask for one, so it is refused as not valid.
    """
    if claims is None or claims == "":
        return
    try:
        parsed = json.loads(claims)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequestError(
            "claims must be a JSON object (OpenID Connect Core 5.5).", redirect_uri=redirect_uri
        )
    for member in ("id_token", "userinfo"):
        requested = parsed.get(member)
        acr = requested.get("acr") if isinstance(requested, dict) else None
        if isinstance(acr, dict) and acr.get("essential") is True:
            raise AcrNotSupportedError(
                "The claims parameter is not supported, so an essential acr asked in it"
                " cannot be met: ask with acr_values"
                f" (this provider supports: {_supported_acr_values()}).",
                redirect_uri=redirect_uri,
            )


def _max_age(value: str | None, redirect_uri: str) -> int | None:
    """max_age as seconds (None when not asked), within what the store keeps."""
    if value is None or value == "":
        return None
    # ASCII digits only: int() would also take "-0", "+5", " 5" and other scripts' digits.
    if value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= MAX_MAX_AGE:
        return int(value)
    raise InvalidRequestError(
        f"max_age must be a whole number of seconds from 0 to {MAX_MAX_AGE}.",
        redirect_uri=redirect_uri,
    )


def _demands_login(prompts: frozenset[str], max_age: int | None) -> bool:
    """Whether the request wants a sign-in made for it: prompt=login or
    prompt=select_account (`_PROMPTS`), or max_age=0, which OIDC Core §3.1.2.1 makes
    prompt=login's equal."""
    return "login" in prompts or "select_account" in prompts or max_age == 0


def _past_max_age(provider: OidcProvider, signin: SessionRecord, max_age: int | None) -> bool:
    """Whether more than max_age seconds have passed, now, since the session's
    credential was checked (its auth_time, as the relying party will read it).
    max_age=0 is judged as prompt=login is (`_demands_login`), against the request."""
    if not max_age:
        return False
    return (provider.clock() - signin.auth_time).total_seconds() > max_age


def _reusable(provider: OidcProvider, signin: SessionRecord | None, checks: _Checks) -> bool:
    if signin is None or _demands_login(checks.prompts, checks.max_age):
        return False
    if _past_max_age(provider, signin, checks.max_age):
        return False
    if not assurance.satisfies(signin.acr, checks.acr_values):
        return False
    return checks.hinted_sub is None or checks.hinted_sub == signin.sub


def signed_in_user(provider: OidcProvider, signin: SessionRecord) -> SignedInUser:
    """The user behind a session, with claims read from the directory now.

    Raises the directory's refusal (disabled account, AUP no longer current, a card
    session's Care Identity suspended…: `signin.standing`) or
    `DirectoryUnavailableError`: a directory that cannot be read denies.
    """
    account, identity = session_standing(
        provider.directory,
        account_mail=signin.account_mail,
        card_uuid=signin.card_uuid,
        registrations=provider.repos.registrations,
        sub=signin.sub,
        subjects=provider.repos.subjects,
    )
    return user_of(provider, signin, account, identity)


def care_identity_of(provider: OidcProvider, account: MailAccount) -> CareIdentity | None:
    """The Care Identity record the account links to, read now (None without a link)."""
    uuid = account.care_identity_uuid
    return provider.directory.find_care_identity(uuid) if uuid else None


def user_of(
    provider: OidcProvider,
    signin: SessionRecord,
    account: MailAccount,
    identity: CareIdentity | None,
) -> SignedInUser:
    """The user behind a session, with claims from directory entries the caller read."""
    return SignedInUser(
        sub=signin.sub,
        sid=signin.sid,
        account_mail=signin.account_mail,
        acr=signin.acr,
        amr=tuple(signin.amr),
        auth_time=signin.auth_time,
        claims=user_claims(account, identity, provider.config.organisations, acr=signin.acr),
    )


def person_roles(user: SignedInUser) -> list[dict[str, str]]:
    """The person's roles as released in `nhsid_nrbac_roles` (empty without any)."""
    roles = user.claims.get("nhsid_nrbac_roles") or []
    return [dict(role) for role in roles]


def with_selected_role(
    scope: str, signin: SessionRecord, user: SignedInUser
) -> SignedInUser | None:
    """`user` with the `selectedrole` claims, or None when the person must choose first.

    Without the scope, or for a person with no role (CIS2 allows that; the claims are
    then absent), `user` is returned as it is. One role is chosen without asking.
    """
    if "selectedrole" not in scope_values(scope):
        return user
    roles = person_roles(user)
    if not roles:
        return user
    if len(roles) == 1:
        chosen: dict[str, str] | None = roles[0]
    else:
        chosen = next((r for r in roles if r["person_roleid"] == signin.selected_role_id), None)
    if chosen is None:
        return None
    return replace(user, claims={**user.claims, **selected_role_claims(chosen)})


def _issue(
    provider: OidcProvider,
    request: OAuth2Request,
    grant: Any,
    user: SignedInUser,
    *,
    completes: str | None = None,
) -> Response:
    """The code for the RP, and its audit entry, in one write transaction; with
    `completes`, that login transaction is marked done in it too (or nothing is issued)."""
    with provider.store.transaction():
        if completes is not None and provider.repos.transactions.complete(completes) is None:
            raise SigninExpiredError(detail="login transaction completed by another request")
        response: Response = provider.server.create_authorization_response(
            request=request, grant_user=user, grant=grant
        )
        provider.audit(
            "oidc.authorize",
            outcome="success",
            subject=user.account_mail,
            rp=request.payload.client_id,
            details={"acr": user.acr},
        )
    return with_iss(provider, response)


def _silent_error(
    provider: OidcProvider,
    request: OAuth2Request,
    redirect_uri: str,
    error: str,
    description: str,
) -> Response:
    """A prompt=none request that cannot be answered without a page: back to the RP."""
    refusal = OAuth2Error(
        error=error,
        description=description,
        redirect_uri=redirect_uri,
        state=request.payload.state,
    )
    return _error(provider, request, refusal)


def _to_login(tx: str, acr_values: str | None) -> Response:
    card = "required" if assurance.demands_card(acr_values) else None
    return redirect(url_for("login.page", tx=tx, card=card))  # type: ignore[return-value]


def _to_role_choice(tx: str) -> Response:
    return redirect(url_for("oidc.choose_role", tx=tx))  # type: ignore[return-value]


def _via_transaction(
    provider: OidcProvider,
    request: OAuth2Request,
    redirect_uri: str,
    checks: _Checks,
    then: Callable[[str], Response],
) -> Response:
    """`then(tx)` for the request made a login transaction, or the RP told why not."""
    try:
        tx = _store_request(provider, request, redirect_uri, checks)
    except OAuth2Error as error:
        error.state = request.payload.state
        return _error(provider, request, error)
    return then(tx)


def _store_request(
    provider: OidcProvider, request: OAuth2Request, redirect_uri: str, checks: _Checks
) -> str:
    data = request.payload.data
    pending = AuthorizationRequest(
        client_id=request.payload.client_id,
        redirect_uri=redirect_uri,
        scope=request.payload.scope or "",
        state=data.get("state") or None,
        nonce=data.get("nonce") or None,
        code_challenge=data.get("code_challenge") or None,
        code_challenge_method=data.get("code_challenge_method") or None,
        prompt=" ".join(sorted(checks.prompts)) or None,
        max_age=checks.max_age,
        acr_values=checks.acr_values,
        id_token_hint_sub=checks.hinted_sub,
        extras={
            key: data[key]
            for key in _UI_HINTS
            if data.get(key) and len(data[key]) <= MAX_HINT_LENGTH
        },
    )
    try:
        created = provider.repos.transactions.create(pending)
    except TransactionTooLargeError as exc:
        # Each field is within its limit, but the whole does not fit a URL sealed.
        raise InvalidRequestError(
            "The authorization request is too large.", redirect_uri=redirect_uri
        ) from exc
    # Only the browser that made the request may go on with it (`in_this_browser`).
    browser_binding.remember_login_transaction(created.transaction_id)
    return created.transaction_id


def _unworded_request() -> InvalidRequestError:
    # authlib's own refusal would have repeated the value; which one is not known
    # here, nor whether the redirect URI can be trusted: so the page, not the RP.
    return InvalidRequestError(
        "A parameter holds characters it may not (RFC 6749 Appendix A, RFC 3986):"
        " check redirect_uri and response_type."
    )


def authorize(provider: OidcProvider, signin: SessionRecord | None) -> Response:
    """Handle GET or POST /authorize for the current Flask request."""
    server = provider.server
    request = server.create_oauth2_request(None)
    try:
        with refusing_unworded(_unworded_request):
            grant = server.get_authorization_grant(request)
            grant.validate_no_multiple_request_parameter(request)
            redirect_uri = grant.validate_authorization_request()
            checks = _checks(provider, request, redirect_uri)
    except OAuth2Error as error:
        error.state = request.payload.state
        return _error(provider, request, error)

    if _reusable(provider, signin, checks):
        assert signin is not None  # noqa: S101 - _reusable is False without one
        try:
            user = signed_in_user(provider, signin)
        except BrokerError as exc:
            if exc.code is BrokerCode.DIRECTORY_UNAVAILABLE:
                if "none" in checks.prompts:
                    # No page may be shown: tell the RP to try again later (OIDC Core §3.1.2.6).
                    return _silent_error(
                        provider,
                        request,
                        redirect_uri,
                        "temporarily_unavailable",
                        "The directory could not be reached.",
                    )
                raise
            # The account may no longer sign in: the login page names the reason.
            log.info("signed-in session not reusable: %s", exc.code.value)
        else:
            chosen = with_selected_role(request.payload.scope or "", signin, user)
            if chosen is not None:
                return _issue(provider, request, grant, chosen)
            if "none" in checks.prompts:
                # Choosing a role is a page, which prompt=none forbids (OIDC Core §3.1.2.6).
                return _silent_error(
                    provider,
                    request,
                    redirect_uri,
                    "interaction_required",
                    "The person must choose a role.",
                )
            return _via_transaction(provider, request, redirect_uri, checks, _to_role_choice)
    if "none" in checks.prompts:
        refusal = LoginRequiredError(redirect_uri=redirect_uri, state=request.payload.state)
        return _error(provider, request, refusal)

    return _via_transaction(
        provider,
        request,
        redirect_uri,
        checks,
        lambda tx: _to_login(tx, checks.acr_values),
    )


def _pending(provider: OidcProvider, tx: str | None) -> LoginTransactionRecord:
    record = provider.repos.transactions.get(tx) if tx else None
    if record is None or record.status is not TransactionStatus.PENDING:
        raise SigninExpiredError(detail="login transaction unknown, expired or completed")
    assert tx is not None  # noqa: S101 - a record was found by it
    in_this_browser(provider, tx, record)
    return record


def in_this_browser(provider: OidcProvider, tx: str, record: LoginTransactionRecord) -> None:
    """Refuse a login transaction this browser did not start.

    The `/authorize` request that makes a transaction records it in that browser's
    signed session cookie. Anyone else who learns its id (from a shared screen, a log,
    a history) could otherwise sign in to it with their own account and hand the code,
    with the victim's `state` and PKCE challenge, back to the victim's browser: the
    relying party would then sign the victim in as them. Audited, as a possible attack.
    """
    if browser_binding.knows_login_transaction(tx):
        return
    detail = "the login transaction was not started in this browser"
    provider.audit(
        "oidc.authorize",
        outcome="failure",
        code=BrokerCode.OIDC_SIGNIN_EXPIRED,
        rp=record.request.client_id,
        details={"detail": detail},
    )
    raise SigninExpiredError(detail=detail)


def _needs_signin(
    provider: OidcProvider, record: LoginTransactionRecord, signin: SessionRecord
) -> bool:
    """Whether the current sign-in falls short of what the stored request asks, now.

    Every step that goes on with a transaction asks (the role page and its choice,
    resume, the sign-in's own request), so it is asked just before any code is issued.
    prompt=login (and max_age=0) wants a credential checked after the request was made:
    the session's auth_time is when its password or card was checked, not when a later
    page (the AUP, a registration's confirmation) was clicked. Any other max_age is
    measured to now, however fresh the sign-in was: a role page left open must not
    yield a code for a sign-in older than the relying party accepts (OIDC Core
    §3.1.2.1: the OP must then authenticate the person again).
    """
    stored = record.request
    prompts = frozenset((stored.prompt or "").split())
    if _demands_login(prompts, stored.max_age) and signin.auth_time < record.created_at:
        return True
    if _past_max_age(provider, signin, stored.max_age):
        return True
    return not assurance.satisfies(signin.acr, stored.acr_values)


def _someone_else(record: LoginTransactionRecord, signin: SessionRecord) -> bool:
    """Whether the person signed in is not the one the request's id_token_hint names."""
    hinted = record.request.id_token_hint_sub
    return hinted is not None and hinted != signin.sub


def _not_the_hinted_person(
    provider: OidcProvider,
    tx: str,
    request: OAuth2Request,
    stored: AuthorizationRequest,
    signin: SessionRecord,
) -> Response:
    """`login_required` to the RP for someone other than its id_token_hint's person
    signed in (OIDC Core §3.1.2.1): no code, the transaction ended, audited."""
    with provider.store.transaction():
        provider.repos.transactions.expire(tx)
        provider.audit(
            "oidc.authorize",
            outcome="failure",
            code=BrokerCode.OIDC_REQUEST_INVALID,
            actor=signin.account_mail,
            subject=signin.account_mail,
            rp=stored.client_id,
            details={
                "error": "login_required",
                "redirected": True,
                "detail": "signed in as another person than the id_token_hint names",
            },
        )
    refusal = LoginRequiredError(
        description=(
            "The person who signed in is not the one the relying party asked for (id_token_hint)."
        ),
        redirect_uri=stored.redirect_uri,
        state=stored.state,
    )
    response: Response = provider.server.handle_error_response(request, refusal)
    return with_iss(provider, response)


@dataclass(frozen=True, kw_only=True)
class RoleChoice:
    """What the role page shows: the roles (last choice first) and which is checked."""

    transaction_id: str
    client_name: str
    redirect_uri: str
    roles: list[dict[str, str]]
    preselected: str | None


def role_choice(
    provider: OidcProvider, tx: str | None, signin: SessionRecord | None
) -> RoleChoice | Response:
    """The role page's content for a pending transaction, or where to go instead."""
    record = _pending(provider, tx)
    assert tx is not None  # noqa: S101 - a record was found by it
    if signin is None or _needs_signin(provider, record, signin):
        return _to_login(tx, record.request.acr_values)
    user = signed_in_user(provider, signin)
    if with_selected_role(record.request.scope, signin, user) is not None:
        return redirect(url_for("oidc.resume", tx=tx))  # type: ignore[return-value]
    roles = person_roles(user)
    last = provider.repos.sessions.last_role_choice(signin.sub)
    roles.sort(key=lambda role: role["person_roleid"] != last)  # stable: last choice first
    client = provider.clients.get(record.request.client_id)
    return RoleChoice(
        transaction_id=tx,
        client_name=client.name if client else record.request.client_id,
        redirect_uri=record.request.redirect_uri,
        roles=roles,
        preselected=last if any(r["person_roleid"] == last for r in roles) else None,
    )


def choose_role(
    provider: OidcProvider, tx: str | None, signin: SessionRecord | None, person_roleid: str
) -> Response | None:
    """Record the role chosen on the role page; None when it is not one of the person's."""
    record = _pending(provider, tx)
    assert tx is not None  # noqa: S101 - a record was found by it
    if signin is None or _needs_signin(provider, record, signin):
        return _to_login(tx, record.request.acr_values)
    user = signed_in_user(provider, signin)
    roles = {role["person_roleid"]: role for role in person_roles(user)}
    role = roles.get(person_roleid)
    if role is None:
        return None
    with provider.store.transaction():  # the choice and its audit entry, or neither
        if not provider.repos.sessions.select_role(signin.sid, person_roleid):
            raise SigninExpiredError(detail="the sign-in session ended while choosing a role")
        provider.audit(
            "oidc.role_selected",
            outcome="success",
            actor=signin.account_mail,
            subject=signin.account_mail,
            rp=record.request.client_id,
            org=role["org_code"],
            details={
                "person_roleid": person_roleid,
                "role_code": role["role_code"],
                "org_code": role["org_code"],
            },
        )
    return redirect(url_for("oidc.resume", tx=tx))  # type: ignore[return-value]


def resume(provider: OidcProvider, tx: str | None, signin: SessionRecord | None) -> Response:
    """Handle GET /authorize/resume?tx=… after the login page signed the user in."""
    record = _pending(provider, tx)
    assert tx is not None  # noqa: S101 - a record was found by it
    stored = record.request
    if signin is None or _needs_signin(provider, record, signin):
        return _to_login(tx, stored.acr_values)

    request = StoredAuthorizationRequest(provider.issuer, _stored_params(stored))
    server = provider.server
    try:
        # Checked again: the client's registration may have changed meanwhile.
        grant = server.get_authorization_grant(request)
        grant.validate_authorization_request()
    except OAuth2Error as error:
        error.state = stored.state
        return _error(provider, request, error)
    if _someone_else(record, signin):
        return _not_the_hinted_person(provider, tx, request, stored, signin)
    user = with_selected_role(stored.scope, signin, signed_in_user(provider, signin))
    if user is None:
        return _to_role_choice(tx)
    return _issue(provider, request, grant, user, completes=tx)


def continue_signin(
    provider: OidcProvider,
    tx: str,
    record: LoginTransactionRecord,
    *,
    account: MailAccount,
    identity: CareIdentity | None,
    start_session: Callable[[], SessionRecord],
) -> Response:
    """Go on with a login transaction in the request that has just signed the user in.

    What `resume` answers after a redirect, without the redirect (one request and its
    reads fewer per sign-in): the account and Care Identity the sign-in read and
    checked in this request are the claims' source, read now and not again. The new
    session (`start_session`), the completed transaction, the code and their audit
    entries are one write transaction, begun after every directory read, so SQLite's
    write lock is never held across a directory round trip; if the code cannot be
    issued (the transaction was completed meanwhile) the session is not kept either.
    A request the client's registration no longer allows goes back to the RP with its
    error, the sign-in kept, as `resume` would.

    `record` is transaction `tx` as this request read it; its completion is checked
    again when the code is issued.
    """
    stored = record.request
    request = StoredAuthorizationRequest(provider.issuer, _stored_params(stored))
    try:
        grant = provider.server.get_authorization_grant(request)
        grant.validate_authorization_request()
    except OAuth2Error as error:
        start_session()
        error.state = stored.state
        return _error(provider, request, error)
    try:
        with provider.store.transaction():
            signin = start_session()
            if _needs_signin(provider, record, signin):
                return _to_login(tx, stored.acr_values)
            if _someone_else(record, signin):
                # The sign-in stands (the person proved who they are); the RP's request
                # for someone else is answered, without a code.
                return _not_the_hinted_person(provider, tx, request, stored, signin)
            user = with_selected_role(
                stored.scope, signin, user_of(provider, signin, account, identity)
            )
            if user is None:
                return _to_role_choice(tx)
            return _issue(provider, request, grant, user, completes=tx)
    except SigninExpiredError as exc:
        # Rolled back, sign-in included: audited on its own, then the page says so.
        provider.audit(
            "oidc.authorize",
            outcome="failure",
            code=exc.code,
            subject=account.mail,
            rp=stored.client_id,
            details={"detail": exc.detail},
        )
        raise
