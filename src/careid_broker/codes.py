"""The broker's own error codes, and what every code it answers with means over HTTP.

`BrokerCode` holds the codes only the broker emits (its store, directory, sign-in pages,
registration, OpenID Provider, local administrators); the `careid-auth:1` codes it shares
with agents are `careid_protocol.errors.ErrorCode`. For either kind this module is the
one place that says what a person is told (`message_for`), the HTTP status a refusal is
answered with (`status_for`) and the heading of its page (`heading_for`).
"""

from __future__ import annotations

from enum import StrEnum, unique
from typing import Final

from careid_protocol.errors import ErrorCode
from careid_protocol.errors import message_for as protocol_message_for


@unique
class BrokerCode(StrEnum):
    """Every stable error code the broker emits of its own."""

    # The broker's store (database) and its records.
    STORE_UNAVAILABLE = "store_unavailable"
    REGISTRATION_CARD_LINKED = "registration_card_linked"
    REGISTRATION_ACCOUNT_LINKED = "registration_account_linked"
    SIGNING_KEY_UNAVAILABLE = "signing_key_unavailable"

    # The directory and password sign-in (broker side).
    DIRECTORY_UNAVAILABLE = "directory_unavailable"
    DIRECTORY_READ_ONLY = "directory_read_only"
    DIRECTORY_DATA_INVALID = "directory_data_invalid"
    DIRECTORY_CONFIG_INVALID = "directory_config_invalid"
    INVALID_CREDENTIALS = "invalid_credentials"
    ACCOUNT_LOCKED = "account_locked"
    ACCOUNT_DISABLED = "account_disabled"
    ACCOUNT_EXPIRED = "account_expired"
    PASSWORD_EXPIRED = "password_expired"
    AUP_NOT_ACCEPTED = "aup_not_accepted"
    CARE_IDENTITY_NOT_FOUND = "care_identity_not_found"
    CARE_IDENTITY_INACTIVE = "care_identity_inactive"

    # The broker's sign-in pages, its configuration and operations.
    BROKER_CONFIG_INVALID = "broker_config_invalid"
    CSRF_INVALID = "csrf_invalid"
    SIGNIN_FORM_INCOMPLETE = "signin_form_incomplete"
    SIGNIN_THROTTLED = "signin_throttled"
    STEP_SUPERSEDED = "step_superseded"
    CARD_REQUIRED = "card_required"
    CARD_SIGNIN_UNAVAILABLE = "card_signin_unavailable"
    PAGE_NOT_FOUND = "page_not_found"
    REQUEST_INVALID = "request_invalid"
    BROKER_INTERNAL = "broker_internal"
    OPS_ENDPOINT_FORBIDDEN = "ops_endpoint_forbidden"

    # Card sign-in, one-time registration and the session lock (broker and its pages).
    CARD_NOT_REGISTERED = "card_not_registered"
    CARD_CERTIFICATE_NOT_REGISTERED = "card_certificate_not_registered"
    CARD_ACCOUNT_MISSING = "card_account_missing"
    CARD_IDENTITY_MISMATCH = "card_identity_mismatch"
    REGISTRATION_ACCOUNT_CHANGED = "registration_account_changed"
    REQUEST_NOT_SAME_ORIGIN = "request_not_same_origin"
    AGENT_UNREACHABLE = "agent_unreachable"
    BROKER_UNREACHABLE = "broker_unreachable"
    CARD_LOCK_NOT_ARMED = "card_lock_not_armed"
    CARD_LOCK_NOT_ARMED_SIGNED_IN = "card_lock_not_armed_signed_in"
    BROWSER_UNSUPPORTED = "browser_unsupported"
    REGISTRATION_EXPIRED = "registration_expired"
    REGISTRATION_PREREQUISITES_MISSING = "registration_prerequisites_missing"
    REGISTRATION_ALREADY_DONE = "registration_already_done"

    # The OpenID Provider (broker side).
    OIDC_CONFIG_INVALID = "oidc_config_invalid"
    OIDC_REQUEST_INVALID = "oidc_request_invalid"
    OIDC_SIGNIN_EXPIRED = "oidc_signin_expired"
    OIDC_LOGOUT_INVALID = "oidc_logout_invalid"
    OIDC_TOKEN_REFUSED = "oidc_token_refused"
    OIDC_CLIENT_KEYS_UNAVAILABLE = "oidc_client_keys_unavailable"
    OIDC_ROLE_NOT_CHOSEN = "oidc_role_not_chosen"
    OIDC_ACR_UNSUPPORTED = "oidc_acr_unsupported"

    # Local administrators: the console, the registrations API and the CLI (broker side).
    ADMIN_NOT_AUTHORISED = "admin_not_authorised"
    ADMIN_REASON_REQUIRED = "admin_reason_required"
    ADMIN_CONFIRMATION_REQUIRED = "admin_confirmation_required"
    ADMIN_REGISTRATION_CHANGED = "admin_registration_changed"
    REGISTRATION_NOT_FOUND = "registration_not_found"
    API_TOKEN_MISSING = "api_token_missing"
    API_TOKEN_INVALID = "api_token_invalid"
    API_SCOPE_INSUFFICIENT = "api_scope_insufficient"
    API_REQUEST_INVALID = "api_request_invalid"
    AUDIT_CHAIN_BROKEN = "audit_chain_broken"


