"""LDAP search filters (RFC 4515), built so no value can change a filter's shape.

Every value from outside — a typed email address, a UUID from a certificate, an
administrator's search text — passes through `escape_filter_chars`, which writes `*`,
`(`, `)`, `\\` and NUL as `\\2a`, `\\28`, `\\29`, `\\5c`, `\\00`. Attribute names come
only from the validated attribute mapping, never from a request.
"""

from __future__ import annotations

from collections.abc import Iterable

from ldap3.utils.conv import escape_filter_chars

from careid_broker.settings import is_attribute_name


def _attribute(name: str) -> str:
    # The mapping is validated at load time; this guards against a mapping built in code.
    if not is_attribute_name(name):
        raise ValueError(f"not an LDAP attribute name: {name!r}")
    return name


def escape(value: str) -> str:
    """A value escaped for use inside a filter."""
    return str(escape_filter_chars(value))


def equals(attribute: str, value: str) -> str:
    """(attribute=value), value escaped."""
    return f"({_attribute(attribute)}={escape(value)})"


def contains(attribute: str, value: str) -> str:
    """(attribute=*value*), value escaped: a substring match."""
    return f"({_attribute(attribute)}=*{escape(value)}*)"


def all_of(*parts: str) -> str:
    """(&...)."""
    return parts[0] if len(parts) == 1 else "(&" + "".join(parts) + ")"


def any_of(parts: Iterable[str]) -> str:
    """(|...); at least one part."""
    items = list(parts)
    if not items:
        raise ValueError("an OR filter needs at least one part")
    return items[0] if len(items) == 1 else "(|" + "".join(items) + ")"
