"""What the agent makes of the readers, for `careid-agent status` and IT support.

A clinician is only ever told what to do next ("contact IT support"); this is where the
reasons are spelt out: whether the PC/SC service answers at all (not running is not the
same as no reader), which readers exist, which of them the reader setting names (one,
none or several) and which one the agent would use. It chooses exactly as a sign-in
does (`transport.choose_reader`), so what it reports is what a sign-in would meet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum, unique
from typing import Any

from careid_agent.errors import CardError, PcscUnavailableError
from careid_agent.transport import ReaderInfo, choose_reader, match_readers


@unique
class ServiceState(StrEnum):
    """Whether the PC/SC service answered the reader scan."""

    RUNNING = "running"
    NOT_RUNNING = "not-running"
    FAILING = "failing"
    """It answered, with an error other than "not running"."""


@dataclass(frozen=True, kw_only=True)
class ReaderCheck:
    """One look at the readers through the agent's reader settings."""

    setting: str | None
    """The reader name the agent is set up to use (None: any reader holding a card)."""
    preference: tuple[str, ...]
    service: ServiceState
    readers: tuple[ReaderInfo, ...]
    """Every reader PC/SC lists."""
    matching: tuple[ReaderInfo, ...]
    """The readers the setting names (every reader when there is no setting)."""
    chosen: ReaderInfo | None
    """The reader a sign-in would use now."""
    problem: CardError | None
    """Why no reader can be used now; its `detail` says it for IT support."""

    def to_json(self) -> dict[str, Any]:
        """The check as JSON (camelCase, like the agent's HTTP API)."""
        body: dict[str, Any] = {
            "readerSetting": self.setting,
            "readerPreference": list(self.preference),
            "service": self.service.value,
            "readers": [{"name": r.name, "cardPresent": r.card_present} for r in self.readers],
            "matching": [r.name for r in self.matching],
            "chosen": self.chosen.name if self.chosen is not None else None,
            "problem": None,
        }
        if self.problem is not None:
            body["problem"] = {
                "error": self.problem.code.value,
                "message": self.problem.message,
                "detail": self.problem.detail,
            }
        return body


def check_readers(
    scan: Callable[[], list[ReaderInfo]],
    setting: str | None,
    preference: Sequence[str] = (),
) -> ReaderCheck:
    """Scan the readers (`transport.scan_readers`, or a fake) and apply the settings."""
    wanted = tuple(preference)
    try:
        readers = tuple(scan())
    except CardError as exc:
        state = (
            ServiceState.NOT_RUNNING
            if isinstance(exc, PcscUnavailableError)
            else ServiceState.FAILING
        )
        return ReaderCheck(
            setting=setting,
            preference=wanted,
            service=state,
            readers=(),
            matching=(),
            chosen=None,
            problem=exc,
        )
    matching = readers if setting is None else tuple(match_readers(readers, setting))
    chosen: ReaderInfo | None = None
    problem: CardError | None = None
    try:
        chosen = choose_reader(readers, setting, wanted)
    except CardError as exc:
        problem = exc
    return ReaderCheck(
        setting=setting,
        preference=wanted,
        service=ServiceState.RUNNING,
        readers=readers,
        matching=matching,
        chosen=chosen,
        problem=problem,
    )