#: Any code the broker answers with.
Code = ErrorCode | BrokerCode

_MESSAGES: dict[BrokerCode, str] = {
    BrokerCode.STORE_UNAVAILABLE: (
        "The sign-in service cannot reach its database right now. Try again in a few"
        " minutes; if it keeps happening, contact IT support."
    ),
    BrokerCode.REGISTRATION_CARD_LINKED: (
        "This smartcard is already linked to another account. Ask your local"
        " administrator to check the registration."
    ),
    BrokerCode.REGISTRATION_ACCOUNT_LINKED: (
        "This account is already linked to a smartcard. Ask your local administrator to"
        " remove the old link before registering a new card."
    ),
    BrokerCode.SIGNING_KEY_UNAVAILABLE: (
        "The sign-in service cannot load its signing key. Contact IT support; they"
        " should check the key passphrase setting."
    ),
    BrokerCode.DIRECTORY_UNAVAILABLE: "The directory could not be reached. Try again shortly.",
    BrokerCode.DIRECTORY_READ_ONLY: (
        "This service cannot record your acceptance in the directory. Accept the policy in"
        " the NHSmail portal, then try again."
    ),
    BrokerCode.DIRECTORY_DATA_INVALID: (
        "Your account details in the directory could not be read. Ask your local"
        " administrator to check your account."
    ),
    BrokerCode.DIRECTORY_CONFIG_INVALID: (
        "The sign-in service's directory settings are not valid. IT support should correct"
        " them; the service's log names each problem."
    ),
    BrokerCode.INVALID_CREDENTIALS: (
        "The email address or password is not correct. Check them and try again; if you"
        " have tried several times, wait 15 minutes or sign in with your smartcard."
    ),
    BrokerCode.ACCOUNT_LOCKED: (
        "Your account is locked after too many wrong passwords. Try again later, or ask"
        " your local administrator to unlock it."
    ),
    BrokerCode.ACCOUNT_DISABLED: (
        "Your NHSmail account is disabled. Ask your local administrator to re-enable it."
    ),
    BrokerCode.ACCOUNT_EXPIRED: (
        "Your NHSmail account has expired. Ask your local administrator to extend it."
    ),
    BrokerCode.PASSWORD_EXPIRED: (
        "Your NHSmail password has expired or must be changed. Change it in NHSmail, then"
        " try again."
    ),
    BrokerCode.AUP_NOT_ACCEPTED: (
        "You need to accept the NHSmail acceptable use policy before you can sign in."
        " Accept it in the NHSmail portal, then try again."
    ),
    BrokerCode.CARE_IDENTITY_NOT_FOUND: (
        "No Care Identity record was found for your account. Ask your Registration"
        " Authority to check your Care Identity."
    ),
    BrokerCode.CARE_IDENTITY_INACTIVE: (
        "Your Care Identity is not active. Ask your Registration Authority to check it."
    ),
    BrokerCode.BROKER_CONFIG_INVALID: (
        "The sign-in service's settings are not valid. IT support should run"
        " `careid-broker check-config`, which names each problem, and correct them."
    ),
    BrokerCode.CSRF_INVALID: (
        "This page had expired (for example, you signed in or out, or sent a password,"
        " in another tab or window), so nothing was sent. Fill it in again and send it,"
        " or reload the page and try again."
    ),
    BrokerCode.SIGNIN_FORM_INCOMPLETE: "Enter your email address and your password.",
    BrokerCode.SIGNIN_THROTTLED: (
        "There have been too many sign-in attempts with this email address or from this"
        " computer. Wait, then try again, or sign in with your smartcard; if you have"
        " forgotten your password, reset it in NHSmail."
    ),
    BrokerCode.CARD_REQUIRED: (
        "The service you are signing in to needs your smartcard. Sign in with your"
        " smartcard instead of your password."
    ),
    BrokerCode.CARD_SIGNIN_UNAVAILABLE: (
        "Signing in with a smartcard is not available on this sign-in service yet. Sign"
        " in with your email address and password, or ask IT support."
    ),
    BrokerCode.PAGE_NOT_FOUND: (
        "There is no page at this address. Check the address, or go back to the service"
        " you were using and sign in from there."
    ),
    BrokerCode.REQUEST_INVALID: (
        "The sign-in service could not accept this request. Go back, reload the page and try again."
    ),
    BrokerCode.BROKER_INTERNAL: (
        "Something went wrong in the sign-in service. Try again; if it keeps happening,"
        " contact IT support and give them the reference shown on this page."
    ),
    BrokerCode.OPS_ENDPOINT_FORBIDDEN: (
        "This operations page is only available to monitoring systems on the allowed"
        " networks. Ask the service's administrators for access."
    ),
    BrokerCode.CARD_NOT_REGISTERED: (
        "This smartcard is not registered for signing in yet. Register it once with your"
        " NHSmail email address and password, then sign in with the card."
    ),
    BrokerCode.CARD_CERTIFICATE_NOT_REGISTERED: (
        "This smartcard's certificate is not the one registered to your account: a renewed"
        " or replacement card must be registered again. Register this card, then sign in."
    ),
    BrokerCode.CARD_ACCOUNT_MISSING: (
        "The NHSmail account this smartcard is registered to no longer exists. Ask your"
        " local administrator to check the registration."
    ),
    BrokerCode.CARD_IDENTITY_MISMATCH: (
        "This smartcard names a different Care Identity from the one your NHSmail account"
        " is linked to. Use your own smartcard, or ask your local administrator to check"
        " your account."
    ),
    BrokerCode.REGISTRATION_ACCOUNT_CHANGED: (
        "This smartcard was registered to the account that used to have this NHSmail"
        " address; the address now belongs to a different account. Ask your local"
        " administrator to remove the old registration, then register the card again"
        " with your own account."
    ),
    BrokerCode.REQUEST_NOT_SAME_ORIGIN: (
        "This request did not come from the sign-in page, so it was refused. Open the"
        " sign-in page again and try again."
    ),
    BrokerCode.AGENT_UNREACHABLE: (
        "The smartcard agent is not running on this computer, or is not installed. Start"
        " it (or ask IT support to install it), then try again."
    ),
    BrokerCode.BROKER_UNREACHABLE: (
        "The sign-in service could not be reached. Check your network connection and try again."
    ),
    BrokerCode.CARD_LOCK_NOT_ARMED: (
        "The smartcard agent could not be set up to sign you out when you remove your"
        " card, so we signed you out again. Check that the smartcard agent is running"
        " (or restart it), then sign in again."
    ),
    BrokerCode.CARD_LOCK_NOT_ARMED_SIGNED_IN: (
        "The smartcard agent could not be set up to sign you out when you remove your"
        " card, and the sign-in service could not be reached to sign you out. You may"
        " still be signed in: sign out, or close the web browser, before you leave this"
        " computer. Then check that the smartcard agent is running."
    ),
    BrokerCode.BROWSER_UNSUPPORTED: (
        "Signing in with a smartcard needs an up-to-date web browser (Microsoft Edge,"
        " Google Chrome or Mozilla Firefox) with JavaScript turned on. Use one, or sign in"
        " with your email address and password."
    ),
    BrokerCode.STEP_SUPERSEDED: (
        "Someone started another sign-in or registration in this browser after this page"
        " was opened, so nothing was done here. Start again; on a shared computer, check"
        " that the person named on the page is you."
    ),
    BrokerCode.REGISTRATION_EXPIRED: (
        "Your smartcard registration was not finished in time, so nothing was saved. Start"
        " the registration again."
    ),
    BrokerCode.REGISTRATION_ALREADY_DONE: (
        "This smartcard is already registered for your account, so nothing was changed."
        " Sign in with your smartcard."
    ),
    BrokerCode.REGISTRATION_PREREQUISITES_MISSING: (
        "Your account is not ready for smartcard sign-in yet. Sort out each problem listed"
        " on this page, then start the registration again."
    ),
    BrokerCode.OIDC_CONFIG_INVALID: (
        "The sign-in service's client (relying party) settings are not valid. IT support"
        " should correct them; the service's log names each problem."
    ),
    BrokerCode.OIDC_REQUEST_INVALID: (
        "The service that sent you here asked for sign-in in a way this sign-in service"
        " cannot accept, so you have not been sent back to it. Go back to that service"
        " and try again; if it keeps happening, tell its IT support team."
    ),
    BrokerCode.OIDC_ACR_UNSUPPORTED: (
        "The service that sent you here asked for a kind of sign-in this sign-in service"
        " does not offer, so you have not been signed in to it. Tell that service's IT"
        " support team: its settings name an assurance level this service does not know."
    ),
    BrokerCode.OIDC_ROLE_NOT_CHOSEN: (
        "Choose the role you are working in today, then select Continue. If the role you"
        " need is not listed, ask your Registration Authority."
    ),
    BrokerCode.OIDC_SIGNIN_EXPIRED: (
        "This sign-in has expired or was already finished. Go back to the service you"
        " were using and sign in again."
    ),
    BrokerCode.OIDC_LOGOUT_INVALID: (
        "The service's sign-out request could not be checked, so nothing was signed out"
        " by it. To sign out now, select “Sign out of every service”: it signs"
        " you out here and tells every service you used with this sign-in."
    ),
    BrokerCode.OIDC_TOKEN_REFUSED: (
        "A web application's token request was refused. Its IT support team should"
        " check its client settings; the sign-in service's audit log names the reason."
    ),
    BrokerCode.OIDC_CLIENT_KEYS_UNAVAILABLE: (
        "A web application's public keys could not be loaded, so it cannot sign in"
        " users. Its IT support team should check its jwks_uri setting."
    ),
    BrokerCode.ADMIN_NOT_AUTHORISED: (
        "Only local administrators can use this page, and the directory does not list you"
        " as one for any organisation. If you should be, ask your IT service desk to give"
        " you local administrator rights, then sign in again."
    ),
    BrokerCode.ADMIN_REASON_REQUIRED: (
        "Choose why you are removing this registration. If you choose another reason,"
        " describe it in the box in plain text (up to 500 characters)."
    ),
    BrokerCode.ADMIN_CONFIRMATION_REQUIRED: (
        "Removing a registration needs a confirmation, and there is no terminal to ask"
        " on, so nothing was removed. Run the command at a terminal to be asked, add"
        " --dry-run to see what it would do, or add --yes to confirm in advance."
    ),
    BrokerCode.ADMIN_REGISTRATION_CHANGED: (
        "The registration changed or was removed while you were looking at it, so"
        " nothing was removed. Open the person's page again and check it before trying"
        " again."
    ),
    BrokerCode.REGISTRATION_NOT_FOUND: (
        "No registration with that Care Identity UUID was found in the organisations you"
        " may manage. Check the UUID."
    ),
    BrokerCode.API_TOKEN_MISSING: (
        "This API needs an access token. Get one from /api/v1/token with your client"
        " credentials and send it in the Authorization header as a Bearer token."
    ),
    BrokerCode.API_TOKEN_INVALID: (
        "The access token is not valid: it may have expired or been revoked. Get a new"
        " one from /api/v1/token."
    ),
    BrokerCode.API_SCOPE_INSUFFICIENT: (
        "The access token does not allow this. Ask the sign-in service's administrators"
        " to give your API client the scope this call needs, then get a new token."
    ),
    BrokerCode.API_REQUEST_INVALID: (
        "The request's parameters are not valid. Check them against the API description"
        " at /api/v1/openapi.json."
    ),
    BrokerCode.AUDIT_CHAIN_BROKEN: (
        "The audit log's hash chain is broken: an entry was changed, removed or"
        " reordered. Keep the database as it is and tell your security team; the verify"
        " command names the first broken entry."
    ),
}

