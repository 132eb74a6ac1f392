"""The registry of error codes shared by the agent and the broker.

Codes are part of the public contract (`careid-auth:1`): they are stable, lower-case,
snake_case strings that third-party agents and login pages may switch on. Messages are
written for the person in front of the screen — a clinician at a workstation or a local
administrator — and say what to do next. Components raise their own error classes
(`CardError`, `AgentError`, `BrokerError`) carrying one of these codes.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class ErrorCode(StrEnum):
    """Every stable error code the project emits."""

    # The reader and the card (agent side).
    NO_READER = "no_reader"
    NO_CARD = "no_card"
    CARD_REMOVED = "card_removed"
    NOT_PIV_CARD = "not_piv_card"
    WRONG_PIN = "wrong_pin"
    PIN_BLOCKED = "pin_blocked"
    PIN_INVALID_FORMAT = "pin_invalid_format"
    READER_BUSY = "reader_busy"
    CARD_COMMUNICATION = "card_communication"
    CARD_NO_CERTIFICATE = "card_no_certificate"
    CARD_UNSUPPORTED_KEY = "card_unsupported_key"
    CARD_SECURITY_NOT_SATISFIED = "card_security_not_satisfied"

    # The workstation agent's own API.
    CARD_BUSY = "card_busy"
    PIN_ENTRY_CANCELLED = "pin_entry_cancelled"
    PIN_ENTRY_TIMEOUT = "pin_entry_timeout"
    PIN_PROVIDER_UNAVAILABLE = "pin_provider_unavailable"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    HOST_NOT_ALLOWED = "host_not_allowed"
    BAD_REQUEST = "bad_request"
    BODY_TOO_LARGE = "body_too_large"
    INVALID_CHALLENGE = "invalid_challenge"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    AGENT_INTERNAL = "agent_internal"
    AGENT_BUSY = "agent_busy"
    AGENT_CONFIG_INVALID = "agent_config_invalid"
    INVALID_CARD_SESSION = "invalid_card_session"

    # The signed challenge and the certificate (broker side).
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_UNSUPPORTED_FORMAT = "token_unsupported_format"
    TOKEN_UNSUPPORTED_ALGORITHM = "token_unsupported_algorithm"
    CHALLENGE_UNKNOWN = "challenge_unknown"
    CHALLENGE_EXPIRED = "challenge_expired"
    CHALLENGE_USED = "challenge_used"
    CHALLENGE_WRONG_TRANSACTION = "challenge_wrong_transaction"
    CERTIFICATE_MALFORMED = "certificate_malformed"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    CERTIFICATE_KEY_UNSUPPORTED = "certificate_key_unsupported"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    CERTIFICATE_USAGE = "certificate_usage"
    CERTIFICATE_POLICY = "certificate_policy"
    CERTIFICATE_REVOKED = "certificate_revoked"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"
    SIGNATURE_INVALID = "signature_invalid"
    IDENTITY_MISSING = "identity_missing"

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
    REQUEST_NOT_SAME_ORIGIN = "request_not_same_origin"
    AGENT_UNREACHABLE = "agent_unreachable"
    BROKER_UNREACHABLE = "broker_unreachable"
    BROWSER_UNSUPPORTED = "browser_unsupported"
    REGISTRATION_EXPIRED = "registration_expired"
    REGISTRATION_PREREQUISITES_MISSING = "registration_prerequisites_missing"
    CARD_REMOVAL_THROTTLED = "card_removal_throttled"

    # The OpenID Provider (broker side).
    OIDC_CONFIG_INVALID = "oidc_config_invalid"
    OIDC_REQUEST_INVALID = "oidc_request_invalid"
    OIDC_SIGNIN_EXPIRED = "oidc_signin_expired"
    OIDC_LOGOUT_INVALID = "oidc_logout_invalid"
    OIDC_TOKEN_REFUSED = "oidc_token_refused"
    OIDC_CLIENT_KEYS_UNAVAILABLE = "oidc_client_keys_unavailable"

    # Local administrators: the console, the registrations API and the CLI (broker side).
    ADMIN_NOT_AUTHORISED = "admin_not_authorised"
    ADMIN_REASON_REQUIRED = "admin_reason_required"
    ADMIN_REGISTRATION_CHANGED = "admin_registration_changed"
    REGISTRATION_NOT_FOUND = "registration_not_found"
    API_TOKEN_MISSING = "api_token_missing"
    API_TOKEN_INVALID = "api_token_invalid"
    API_SCOPE_INSUFFICIENT = "api_scope_insufficient"
    API_REQUEST_INVALID = "api_request_invalid"
    AUDIT_CHAIN_BROKEN = "audit_chain_broken"

    # The development kit's PKI commands (developers and testers, never clinicians).
    DEVKIT_PKI_EXISTS = "devkit_pki_exists"
    DEVKIT_PKI_NOT_FOUND = "devkit_pki_not_found"
    DEVKIT_PKI_DAMAGED = "devkit_pki_damaged"
    DEVKIT_INVALID_ARGUMENT = "devkit_invalid_argument"
    DEVKIT_CARD_NOT_FOUND = "devkit_card_not_found"
    DEVKIT_KEY_UNUSABLE = "devkit_key_unusable"
    # The development kit's virtual card.
    DEVKIT_CARD_PROFILE_NOT_FOUND = "devkit_card_profile_not_found"
    DEVKIT_CARD_PROFILE_INVALID = "devkit_card_profile_invalid"
    # The development kit's demo relying party ("webmail").
    DEVKIT_WEBMAIL_SIGNIN_FAILED = "devkit_webmail_signin_failed"
    DEVKIT_WEBMAIL_PROVIDER_UNAVAILABLE = "devkit_webmail_provider_unavailable"
    DEVKIT_WEBMAIL_ASSURANCE_TOO_LOW = "devkit_webmail_assurance_too_low"
    DEVKIT_WEBMAIL_LOGOUT_TOKEN_INVALID = "devkit_webmail_logout_token_invalid"
    # The development kit's card tray and one-command demo.
    DEVKIT_TRAY_CARD_UNKNOWN = "devkit_tray_card_unknown"
    DEVKIT_TRAY_READER_UNAVAILABLE = "devkit_tray_reader_unavailable"
    DEVKIT_TRAY_REQUEST_REFUSED = "devkit_tray_request_refused"
    DEVKIT_DEMO_PORT_IN_USE = "devkit_demo_port_in_use"
    DEVKIT_DEMO_PART_MISSING = "devkit_demo_part_missing"
    DEVKIT_DEMO_SERVICE_FAILED = "devkit_demo_service_failed"


_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.NO_READER: (
        "No smartcard reader was found. Check that the reader is plugged in, then try again."
    ),
    ErrorCode.NO_CARD: "No smartcard is in the reader. Insert your card and try again.",
    ErrorCode.CARD_REMOVED: (
        "Your smartcard was removed before sign-in finished. Insert it and try again."
    ),
    ErrorCode.NOT_PIV_CARD: (
        "The card in the reader is not a Care Identity smartcard. Check you inserted the"
        " right card."
    ),
    ErrorCode.WRONG_PIN: "The PIN was not correct. Check it and try again.",
    ErrorCode.PIN_BLOCKED: (
        "Your smartcard PIN is blocked after too many wrong attempts. Ask your"
        " Registration Authority to unlock it."
    ),
    ErrorCode.PIN_INVALID_FORMAT: (
        "A smartcard PIN is 4 to 8 characters long. Check it and try again."
    ),
    ErrorCode.READER_BUSY: (
        "The smartcard reader is being used by another program. Close it, or wait a"
        " moment, and try again."
    ),
    ErrorCode.CARD_COMMUNICATION: (
        "The smartcard could not be read. Take the card out, put it back in and try again;"
        " if it keeps happening, try another reader."
    ),
    ErrorCode.CARD_NO_CERTIFICATE: (
        "Your smartcard holds no sign-in certificate. Ask your Registration Authority to"
        " check the card."
    ),
    ErrorCode.CARD_UNSUPPORTED_KEY: (
        "Your smartcard uses a key type this service does not support. Ask your"
        " Registration Authority to check the card."
    ),
    ErrorCode.CARD_SECURITY_NOT_SATISFIED: (
        "The smartcard refused to sign because the PIN was not verified. Try again."
    ),
    ErrorCode.CARD_BUSY: (
        "Your smartcard is busy with another sign-in. Wait for it to finish and try again."
    ),
    ErrorCode.PIN_ENTRY_CANCELLED: "PIN entry was cancelled. Try again when you are ready.",
    ErrorCode.PIN_ENTRY_TIMEOUT: "No PIN was entered in time. Try again when you are ready.",
    ErrorCode.PIN_PROVIDER_UNAVAILABLE: (
        "The smartcard agent cannot ask for your PIN on this workstation. Ask IT support"
        " to check the agent's PIN entry settings."
    ),
    ErrorCode.ORIGIN_NOT_ALLOWED: (
        "This web page is not allowed to use your smartcard. Sign in from your"
        " organisation's usual sign-in page."
    ),
    ErrorCode.HOST_NOT_ALLOWED: "This request was refused by the smartcard agent.",
    ErrorCode.BAD_REQUEST: "The smartcard agent could not understand the request.",
    ErrorCode.BODY_TOO_LARGE: "The request to the smartcard agent was too large.",
    ErrorCode.INVALID_CHALLENGE: (
        "The sign-in request was not valid. Reload the sign-in page and try again."
    ),
    ErrorCode.NOT_FOUND: "The smartcard agent has no such function.",
    ErrorCode.METHOD_NOT_ALLOWED: "The smartcard agent does not accept that kind of request.",
    ErrorCode.AGENT_INTERNAL: (
        "The smartcard agent hit a problem. Try again; if it keeps happening, restart"
        " the workstation or contact IT support."
    ),
    ErrorCode.AGENT_BUSY: (
        "The smartcard agent is handling too many requests. Close other sign-in pages and"
        " try again."
    ),
    ErrorCode.AGENT_CONFIG_INVALID: (
        "The smartcard agent's settings are not valid. Ask IT support to correct them; the"
        " agent's log names each problem."
    ),
    ErrorCode.INVALID_CARD_SESSION: (
        "The sign-in service sent a session reference the smartcard agent cannot use."
        " Reload the page and sign in again."
    ),
    ErrorCode.TOKEN_MALFORMED: (
        "The response from your smartcard agent was not valid. Reload the page and try"
        " again; if it keeps happening, contact IT support."
    ),
    ErrorCode.TOKEN_UNSUPPORTED_FORMAT: (
        "Your smartcard agent is not compatible with this service. Ask IT support to update it."
    ),
    ErrorCode.TOKEN_UNSUPPORTED_ALGORITHM: (
        "Your smartcard uses a signature type this service does not accept. Ask your"
        " Registration Authority to check the card."
    ),
    ErrorCode.CHALLENGE_UNKNOWN: (
        "This sign-in attempt is not recognised. Reload the sign-in page and try again."
    ),
    ErrorCode.CHALLENGE_EXPIRED: (
        "This sign-in attempt took too long and has expired. Reload the page and try again."
    ),
    ErrorCode.CHALLENGE_USED: (
        "This sign-in attempt has already been used. Reload the page and try again."
    ),
    ErrorCode.CHALLENGE_WRONG_TRANSACTION: (
        "This sign-in attempt belongs to another browser window. Reload the page and try again."
    ),
    ErrorCode.CERTIFICATE_MALFORMED: (
        "The certificate on your smartcard could not be read. Ask your Registration"
        " Authority to check the card."
    ),
    ErrorCode.CERTIFICATE_UNTRUSTED: (
        "Your smartcard was not issued by an authority this service trusts. Use your"
        " Care Identity smartcard, or ask your Registration Authority."
    ),
    ErrorCode.CERTIFICATE_KEY_UNSUPPORTED: (
        "Your smartcard uses a kind of key this service does not accept. Ask your"
        " Registration Authority for a card with a supported key."
    ),
    ErrorCode.CERTIFICATE_EXPIRED: (
        "The certificate on your smartcard has expired. Ask your Registration Authority"
        " to renew it."
    ),
    ErrorCode.CERTIFICATE_NOT_YET_VALID: (
        "The certificate on your smartcard is not valid yet. Check the workstation's"
        " clock, or ask your Registration Authority."
    ),
    ErrorCode.CERTIFICATE_USAGE: (
        "The certificate on your smartcard cannot be used for signing in. Ask your"
        " Registration Authority to check the card."
    ),
    ErrorCode.CERTIFICATE_POLICY: (
        "The certificate on your smartcard is not of a kind accepted for this service."
        " Ask your Registration Authority to check the card."
    ),
    ErrorCode.CERTIFICATE_REVOKED: (
        "Your smartcard has been cancelled. Ask your Registration Authority for a replacement."
    ),
    ErrorCode.REVOCATION_UNAVAILABLE: (
        "Your smartcard could not be checked right now. Try again in a few minutes; if"
        " it keeps happening, contact IT support."
    ),
    ErrorCode.SIGNATURE_INVALID: (
        "Your smartcard's signature could not be checked. Reload the page and try again."
    ),
    ErrorCode.IDENTITY_MISSING: (
        "Your smartcard does not name a Care Identity. Ask your Registration Authority"
        " to check the card."
    ),
    ErrorCode.STORE_UNAVAILABLE: (
        "The sign-in service cannot reach its database right now. Try again in a few"
        " minutes; if it keeps happening, contact IT support."
    ),
    ErrorCode.REGISTRATION_CARD_LINKED: (
        "This smartcard is already linked to another account. Ask your local"
        " administrator to check the registration."
    ),
    ErrorCode.REGISTRATION_ACCOUNT_LINKED: (
        "This account is already linked to a smartcard. Ask your local administrator to"
        " remove the old link before registering a new card."
    ),
    ErrorCode.SIGNING_KEY_UNAVAILABLE: (
        "The sign-in service cannot load its signing key. Contact IT support; they"
        " should check the key passphrase setting."
    ),
    ErrorCode.DIRECTORY_UNAVAILABLE: "The directory could not be reached. Try again shortly.",
    ErrorCode.DIRECTORY_READ_ONLY: (
        "This service cannot record your acceptance in the directory. Accept the policy in"
        " NHSmail itself, then try again."
    ),
    ErrorCode.DIRECTORY_DATA_INVALID: (
        "Your account details in the directory could not be read. Ask your local"
        " administrator to check your account."
    ),
    ErrorCode.DIRECTORY_CONFIG_INVALID: (
        "The sign-in service's directory settings are not valid. IT support should correct"
        " them; the service's log names each problem."
    ),
    ErrorCode.INVALID_CREDENTIALS: (
        "The email address or password is not correct. Check them and try again."
    ),
    ErrorCode.ACCOUNT_LOCKED: (
        "Your account is locked after too many wrong passwords. Try again later, or ask"
        " your local administrator to unlock it."
    ),
    ErrorCode.ACCOUNT_DISABLED: (
        "Your NHSmail account is disabled. Ask your local administrator to re-enable it."
    ),
    ErrorCode.ACCOUNT_EXPIRED: (
        "Your NHSmail account has expired. Ask your local administrator to extend it."
    ),
    ErrorCode.PASSWORD_EXPIRED: (
        "Your NHSmail password has expired or must be changed. Change it in NHSmail, then"
        " try again."
    ),
    ErrorCode.AUP_NOT_ACCEPTED: (
        "You need to accept the NHSmail acceptable use policy before you can sign in."
        " Sign in to NHSmail with your email and password, accept the policy, then try"
        " again."
    ),
    ErrorCode.CARE_IDENTITY_NOT_FOUND: (
        "No Care Identity record was found for your account. Ask your Registration"
        " Authority to check your Care Identity."
    ),
    ErrorCode.CARE_IDENTITY_INACTIVE: (
        "Your Care Identity is not active. Ask your Registration Authority to check it."
    ),
    ErrorCode.BROKER_CONFIG_INVALID: (
        "The sign-in service's settings are not valid. IT support should run"
        " `careid-broker check-config`, which names each problem, and correct them."
    ),
    ErrorCode.CSRF_INVALID: (
        "This form has expired or did not come from this sign-in page, so it was not"
        " accepted. Reload the page and try again."
    ),
    ErrorCode.SIGNIN_FORM_INCOMPLETE: "Enter your email address and your password.",
    ErrorCode.SIGNIN_THROTTLED: (
        "There have been too many sign-in attempts. Wait a few minutes, then try again;"
        " if you have forgotten your password, reset it in NHSmail."
    ),
    ErrorCode.CARD_REQUIRED: (
        "The service you are signing in to needs your smartcard. Sign in with your"
        " smartcard instead of your password."
    ),
    ErrorCode.CARD_SIGNIN_UNAVAILABLE: (
        "Signing in with a smartcard is not available on this sign-in service yet. Sign"
        " in with your email address and password, or ask IT support."
    ),
    ErrorCode.PAGE_NOT_FOUND: (
        "There is no page at this address. Check the address, or go back to the service"
        " you were using and sign in from there."
    ),
    ErrorCode.REQUEST_INVALID: (
        "The sign-in service could not accept this request. Go back, reload the page and try again."
    ),
    ErrorCode.BROKER_INTERNAL: (
        "Something went wrong in the sign-in service. Try again; if it keeps happening,"
        " contact IT support and give them the reference shown on this page."
    ),
    ErrorCode.OPS_ENDPOINT_FORBIDDEN: (
        "This operations page is only available to monitoring systems on the allowed"
        " networks. Ask the service's administrators for access."
    ),
    ErrorCode.CARD_NOT_REGISTERED: (
        "This smartcard is not registered for signing in yet. Register it once with your"
        " NHSmail email address and password, then sign in with the card."
    ),
    ErrorCode.CARD_CERTIFICATE_NOT_REGISTERED: (
        "This smartcard's certificate is not the one registered to your account: a renewed"
        " or replacement card must be registered again. Register this card, then sign in."
    ),
    ErrorCode.CARD_ACCOUNT_MISSING: (
        "The NHSmail account this smartcard is registered to no longer exists. Ask your"
        " local administrator to check the registration."
    ),
    ErrorCode.CARD_IDENTITY_MISMATCH: (
        "This smartcard names a different Care Identity from the one your NHSmail account"
        " is linked to. Use your own smartcard, or ask your local administrator to check"
        " your account."
    ),
    ErrorCode.REQUEST_NOT_SAME_ORIGIN: (
        "This request did not come from the sign-in page, so it was refused. Open the"
        " sign-in page again and try again."
    ),
    ErrorCode.AGENT_UNREACHABLE: (
        "The smartcard agent is not running on this computer, or is not installed. Start"
        " it (or ask IT support to install it), then try again."
    ),
    ErrorCode.BROKER_UNREACHABLE: (
        "The sign-in service could not be reached. Check your network connection and try again."
    ),
    ErrorCode.BROWSER_UNSUPPORTED: (
        "Signing in with a smartcard needs an up-to-date web browser (Microsoft Edge,"
        " Google Chrome or Mozilla Firefox) with JavaScript turned on. Use one, or sign in"
        " with your email address and password."
    ),
    ErrorCode.REGISTRATION_EXPIRED: (
        "Your smartcard registration was not finished in time, so nothing was saved. Start"
        " the registration again."
    ),
    ErrorCode.REGISTRATION_PREREQUISITES_MISSING: (
        "Your account is not ready for smartcard sign-in yet. Sort out each problem listed"
        " on this page, then start the registration again."
    ),
    ErrorCode.CARD_REMOVAL_THROTTLED: (
        "Too many card-removal reports came from this address. The smartcard agent will"
        " try again shortly."
    ),
    ErrorCode.OIDC_CONFIG_INVALID: (
        "The sign-in service's client (relying party) settings are not valid. IT support"
        " should correct them; the service's log names each problem."
    ),
    ErrorCode.OIDC_REQUEST_INVALID: (
        "The service that sent you here asked for sign-in in a way this sign-in service"
        " cannot accept, so you have not been sent back to it. Go back to that service"
        " and try again; if it keeps happening, tell its IT support team."
    ),
    ErrorCode.OIDC_SIGNIN_EXPIRED: (
        "This sign-in has expired or was already finished. Go back to the service you"
        " were using and sign in again."
    ),
    ErrorCode.OIDC_LOGOUT_INVALID: (
        "The sign-out request could not be checked, so you have not been sent back to"
        " the service. Close the browser window to be sure you are signed out."
    ),
    ErrorCode.OIDC_TOKEN_REFUSED: (
        "A web application's token request was refused. Its IT support team should"
        " check its client settings; the sign-in service's audit log names the reason."
    ),
    ErrorCode.OIDC_CLIENT_KEYS_UNAVAILABLE: (
        "A web application's public keys could not be loaded, so it cannot sign in"
        " users. Its IT support team should check its jwks_uri setting."
    ),
    ErrorCode.ADMIN_NOT_AUTHORISED: (
        "Only local administrators can use this page, and the directory does not list you"
        " as one for any organisation. If you should be, ask your IT service desk to give"
        " you local administrator rights, then sign in again."
    ),
    ErrorCode.ADMIN_REASON_REQUIRED: (
        "Choose why you are removing this registration. If you choose another reason,"
        " describe it in the box (up to 500 characters)."
    ),
    ErrorCode.ADMIN_REGISTRATION_CHANGED: (
        "The registration changed or was removed while you were looking at it, so"
        " nothing was removed. Open the person's page again and check it before trying"
        " again."
    ),
    ErrorCode.REGISTRATION_NOT_FOUND: (
        "No registration with that Care Identity UUID was found in the organisations you"
        " may manage. Check the UUID."
    ),
    ErrorCode.API_TOKEN_MISSING: (
        "This API needs an access token. Get one from /api/v1/token with your client"
        " credentials and send it in the Authorization header as a Bearer token."
    ),
    ErrorCode.API_TOKEN_INVALID: (
        "The access token is not valid: it may have expired or been revoked. Get a new"
        " one from /api/v1/token."
    ),
    ErrorCode.API_SCOPE_INSUFFICIENT: (
        "The access token does not allow this. Ask the sign-in service's administrators"
        " to give your API client the scope this call needs, then get a new token."
    ),
    ErrorCode.API_REQUEST_INVALID: (
        "The request's parameters are not valid. Check them against the API description"
        " at /api/v1/openapi.json."
    ),
    ErrorCode.AUDIT_CHAIN_BROKEN: (
        "The audit log's hash chain is broken: an entry was changed, removed or"
        " reordered. Keep the database as it is and tell your security team; the verify"
        " command names the first broken entry."
    ),
    ErrorCode.DEVKIT_PKI_EXISTS: (
        "A development PKI already exists in that folder. Pass --force to replace it"
        " (cards issued by the old one stop being trusted), or choose another folder."
    ),
    ErrorCode.DEVKIT_PKI_NOT_FOUND: (
        "No development PKI was found in that folder. Create one with"
        " `careid-devkit pki init FOLDER`."
    ),
    ErrorCode.DEVKIT_PKI_DAMAGED: (
        "The development PKI's files could not be read. Create it again with"
        " `careid-devkit pki init --force FOLDER`."
    ),
    ErrorCode.DEVKIT_INVALID_ARGUMENT: (
        "A value given to the command is not valid. Correct it and run the command again."
    ),
    ErrorCode.DEVKIT_CARD_NOT_FOUND: (
        "The development PKI has issued no such card certificate. Check the UUID and the"
        " serial number."
    ),
    ErrorCode.DEVKIT_KEY_UNUSABLE: (
        "The key or certificate file could not be used. Give an unencrypted PEM private"
        " key, and a certificate that belongs to that key."
    ),
    ErrorCode.DEVKIT_CARD_PROFILE_NOT_FOUND: (
        "The card profile file was not found. Check the path, or create one with"
        " `careid-devkit pki issue-card`."
    ),
    ErrorCode.DEVKIT_CARD_PROFILE_INVALID: (
        "The card profile cannot be used as a card. Issue the card again with"
        " `careid-devkit pki issue-card`."
    ),
    ErrorCode.DEVKIT_WEBMAIL_SIGNIN_FAILED: (
        "Signing in to the webmail did not finish, so you are not signed in. Go back to"
        " the webmail's home page and sign in again; if it keeps happening, check the"
        " webmail's and the sign-in service's logs."
    ),
    ErrorCode.DEVKIT_WEBMAIL_PROVIDER_UNAVAILABLE: (
        "The webmail cannot reach the sign-in service. Check that the broker is running"
        " at the issuer address the webmail was given (--issuer), then try again."
    ),
    ErrorCode.DEVKIT_WEBMAIL_ASSURANCE_TOO_LOW: (
        "You chose to sign in with your smartcard, but you were signed in another way."
        " Sign in again and use your smartcard."
    ),
    ErrorCode.DEVKIT_WEBMAIL_LOGOUT_TOKEN_INVALID: (
        "A back-channel logout request was refused because its logout token could not be"
        " verified. Check that the webmail's issuer and client ID match the broker's"
        " configuration; the webmail's log names the reason."
    ),
    ErrorCode.DEVKIT_TRAY_CARD_UNKNOWN: (
        "The card tray has no card with that name. Reload the tray page to see the demo"
        " cards, or ask GET /cards for their ids."
    ),
    ErrorCode.DEVKIT_TRAY_READER_UNAVAILABLE: (
        "The virtual reader did not take the card. Check that pcscd is running with the"
        " vpcd reader driver (Debian package vsmartcard-vpcd), then try again."
    ),
    ErrorCode.DEVKIT_TRAY_REQUEST_REFUSED: (
        "The card tray only accepts requests from its own page. Use the tray page, or send"
        " JSON with the X-Card-Tray header to http://localhost or 127.0.0.1."
    ),
    ErrorCode.DEVKIT_DEMO_PORT_IN_USE: (
        "A port the demo needs is used by another program. Stop that program, or give the"
        " demo another port with the matching --…-port option (0 picks a free one)."
    ),
    ErrorCode.DEVKIT_DEMO_PART_MISSING: (
        "A system part the demo needs is not installed. Run `bash .ci/setup` (it installs"
        " the Debian packages), then start the demo again."
    ),
    ErrorCode.DEVKIT_DEMO_SERVICE_FAILED: (
        "A part of the demo stopped or did not start, so the demo stopped everything it"
        " started. The log file named above says why."
    ),
}


def message_for(code: ErrorCode) -> str:
    """The plain message for a code (every code has one; a test checks it)."""
    return _MESSAGES[code]
