"""The error codes of the `careid-auth:1` contract: what an agent and a broker, ours or a
third party's, must agree on.

They are the agent's (the reader, the card, its localhost API) and those of checking a
signed challenge (token, challenge, certificate, signature, identity), plus the answer
to an agent that floods `/card/removed`. Codes are stable, lower-case, snake_case strings
that agents and login pages may switch on; messages are written for the person in front
of the screen and say what to do next. Every other code belongs to the component that
emits it (`careid_broker.codes`, `careid_devkit.codes`).
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class ErrorCode(StrEnum):
    """Every stable error code of the `careid-auth:1` contract."""

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
    CARD_REMOVAL_THROTTLED = "card_removal_throttled"


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
    ErrorCode.CARD_REMOVAL_THROTTLED: (
        "Too many card-removal reports came from this address. The smartcard agent will"
        " try again shortly."
    ),
}


def message_for(code: ErrorCode) -> str:
    """The plain message for a code (every code has one; a test checks it)."""
    return _MESSAGES[code]
