"""The agent's settings: a TOML file (`config/agent.toml` documents it) and command-line
flags that override it.

Validation is strict and complete: every problem is named in one `ConfigError`, because
the person reading it is an IT technician who should fix the file once, not once per
restart. Unknown keys are errors too, so a misspelt `alowed_origins` cannot silently
leave the agent answering nobody (or a default nobody chose).
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum, unique
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from careid_agent.card import PinPolicy
from careid_agent.errors import ConfigError
from careid_protocol.token import is_valid_origin

log = logging.getLogger(__name__)

DEFAULT_PORT = 47600
#: The agent only ever listens here: never on an address another machine can reach.
LISTEN_ADDRESS = "127.0.0.1"
CONFIG_FILE_NAME = "agent.toml"
CARD_SESSIONS_FILE_NAME = "card-sessions.json"
MAX_ALLOWED_ORIGINS = 64
LOG_LEVELS = ("debug", "info", "warning", "error")


@unique
class PinProviderKind(StrEnum):
    """How the agent asks for the PIN."""

    AUTO = "auto"
    """The reader's PIN pad when it has one, else the desktop dialog."""
    PINPAD = "pinpad"
    """Only a PIN-pad reader (for trusts that require one)."""
    DIALOG = "dialog"
    """A desktop dialog; the terminal when there is no display."""
    TERMINAL = "terminal"
    ENV = "env"
    """`CAREID_AGENT_PIN`: development only, refused without --dev."""


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything `careid-agent serve` needs to know; immutable once loaded."""

    port: int = DEFAULT_PORT
    allowed_origins: tuple[str, ...] = ()
    pin_provider: PinProviderKind = PinProviderKind.AUTO
    pin_policy: PinPolicy = PinPolicy.EVERY_SIGNIN
    pin_timeout: float = 60.0
    reader: str | None = None
    """Use only this reader (exact name or a unique part of it)."""
    reader_preference: tuple[str, ...] = ()
    """Name parts tried in order when several readers hold a card."""
    card_wait: float = 10.0
    """How long a request waits for another sign-in to finish before "card busy"."""
    max_event_streams: int = 8
    event_keepalive: float = 15.0
    removal_notice_timeout: float = 3.0
    removal_notice_attempts: int = 10
    removal_notice_patience: float = 120.0
    """How long a removal notice is tried for: a lost one leaves a session open."""
    log_level: str = "info"
    log_file: Path | None = None
    """Also log here (rotated); a background agent has no terminal to log to."""
    card_sessions_file: Path | None = None
    """Where the card sessions kept are written down, for the next agent to end should
    this one crash (`careid_agent.journal`); None: not written (settings read from a file
    always name one, by default the user's own application state)."""
    dev: bool = False
    source: Path | None = field(default=None, compare=False)
    """The file the settings came from, for the log."""


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """Command-line flags; None (or empty) leaves the file's value."""

    port: int | None = None
    allowed_origins: tuple[str, ...] = ()
    pin_provider: str | None = None
    pin_policy: str | None = None
    reader: str | None = None
    log_level: str | None = None
    log_file: str | None = None
    dev: bool = False


# -- where the file lives -------------------------------------------------------------------


def windows_program_data() -> Path | None:
    """Windows' ProgramData folder as the system knows it (SHGetKnownFolderPath), not as
    the %PROGRAMDATA% variable says: a standard user can set that for their own account.
    None where the lookup is unavailable or fails."""
    import ctypes  # noqa: PLC0415 - Windows only
    from ctypes import wintypes  # noqa: PLC0415

    windll = getattr(ctypes, "windll", None)
    if windll is None:
        return None

    class Guid(ctypes.Structure):
        _fields_ = [  # noqa: RUF012 - ctypes' own declaration
            ("data1", wintypes.DWORD),
            ("data2", wintypes.WORD),
            ("data3", wintypes.WORD),
            ("data4", ctypes.c_ubyte * 8),
        ]

    # FOLDERID_ProgramData {62AB5D82-FDC1-4DC3-A9DD-070D1D495D97}
    folder = Guid(
        0x62AB5D82,
        0xFDC1,
        0x4DC3,
        (ctypes.c_ubyte * 8)(0xA9, 0xDD, 0x07, 0x0D, 0x1D, 0x49, 0x5D, 0x97),
    )
    found = ctypes.c_wchar_p()
    if windll.shell32.SHGetKnownFolderPath(ctypes.byref(folder), 0, None, ctypes.byref(found)):
        return None
    try:
        return Path(found.value) if found.value else None
    finally:
        windll.ole32.CoTaskMemFree(found)


def default_config_paths(
    *,
    platform: str = sys.platform,
    environ: Mapping[str, str] | None = None,
    program_data: Callable[[], Path | None] = windows_program_data,
) -> list[Path]:
    """Where the agent looks for `agent.toml` when no --config is given, machine-wide
    file first.

    The machine-wide file is where a trust's IT department deploys its allow-list and
    PIN policy: when it exists, a file in the user's own profile cannot replace it (to
    widen the sites allowed to ask for signatures, or drop a required PIN pad). The
    user's file is read only on a machine without one. So the machine-wide folder never
    comes from the user's environment: on Windows it is the system's ProgramData.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "win32":
        user = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
        machine = program_data() or Path("C:/ProgramData")
        return [machine / "careid" / CONFIG_FILE_NAME, user / "careid" / CONFIG_FILE_NAME]
    if platform == "darwin":
        support = "Library/Application Support/careid"
        return [Path("/") / support / CONFIG_FILE_NAME, home / support / CONFIG_FILE_NAME]
    user = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return [Path("/etc/careid") / CONFIG_FILE_NAME, user / "careid" / CONFIG_FILE_NAME]


def default_journal_path(
    *, platform: str = sys.platform, environ: Mapping[str, str] | None = None
) -> Path:
    """Where the agent writes down its card sessions when agent.toml names no
    `card_sessions_file`: the user's own local (not roaming) application state."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "win32":
        local = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
        return local / "careid" / CARD_SESSIONS_FILE_NAME
    if platform == "darwin":
        return home / "Library" / "Application Support" / "careid" / CARD_SESSIONS_FILE_NAME
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
    return state / "careid" / CARD_SESSIONS_FILE_NAME


def find_config(paths: Sequence[Path]) -> Path | None:
    """The first existing file among `paths`."""
    return next((path for path in paths if path.is_file()), None)


# -- parsing ------------------------------------------------------------------------------


class _Problems:
    """Collects every problem so one error message names them all."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(f"{self.where}: " + "; ".join(self.items) + ".")


def _number(
    data: Mapping[str, Any], key: str, default: float, low: float, high: float, problems: _Problems
) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(f"{key} must be a number of seconds")
        return default
    if not low <= value <= high:
        problems.add(f"{key} must be between {low:g} and {high:g} (got {value:g})")
        return default
    return float(value)


def _integer(
    data: Mapping[str, Any], key: str, default: int, low: int, high: int, problems: _Problems
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(f"{key} must be a whole number")
        return default
    if not low <= value <= high:
        problems.add(f"{key} must be between {low} and {high} (got {value})")
        return default
    return value


def _strings(data: Mapping[str, Any], key: str, problems: _Problems) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.add(f"{key} must be a list of strings")
        return ()
    return tuple(value)


def _choice(
    data: Mapping[str, Any], key: str, default: str, choices: Sequence[str], problems: _Problems
) -> str:
    value = data.get(key, default)
    if value not in choices:
        problems.add(f"{key} must be one of {', '.join(choices)} (got {value!r})")
        return default
    return str(value)


_KEYS = frozenset(
    {
        "port",
        "allowed_origins",
        "pin_provider",
        "pin_policy",
        "pin_timeout_seconds",
        "reader",
        "reader_preference",
        "card_wait_seconds",
        "max_event_streams",
        "event_keepalive_seconds",
        "removal_notice_timeout_seconds",
        "removal_notice_attempts",
        "removal_notice_patience_seconds",
        "log_level",
        "log_file",
        "card_sessions_file",
    }
)


def _without_default_port(origin: str) -> str | None:
    """`scheme://host` when `origin` spells out its scheme's default port; else None."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme, port) not in (("https", 443), ("http", 80)):
        return None
    return f"{parts.scheme}://{parts.netloc.rpartition(':')[0]}"


def parse_config(
    data: Mapping[str, Any], *, overrides: Overrides | None = None, where: str = "agent settings"
) -> AgentConfig:
    """Settings from a parsed TOML document, with command-line overrides applied."""
    over = overrides or Overrides()
    problems = _Problems(where)
    for key in sorted(set(data) - _KEYS):
        problems.add(f"unknown setting {key!r}")
    merged: dict[str, Any] = dict(data)
    if over.port is not None:
        merged["port"] = over.port
    if over.allowed_origins:
        merged["allowed_origins"] = list(over.allowed_origins)  # the flags replace the list
    for key in ("pin_provider", "pin_policy", "reader", "log_level", "log_file"):
        if getattr(over, key) is not None:
            merged[key] = getattr(over, key)

    dev = over.dev
    port = _integer(merged, "port", DEFAULT_PORT, 0 if dev else 1024, 65535, problems)
    origins = _strings(merged, "allowed_origins", problems)
    if not origins and isinstance(merged.get("allowed_origins", []), list):
        problems.add("allowed_origins must name at least one sign-in page origin")
    if len(origins) > MAX_ALLOWED_ORIGINS:
        problems.add(f"allowed_origins may hold at most {MAX_ALLOWED_ORIGINS} origins")
    for origin in origins:
        bare = _without_default_port(origin)
        if bare is not None:
            # Browsers leave the scheme's default port out of the Origin they send, so
            # this entry could never match and card sign-in would fail without a clue.
            problems.add(
                f"allowed_origins: {origin!r} names its scheme's default port, which"
                f" browsers leave out: write {bare!r}"
            )
        elif not is_valid_origin(origin, allow_dev_http=dev):
            hint = (
                " (http://localhost origins need --dev)"
                if is_valid_origin(origin, allow_dev_http=True)
                else " (write https://host or https://host:port, nothing after it)"
            )
            problems.add(f"allowed_origins: {origin!r} is not an allowed origin{hint}")
    provider = PinProviderKind(
        _choice(merged, "pin_provider", "auto", [k.value for k in PinProviderKind], problems)
    )
    if provider is PinProviderKind.ENV and not dev:
        problems.add("pin_provider 'env' reads the PIN from the environment and needs --dev")
    policy = PinPolicy(
        _choice(merged, "pin_policy", "every-signin", [p.value for p in PinPolicy], problems)
    )
    reader = merged.get("reader") or None
    if reader is not None and not isinstance(reader, str):
        problems.add("reader must be a reader name (a string)")
        reader = None
    log_file = merged.get("log_file") or None
    if log_file is not None and not isinstance(log_file, str):
        problems.add("log_file must be a file path (a string)")
        log_file = None
    sessions_file = merged.get("card_sessions_file") or None
    if sessions_file is not None and not isinstance(sessions_file, str):
        problems.add("card_sessions_file must be a file path (a string)")
        sessions_file = None
    config = AgentConfig(
        port=port,
        allowed_origins=tuple(dict.fromkeys(origins)),
        pin_provider=provider,
        pin_policy=policy,
        pin_timeout=_number(merged, "pin_timeout_seconds", 60, 5, 600, problems),
        reader=reader,
        reader_preference=_strings(merged, "reader_preference", problems),
        card_wait=_number(merged, "card_wait_seconds", 10, 0, 120, problems),
        max_event_streams=_integer(merged, "max_event_streams", 8, 1, 64, problems),
        event_keepalive=_number(merged, "event_keepalive_seconds", 15, 1, 300, problems),
        removal_notice_timeout=_number(
            merged, "removal_notice_timeout_seconds", 3, 0.5, 30, problems
        ),
        removal_notice_attempts=_integer(merged, "removal_notice_attempts", 10, 1, 20, problems),
        removal_notice_patience=_number(
            merged, "removal_notice_patience_seconds", 120, 1, 600, problems
        ),
        log_level=_choice(merged, "log_level", "info", LOG_LEVELS, problems),
        log_file=_expand(log_file) if log_file else None,
        card_sessions_file=_expand(sessions_file) if sessions_file else default_journal_path(),
        dev=dev,
    )
    problems.raise_if_any()
    return config


def _expand(path: str) -> Path:
    # `~` and %LOCALAPPDATA% / $HOME style variables, so one file suits every user.
    return Path(os.path.expanduser(os.path.expandvars(path)))


def load_config(path: Path | None, *, overrides: Overrides | None = None) -> AgentConfig:
    """Read `path` (None: built-in defaults plus the flags) and apply the overrides."""
    if path is None:
        return parse_config({}, overrides=overrides, where="command line")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: the settings file does not exist.") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: the settings file cannot be read ({exc.strerror}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from exc
    return replace(parse_config(data, overrides=overrides, where=str(path)), source=path)
