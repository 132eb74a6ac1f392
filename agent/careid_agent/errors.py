"""The agent's errors: every one carries a stable code and a plain message.

Two roots, as STYLE.md asks of each component: `CardError` for the reader and the card
(raised by the transport, APDU and PIV layers) and `AgentError` for the agent's own API
(PIN entry, origins, requests; filled in by the service layer). The HTTP layer turns
either into `{"error": code, "message": message}`; the CLI prints the same pair.

`message` is for the clinician in front of the screen: what happened and what to do, in
plain words. What IT support needs to find the cause (a PC/SC return code, the reader
name in the settings, the readers that exist) goes in `detail`, which the agent logs and
`careid-agent status` prints, and which never reaches a page.
"""

from __future__ import annotations

from collections.abc import Sequence

from careid_protocol.errors import ErrorCode, message_for


class CardError(Exception):
    """Something went wrong with the reader or the card."""

    code: ErrorCode = ErrorCode.CARD_COMMUNICATION

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.message = message if message is not None else message_for(self.code)
        self.detail = detail
        super().__init__(self.message)


class NoReaderError(CardError):
    """No PC/SC reader is connected, or none the agent may use."""

    code = ErrorCode.NO_READER


#: The PC/SC service cannot be started by the person at the workstation, and a reader
#: that is plugged in will not appear until it runs: so no "check it is plugged in".
SERVICE_UNAVAILABLE_MESSAGE = (
    "Your smartcard reader is not available on this computer. Contact IT support."
)


class PcscUnavailableError(NoReaderError):
    """The PC/SC service (pcscd, or Windows' or macOS's smart card service) is not running."""

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        super().__init__(SERVICE_UNAVAILABLE_MESSAGE if message is None else message, detail=detail)


class ReaderNotFoundError(NoReaderError):
    """No connected reader has the name the agent is set up to use (`reader`)."""

    def __init__(self, wanted: str, available: Sequence[str]) -> None:
        self.wanted = wanted
        self.available = tuple(available)
        super().__init__(
            "The smartcard reader this computer is set up to use was not found. Check that"
            " it is plugged in; if it is, contact IT support.",
            detail=f"no reader matches the reader setting {wanted!r}; readers present: "
            + (", ".join(repr(name) for name in self.available) or "none"),
        )


class ReaderAmbiguousError(NoReaderError):
    """Several connected readers match the reader name the agent is set up to use."""

    def __init__(self, wanted: str, matches: Sequence[str]) -> None:
        self.wanted = wanted
        self.matches = tuple(matches)
        super().__init__(
            "The smartcard agent cannot tell which card reader to use. Unplug any extra"
            " card reader and try again; if that does not help, contact IT support.",
            detail=f"{len(self.matches)} readers match the reader setting {wanted!r}: "
            + ", ".join(repr(name) for name in self.matches)
            + "; set the full name of one",
        )


class NoCardError(CardError):
    """The reader has no card in it."""

    code = ErrorCode.NO_CARD


class CardRemovedError(CardError):
    """The card was removed (or reset by another program) during an operation."""

    code = ErrorCode.CARD_REMOVED


class NotPivCardError(CardError):
    """The card has no PIV application."""

    code = ErrorCode.NOT_PIV_CARD


class WrongPinError(CardError):
    """The card refused the PIN; `retries_left` more tries before it blocks."""

    code = ErrorCode.WRONG_PIN

    def __init__(self, retries_left: int, message: str | None = None) -> None:
        self.retries_left = retries_left
        if message is None:
            tries = "1 try" if retries_left == 1 else f"{retries_left} tries"
            message = f"The PIN was not correct. {tries} left before the card is blocked."
        super().__init__(message)


class PinBlockedError(CardError):
    """The PIN retry counter is exhausted: only the Registration Authority can reset it."""

    code = ErrorCode.PIN_BLOCKED


class PinFormatError(CardError):
    """The PIN cannot be a PIV PIN (length or characters); nothing was sent to the card."""

    code = ErrorCode.PIN_INVALID_FORMAT


class ReaderBusyError(CardError):
    """Another program holds the reader (exclusive connection or a long transaction)."""

    code = ErrorCode.READER_BUSY


class CardCommunicationError(CardError):
    """PC/SC or the card failed in a way the user can only retry."""

    code = ErrorCode.CARD_COMMUNICATION


