"""The demo relying party's one error type, carrying a stable code from `careid_protocol`."""

from __future__ import annotations

from careid_devkit.codes import DevkitCode, message_for
from careid_protocol.errors import ErrorCode


class WebmailError(Exception):
    """The webmail refused something; `code` is stable, `detail` is for the log only."""

    status: int = 400

    def __init__(self, code: DevkitCode | ErrorCode, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail
        self.message = message_for(code)
        super().__init__(f"{detail} — {self.message}" if detail else self.message)


class SignInError(WebmailError):
    """The sign-in round trip failed: the OP said no, or its answer did not check out."""

    def __init__(
        self, detail: str, code: DevkitCode | ErrorCode = DevkitCode.DEVKIT_WEBMAIL_SIGNIN_FAILED
    ) -> None:
        super().__init__(code, detail)


class ProviderUnavailableError(WebmailError):
    """The OpenID Provider could not be reached, or its metadata is unusable."""

    status = 502

    def __init__(self, detail: str) -> None:
        super().__init__(DevkitCode.DEVKIT_WEBMAIL_PROVIDER_UNAVAILABLE, detail)


class LogoutTokenError(WebmailError):
    """A back-channel logout token failed one of the checks of Back-Channel Logout §2.6."""

    def __init__(self, detail: str) -> None:
        super().__init__(DevkitCode.DEVKIT_WEBMAIL_LOGOUT_TOKEN_INVALID, detail)