# Refusals are 400 unless listed here.
_STATUS: Final[dict[Code, int]] = {
    ErrorCode.CERTIFICATE_MALFORMED: 403,
    ErrorCode.CERTIFICATE_UNTRUSTED: 403,
    ErrorCode.CERTIFICATE_KEY_UNSUPPORTED: 403,
    ErrorCode.CERTIFICATE_EXPIRED: 403,
    ErrorCode.CERTIFICATE_NOT_YET_VALID: 403,
    ErrorCode.CERTIFICATE_USAGE: 403,
    ErrorCode.CERTIFICATE_POLICY: 403,
    ErrorCode.CERTIFICATE_REVOKED: 403,
    ErrorCode.IDENTITY_MISSING: 403,
    ErrorCode.REVOCATION_UNAVAILABLE: 503,
    ErrorCode.CARD_REMOVAL_THROTTLED: 429,
    BrokerCode.DIRECTORY_UNAVAILABLE: 503,
    BrokerCode.STORE_UNAVAILABLE: 503,
    BrokerCode.SIGNING_KEY_UNAVAILABLE: 503,
    BrokerCode.SIGNIN_THROTTLED: 429,
    BrokerCode.PAGE_NOT_FOUND: 404,
    BrokerCode.BROKER_INTERNAL: 500,
    BrokerCode.CARD_SIGNIN_UNAVAILABLE: 501,
    BrokerCode.OPS_ENDPOINT_FORBIDDEN: 403,
    BrokerCode.ACCOUNT_LOCKED: 403,
    BrokerCode.ACCOUNT_DISABLED: 403,
    BrokerCode.ACCOUNT_EXPIRED: 403,
    BrokerCode.PASSWORD_EXPIRED: 403,
    BrokerCode.AUP_NOT_ACCEPTED: 403,
    BrokerCode.DIRECTORY_DATA_INVALID: 403,
    BrokerCode.CARD_REQUIRED: 403,
    BrokerCode.CARE_IDENTITY_NOT_FOUND: 403,
    BrokerCode.CARE_IDENTITY_INACTIVE: 403,
    BrokerCode.REQUEST_NOT_SAME_ORIGIN: 403,
    BrokerCode.CARD_NOT_REGISTERED: 403,
    BrokerCode.CARD_CERTIFICATE_NOT_REGISTERED: 403,
    BrokerCode.CARD_ACCOUNT_MISSING: 403,
    BrokerCode.CARD_IDENTITY_MISMATCH: 403,
    BrokerCode.REGISTRATION_ACCOUNT_CHANGED: 403,
    BrokerCode.REGISTRATION_CARD_LINKED: 409,
    BrokerCode.REGISTRATION_ACCOUNT_LINKED: 409,
    BrokerCode.REGISTRATION_PREREQUISITES_MISSING: 403,
    BrokerCode.REGISTRATION_ALREADY_DONE: 409,
    BrokerCode.STEP_SUPERSEDED: 409,
    BrokerCode.REGISTRATION_NOT_FOUND: 404,
    BrokerCode.ADMIN_REGISTRATION_CHANGED: 409,
}

