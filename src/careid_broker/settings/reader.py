"""Typed reading of a TOML-shaped settings table that names every problem at once.

An administrator fixing a configuration wants the whole list, not one fault per restart,
so readers record problems ("directory.urls[1]: ...") and return a placeholder; the
caller raises once, with all of them, when it has read everything.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)

# RFC 4512 §1.4: an attribute description is a short name (descr) or a numeric OID.
# Names from configuration are written into filters unescaped, so only these shapes pass.
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-2](?:\.(?:0|[1-9][0-9]*))+")


def is_attribute_name(text: str) -> bool:
    """Whether text is a plain LDAP attribute name or numeric OID."""
    return _ATTRIBUTE_NAME.fullmatch(text) is not None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The closest known name as "; did you mean 'x'?", or "" when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    if not close:
        # difflib compares characters exactly: a short name in capitals ("DEV") is not close.
        close = [k for k in sorted(set(known)) if k.casefold() == name.casefold()][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


def not_utf8(exc: UnicodeDecodeError) -> str:
    """What to say of a settings file that is not UTF-8 (an editor set to Latin-1): the
    line, never the bytes, since the file may hold a password."""
    line = exc.object.count(b"\n", 0, exc.start) + 1
    return f"is not UTF-8 text (line {line}): save it as UTF-8"


_SECRET_WORDS = frozenset({"password", "passphrase"})


def _names_a_secret(key: str) -> bool:
    return not _SECRET_WORDS.isdisjoint(key.lower().split("_"))


class SettingsReader:
    """Reads one table; problems go to a list shared with nested readers."""

    def __init__(self, data: object, where: str, problems: list[str]) -> None:
        self._where = where
        self._problems = problems
        self._seen: set[str] = set()
        if isinstance(data, Mapping):
            self._data: Mapping[str, object] = data
        else:
            self._data = {}
            self.problem(None, f"must be a table, not {type(data).__name__}")

    def problem(self, key: str | None, text: str) -> None:
        """Record a problem with a key of this table (or the table itself)."""
        self._problems.append(f"{self.path(key)}: {text}")

    def path(self, key: str | None) -> str:
        """The dotted name of a key, for messages."""
        if key is None:
            return self._where
        return f"{self._where}.{key}" if self._where else key

    @property
    def data(self) -> Mapping[str, object]:
        """The table being read (empty when it was absent or not a table)."""
        return self._data

    @property
    def problem_count(self) -> int:
        """How many problems have been recorded so far (by every reader of this file)."""
        return len(self._problems)

    def problems_found(self, problems: Iterable[str]) -> None:
        """Record problems another reader of this table has already named in full."""
        self._problems.extend(problems)

    def has(self, key: str) -> bool:
        """Whether the key is present."""
        return key in self._data

    def _get(self, key: str) -> object:
        self._seen.add(key)
        return self._data.get(key)

    def string(self, key: str, default: str | None = None) -> str:
        """A non-empty string; required when there is no default."""
        value = self._get(key)
        if value is None:
            if default is None:
                self.problem(key, "is required")
                return ""
            return default
        if not isinstance(value, str) or not value.strip():
            self.problem(key, "must be a non-empty string")
            return default or ""
        return value.strip()

    def optional_string(self, key: str) -> str | None:
        """A string, or None when absent or empty; an empty password or passphrase is a
        problem, never "none"."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key, "must be a string")
            return None
        if not value.strip() and _names_a_secret(key):
            # An empty environment variable (a template left unfilled) would otherwise
            # mean "no passphrase" and quietly override the one in the file.
            self.problem(key, "is set but empty: give it a value, or remove it for none")
            return None
        return value.strip() or None

    def attribute(self, key: str, default: str | None) -> str:
        """An attribute name; required when there is no default."""
        value = self.string(key, default)
        if value and not is_attribute_name(value):
            self.problem(key, f"{value!r} is not an LDAP attribute name")
        return value

    def optional_attribute(self, key: str, default: str | None) -> str | None:
        """An attribute name, or None when set to "" (not kept in this directory)."""
        if not self.has(key):
            return default
        value = self.optional_string(key)
        if value is not None and not is_attribute_name(value):
            self.problem(key, f"{value!r} is not an LDAP attribute name")
        return value

    def strings(
        self, key: str, default: tuple[str, ...], *, allow_empty: bool = False
    ) -> tuple[str, ...]:
        """A non-empty list of non-empty strings (or an empty one, with `allow_empty`)."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, list)
            or (not value and not allow_empty)
            or not all(isinstance(item, str) and item.strip() for item in value)
        ):
            kind = "a list" if allow_empty else "a non-empty list"
            self.problem(key, f"must be {kind} of non-empty strings")
            return default
        return tuple(str(item).strip() for item in value)

    def choices(self, key: str, kind: type[E]) -> tuple[E, ...]:
        """A list of an enumeration's values (a single string is a list of one), in the
        order given and without repeats; each unknown value is named as a problem."""
        chosen: list[E] = []
        for name in self.strings(key, ()):
            try:
                chosen.append(kind(name))
            except ValueError:
                allowed = ", ".join(member.value for member in kind)
                self.problem(key, f"{name!r} is not one of: {allowed}")
        return tuple(dict.fromkeys(chosen))

    def number(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        """A number within [minimum, maximum]."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, "must be a number")
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"must be between {minimum:g} and {maximum:g}")
            return default
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        """An integer within [minimum, maximum] (TOML also allows 0x2 for flags)."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, "must be a whole number")
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"must be between {minimum} and {maximum}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, "must be true or false")
            return default
        return value

    def choice(self, key: str, kind: type[E], default: E) -> E:
        """One of an enumeration's values."""
        value = self._get(key)
        if value is None:
            return default
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            self.problem(key, f"must be one of: {allowed}")
            return default

    def table(self, key: str) -> SettingsReader:
        """A nested table (empty when absent)."""
        value = self._get(key)
        return SettingsReader({} if value is None else value, self.path(key), self._problems)

    def finish(self) -> None:
        """Name keys nobody read: usually a typing mistake that would silently not apply."""
        # Every setting a reader knows is asked for (present or not), so what it asked
        # for is the list a misspelt name is compared with.
        for key in sorted(set(self._data) - self._seen):
            self.problem(key, f"is not a known setting{did_you_mean(key, self._seen)}")
