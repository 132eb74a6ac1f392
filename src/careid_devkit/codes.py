"""The development kit's own error codes and messages (developers and testers, never
clinicians). Codes are stable snake_case strings; `message_for` also answers for the
`careid-auth:1` codes the devkit passes on.
"""

from __future__ import annotations

from enum import StrEnum, unique

from careid_protocol.errors import ErrorCode
from careid_protocol.errors import message_for as protocol_message_for


@unique
class DevkitCode(StrEnum):
    """Every stable error code the devkit emits of its own."""

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
    # The demo relying party's and the card tray's pages.
    CSRF_INVALID = "csrf_invalid"
    PAGE_NOT_FOUND = "page_not_found"


_MESSAGES: dict[DevkitCode, str] = {
    DevkitCode.DEVKIT_PKI_EXISTS: (
        "A development PKI already exists in that folder. Pass --force to replace it"
        " (cards issued by the old one stop being trusted), or choose another folder."
    ),
    DevkitCode.DEVKIT_PKI_NOT_FOUND: (
        "No development PKI was found in that folder. Create one with"
        " `careid-devkit pki init FOLDER`."
    ),
    DevkitCode.DEVKIT_PKI_DAMAGED: (
        "The development PKI's files could not be read. Create it again with"
        " `careid-devkit pki init --force FOLDER`."
    ),
    DevkitCode.DEVKIT_INVALID_ARGUMENT: (
        "A value given to the command is not valid. Correct it and run the command again."
    ),
    DevkitCode.DEVKIT_CARD_NOT_FOUND: (
        "The development PKI has issued no such card certificate. Check the UUID and the"
        " serial number."
    ),
    DevkitCode.DEVKIT_KEY_UNUSABLE: (
        "The key or certificate file could not be used. Give an unencrypted PEM private"
        " key, and a certificate that belongs to that key."
    ),
    DevkitCode.DEVKIT_CARD_PROFILE_NOT_FOUND: (
        "The card profile file was not found. Check the path, or create one with"
        " `careid-devkit pki issue-card`."
    ),
    DevkitCode.DEVKIT_CARD_PROFILE_INVALID: (
        "The card profile cannot be used as a card. Issue the card again with"
        " `careid-devkit pki issue-card`."
    ),
    DevkitCode.DEVKIT_WEBMAIL_SIGNIN_FAILED: (
        "Signing in to the webmail did not finish, so you are not signed in. Go back to"
        " the webmail's home page and sign in again; if it keeps happening, check the"
        " webmail's and the sign-in service's logs."
    ),
    DevkitCode.DEVKIT_WEBMAIL_PROVIDER_UNAVAILABLE: (
        "The webmail cannot reach the sign-in service. Check that the broker is running"
        " at the issuer address the webmail was given (--issuer), then try again."
    ),
    DevkitCode.DEVKIT_WEBMAIL_ASSURANCE_TOO_LOW: (
        "You chose to sign in with your smartcard, but you were signed in another way."
        " Sign in again and use your smartcard."
    ),
    DevkitCode.DEVKIT_WEBMAIL_LOGOUT_TOKEN_INVALID: (
        "A back-channel logout request was refused because its logout token could not be"
        " verified. Check that the webmail's issuer and client ID match the broker's"
        " configuration; the webmail's log names the reason."
    ),
    DevkitCode.DEVKIT_TRAY_CARD_UNKNOWN: (
        "The card tray has no card with that name. Reload the tray page to see the demo"
        " cards, or ask GET /cards for their ids."
    ),
    DevkitCode.DEVKIT_TRAY_READER_UNAVAILABLE: (
        "The virtual reader did not take the card. Check that pcscd is running with the"
        " vpcd reader driver (Debian package vsmartcard-vpcd), then try again."
    ),
    DevkitCode.DEVKIT_TRAY_REQUEST_REFUSED: (
        "The card tray only accepts requests from its own page. Use the tray page, or send"
        " JSON with the X-Card-Tray header to http://localhost or 127.0.0.1."
    ),
    DevkitCode.DEVKIT_DEMO_PORT_IN_USE: (
        "A port the demo needs is used by another program. Stop that program, or give the"
        " demo another port with the matching --…-port option (0 picks a free one)."
    ),
    DevkitCode.DEVKIT_DEMO_PART_MISSING: (
        "A system part the demo needs is not installed. Run `bash .ci/setup` (it installs"
        " the Debian packages), then start the demo again."
    ),
    DevkitCode.DEVKIT_DEMO_SERVICE_FAILED: (
        "A part of the demo stopped or did not start, so the demo stopped everything it"
        " started. The log file named above says why."
    ),
    DevkitCode.CSRF_INVALID: (
        "This form has expired or did not come from this page, so it was not accepted."
        " Reload the page and try again."
    ),
    DevkitCode.PAGE_NOT_FOUND: "There is no page at this address. Check the address.",
}


def message_for(code: DevkitCode | ErrorCode) -> str:
    """The plain message for a devkit code or a `careid-auth:1` code."""
    if isinstance(code, DevkitCode):
        return _MESSAGES[code]
    return protocol_message_for(code)