_UNAVAILABLE = "Sorry, sign-in is not available right now"
_HEADINGS: Final[dict[Code, str]] = {
    BrokerCode.DIRECTORY_UNAVAILABLE: _UNAVAILABLE,
    BrokerCode.STORE_UNAVAILABLE: _UNAVAILABLE,
    BrokerCode.SIGNING_KEY_UNAVAILABLE: _UNAVAILABLE,
    BrokerCode.SIGNIN_THROTTLED: "Too many sign-in attempts",
    BrokerCode.ACCOUNT_LOCKED: "Your account is locked",
    BrokerCode.ACCOUNT_DISABLED: "Your account is disabled",
    BrokerCode.ACCOUNT_EXPIRED: "Your account has expired",
    BrokerCode.PASSWORD_EXPIRED: "You need to change your password",
    BrokerCode.AUP_NOT_ACCEPTED: "Accept the acceptable use policy first",
    BrokerCode.DIRECTORY_DATA_INVALID: "Your account details could not be read",
    BrokerCode.CARD_REQUIRED: "Sign in with your smartcard",
    BrokerCode.CARD_SIGNIN_UNAVAILABLE: "Smartcard sign-in is not available yet",
    BrokerCode.CSRF_INVALID: "This page has expired",
    BrokerCode.STEP_SUPERSEDED: "This page is out of date",
    BrokerCode.OIDC_SIGNIN_EXPIRED: "This sign-in has expired",
    BrokerCode.PAGE_NOT_FOUND: "Page not found",
    BrokerCode.BROKER_INTERNAL: "Sorry, there is a problem with the service",
    BrokerCode.OPS_ENDPOINT_FORBIDDEN: "Access denied",
}


