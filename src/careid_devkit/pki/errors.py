"""The development PKI's one error type, carrying a stable code from `careid_protocol`."""

from __future__ import annotations

from careid_protocol.errors import ErrorCode, message_for


class PkiError(Exception):
    """A development-PKI operation was refused; `code` is stable, `detail` says what."""

    def __init__(self, code: ErrorCode, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail
        self.message = message_for(code)
        super().__init__(f"{detail} — {self.message}" if detail else self.message)
