"""The development PKI's one error type, carrying a stable code from `careid_protocol`."""

from __future__ import annotations

from careid_devkit.codes import DevkitCode, message_for
from careid_protocol.errors import ErrorCode


class PkiError(Exception):
    """A development-PKI operation was refused; `code` is stable, `detail` says what."""

    def __init__(self, code: DevkitCode | ErrorCode, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail
        self.message = message_for(code)
        super().__init__(f"{detail} — {self.message}" if detail else self.message)