@unique
class AupRoute(StrEnum):
    """Where a person refused for the acceptable use policy can accept it."""

    HERE = "here"  # on this page: the directory is writable, the password just checked
    PASSWORD = "password"  # noqa: S105 - here, after an email and password check first
    PORTAL = "portal"  # only in the NHSmail portal: this deployment's directory is read-only
    # Registering, at the card step: on the checks page (the password was checked at step 1).
    REGISTRATION = "registration"


_AUP_MESSAGES: Final[dict[AupRoute, str]] = {
    AupRoute.HERE: (
        "You need to accept the current acceptable use policy before you can go on. Read"
        " it, then accept it on this page."
    ),
    AupRoute.PASSWORD: (
        "You need to accept the current acceptable use policy before you can sign in. A"
        " smartcard cannot record your acceptance: accept it once with your email"
        " address and password, then sign in again."
    ),
    AupRoute.PORTAL: _MESSAGES[BrokerCode.AUP_NOT_ACCEPTED],
    AupRoute.REGISTRATION: (
        "You need to accept the current acceptable use policy before you can register your"
        " smartcard. Accept it on the next page, then present your card again."
    ),
}


def aup_message(route: AupRoute) -> str:
    """The one `aup_not_accepted` message for where the person can accept the policy
    (`message_for` gives the portal's, the only route every deployment has)."""
    return _AUP_MESSAGES[route]