class MalformedDataError(CardCommunicationError):
    """The card answered 9000 with data that does not follow SP 800-73-4."""


class NoCertificateError(CardError):
    """The card has no PIV Authentication certificate."""

    code = ErrorCode.CARD_NO_CERTIFICATE


class CertificateMalformedError(CardError):
    """The card's certificate object is present but cannot be parsed."""

    code = ErrorCode.CERTIFICATE_MALFORMED


class UnsupportedKeyError(CardError):
    """The card's key is not ECC P-256, ECC P-384 or RSA-2048."""

    code = ErrorCode.CARD_UNSUPPORTED_KEY


class SecurityStatusError(CardError):
    """The card refused an operation because the PIN was not verified (6982)."""

    code = ErrorCode.CARD_SECURITY_NOT_SATISFIED


class ApduError(CardError):
    """The card answered a status word no more specific error describes."""

    code = ErrorCode.CARD_COMMUNICATION

    def __init__(self, sw: int, message: str | None = None) -> None:
        self.sw = sw
        super().__init__(message, detail=f"the card answered status word {sw:04X}")

    def __str__(self) -> str:
        # The status word is for logs and support; `message` stays plain for the user.
        return f"{self.message} (SW {self.sw:04X})"


class AgentError(Exception):
    """Something went wrong in the agent itself (its API, PIN entry, configuration)."""

    code: ErrorCode = ErrorCode.AGENT_INTERNAL

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.message = message if message is not None else message_for(self.code)
        self.detail = detail
        super().__init__(self.message)


class PinEntryCancelledError(AgentError):
    """The person cancelled PIN entry (dialog, terminal or the reader's PIN pad)."""

    code = ErrorCode.PIN_ENTRY_CANCELLED


class PinEntryTimeoutError(AgentError):
    """Nobody entered a PIN before the prompt timed out."""

    code = ErrorCode.PIN_ENTRY_TIMEOUT


class PinProviderUnavailableError(AgentError):
    """The configured way of asking for the PIN cannot work here (no display, no terminal,
    no PIN pad, no `CAREID_AGENT_PIN`)."""

    code = ErrorCode.PIN_PROVIDER_UNAVAILABLE


class CardBusyError(AgentError):
    """Another sign-in holds the card and did not finish within the wait."""

    code = ErrorCode.CARD_BUSY


class AgentBusyError(AgentError):
    """Too many connections or event streams are open."""

    code = ErrorCode.AGENT_BUSY


class AgentStoppingError(AgentBusyError):
    """The agent is stopping (quit, log-off) while a request waited, e.g. on a PIN prompt."""

    def __init__(self) -> None:
        super().__init__(
            "The smartcard agent is stopping. Try again in a moment; if it does not start"
            " again, restart the workstation or contact IT support."
        )


class ConfigError(AgentError):
    """The agent's configuration is not valid; `message` names the setting for IT staff."""

    code = ErrorCode.AGENT_CONFIG_INVALID


class RequestError(AgentError):
    """A request to the localhost API was refused before touching the card."""

    code = ErrorCode.BAD_REQUEST


class OriginNotAllowedError(RequestError):
    """The `Origin` header is missing or not on the allow-list."""

    code = ErrorCode.ORIGIN_NOT_ALLOWED


class HostNotAllowedError(RequestError):
    """The `Host` header is not the agent's own loopback address (DNS rebinding)."""

    code = ErrorCode.HOST_NOT_ALLOWED


class BadRequestError(RequestError):
    """The request is not the JSON the endpoint expects."""

    code = ErrorCode.BAD_REQUEST


class BodyTooLargeError(RequestError):
    """The request body is over the agent's limit."""

    code = ErrorCode.BODY_TOO_LARGE


class InvalidChallengeError(RequestError):
    """The challenge is not 43 base64url characters."""

    code = ErrorCode.INVALID_CHALLENGE


class InvalidCardSessionError(RequestError):
    """The card session reference is not a string the agent can keep and send back."""

    code = ErrorCode.INVALID_CARD_SESSION


class NotFoundError(RequestError):
    """No such endpoint."""

    code = ErrorCode.NOT_FOUND


class MethodNotAllowedError(RequestError):
    """The endpoint exists but not with this HTTP method."""

    code = ErrorCode.METHOD_NOT_ALLOWED