def message_for(code: Code) -> str:
    """The plain message for any code the broker answers with."""
    if isinstance(code, BrokerCode):
        return _MESSAGES[code]
    return protocol_message_for(code)


def status_for(code: Code) -> int:
    """The HTTP status a refusal with that code is answered with (400 unless listed)."""
    return _STATUS.get(code, 400)


def heading_for(code: Code) -> str:
    """The heading of that code's error page."""
    return _HEADINGS.get(code, "Sorry, there is a problem")


# What a code means, in a few words, for the local administrator and the helpdesk
# reading a person's sign-ins (the person's own message says what to do instead).
_WORDS: Final[dict[str, str]] = {
    BrokerCode.INVALID_CREDENTIALS: "Wrong email address or password",
    BrokerCode.ACCOUNT_LOCKED: "Account locked after wrong passwords",
    BrokerCode.ACCOUNT_DISABLED: "Mail account disabled",
    BrokerCode.ACCOUNT_EXPIRED: "Mail account expired",
    BrokerCode.PASSWORD_EXPIRED: "Password expired",
    BrokerCode.AUP_NOT_ACCEPTED: "Acceptable use policy not accepted",
    BrokerCode.CARE_IDENTITY_NOT_FOUND: "No Care Identity record",
    BrokerCode.CARE_IDENTITY_INACTIVE: "Care Identity not active",
    BrokerCode.DIRECTORY_DATA_INVALID: "Account details in the directory unreadable",
    BrokerCode.DIRECTORY_UNAVAILABLE: "Directory could not be reached",
    BrokerCode.STORE_UNAVAILABLE: "Database could not be reached",
    BrokerCode.SIGNIN_THROTTLED: "Too many attempts: made to wait",
    BrokerCode.SIGNIN_FORM_INCOMPLETE: "Email address or password left empty",
    BrokerCode.CARD_REQUIRED: "Service needs a smartcard, password used",
    BrokerCode.CARD_NOT_REGISTERED: "Smartcard not registered",
    BrokerCode.CARD_CERTIFICATE_NOT_REGISTERED: "Renewed or replacement card not registered",
    BrokerCode.CARD_ACCOUNT_MISSING: "Registered account no longer exists",
    BrokerCode.CARD_IDENTITY_MISMATCH: "Card names another Care Identity",
    BrokerCode.REGISTRATION_ACCOUNT_CHANGED: "Address now another account's",
    BrokerCode.REQUEST_NOT_SAME_ORIGIN: "Request from another site",
    BrokerCode.BROWSER_UNSUPPORTED: "Browser cannot use the smartcard",
    BrokerCode.CSRF_INVALID: "Form expired",
    BrokerCode.STEP_SUPERSEDED: "Form from a page another step replaced",
    BrokerCode.REGISTRATION_PREREQUISITES_MISSING: "Account not ready for registration",
    BrokerCode.REGISTRATION_CARD_LINKED: "Card already linked to another account",
    BrokerCode.REGISTRATION_ACCOUNT_LINKED: "Account already linked to another card",
    BrokerCode.OIDC_LOGOUT_INVALID: "Sign-out request could not be checked",
    BrokerCode.OIDC_REQUEST_INVALID: "Service's sign-in request not valid",
    BrokerCode.OIDC_ACR_UNSUPPORTED: "Service asked for an assurance level not offered",
    BrokerCode.OIDC_SIGNIN_EXPIRED: "Sign-in expired",
    BrokerCode.ADMIN_NOT_AUTHORISED: "Not a local administrator",
    BrokerCode.REGISTRATION_NOT_FOUND: "Outside the administrator's organisations",
    ErrorCode.CERTIFICATE_REVOKED: "Smartcard certificate revoked",
    ErrorCode.CERTIFICATE_EXPIRED: "Smartcard certificate expired",
    ErrorCode.CERTIFICATE_NOT_YET_VALID: "Smartcard certificate not valid yet",
    ErrorCode.CERTIFICATE_UNTRUSTED: "Smartcard not issued by a trusted authority",
    ErrorCode.CERTIFICATE_MALFORMED: "Smartcard certificate unreadable",
    ErrorCode.CERTIFICATE_USAGE: "Certificate not for signing in",
    ErrorCode.CERTIFICATE_POLICY: "Certificate policy not accepted",
    ErrorCode.CERTIFICATE_KEY_UNSUPPORTED: "Certificate key type not accepted",
    ErrorCode.REVOCATION_UNAVAILABLE: "Revocation could not be checked",
    ErrorCode.SIGNATURE_INVALID: "Card signature did not check out",
    ErrorCode.IDENTITY_MISSING: "Certificate names no Care Identity UUID",
    ErrorCode.CHALLENGE_EXPIRED: "Took too long",
    ErrorCode.CHALLENGE_USED: "Attempt replayed",
    ErrorCode.CHALLENGE_UNKNOWN: "Attempt not recognised",
    ErrorCode.CHALLENGE_WRONG_TRANSACTION: "Attempt from another browser window",
    ErrorCode.TOKEN_MALFORMED: "Agent's answer not valid",
}


def words_for(code: str | None) -> str:
    """A stored code in a few words (a code from another release: its first sentence
    if known here, else "Refused"); the code itself is shown beside it."""
    if not code:
        return ""
    if code in _WORDS:
        return _WORDS[code]
    known: Code | None = None
    if code in BrokerCode.__members__.values():
        known = BrokerCode(code)
    elif code in ErrorCode.__members__.values():
        known = ErrorCode(code)
    if known is None:
        return "Refused"
    return message_for(known).split(". ")[0].rstrip(".")
