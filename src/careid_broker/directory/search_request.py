"""LDAP searches whose SearchRequest is written in BER directly (RFC 4511 §4.5.1, X.690).

ldap3 builds each request as a tree of pyasn1 objects, turns it back into a dict for
its bookkeeping, then BER-encodes the tree: about two thirds of the CPU of a search
(some 0.4 ms), and every sign-in searches twice. The searches the broker sends are
few in shape — equality, presence and substring assertions joined by AND, OR and NOT,
as `filters` writes them — so this module parses exactly that subset of RFC 4515 and
writes the message itself; tests check the bytes are ldap3's own. `send_search` puts
it on the ldap3 connection's socket and lets ldap3 read and decode the answer as for
its own searches. A filter outside the subset, or a connection in a state this path
does not expect, goes through `Connection.search` as before.

ldap3 (2.9.1, locked) has no public way to send a request it did not build; this uses
three of its connection's internals (the message-id counter, the outstanding-request
table its response reader consults, the socket), all of which that release's own
`Connection.search` uses the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ldap3 import Connection
from ldap3.core.exceptions import LDAPSocketSendError

# Universal and LDAP tags (X.690 §8, RFC 4511 §4.1.1, §4.5.1).
_BOOLEAN, _INTEGER, _OCTET_STRING, _ENUMERATED, _SEQUENCE = 0x01, 0x02, 0x04, 0x0A, 0x30
_SEARCH_REQUEST = 0x63  # [APPLICATION 3], constructed
_AND, _OR, _NOT = 0xA0, 0xA1, 0xA2
_EQUALITY, _SUBSTRINGS, _PRESENT = 0xA3, 0xA4, 0x87
_INITIAL, _ANY, _FINAL = 0x80, 0x81, 0x82
# derefAliases: derefAlways, as ldap3 sends by default.
DEREF_ALWAYS = 3

_ATTRIBUTE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.;-]*")
_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2})")


class _Unsupported(ValueError):
    """A filter outside the subset this module writes."""


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _integer(tag: int, value: int) -> bytes:
    if value < 0:
        raise _Unsupported("negative integers are not sent")
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _value(text: str) -> bytes:
    """An assertion value: UTF-8, with RFC 4515 `\\xx` escapes turned into their octet."""
    if "\\" in _ESCAPE.sub("", text):
        raise _Unsupported("a backslash that escapes nothing")
    if "\\" not in text:
        return text.encode("utf-8")
    out = bytearray()
    position = 0
    for escape in _ESCAPE.finditer(text):
        out += text[position : escape.start()].encode("utf-8")
        out.append(int(escape.group(1), 16))
        position = escape.end()
    out += text[position:].encode("utf-8")
    return bytes(out)


def _item(text: str) -> bytes:
    """One `attr=value` assertion (equality, presence or substrings)."""
    attribute, equals, value = text.partition("=")
    if not equals or not _ATTRIBUTE.fullmatch(attribute) or attribute.endswith(("~", ">", "<")):
        raise _Unsupported(f"not a simple assertion: {text!r}")
    if any(character in value for character in "()"):
        raise _Unsupported("unescaped parenthesis in a value")
    if value != value.strip():
        # ldap3 strips a value's outer white space before sending it: leave it to ldap3,
        # so such a search asks exactly what it asked before.
        raise _Unsupported("white space around a value")
    name = _tlv(_OCTET_STRING, attribute.encode("ascii"))
    if value == "*":
        return _tlv(_PRESENT, attribute.encode("ascii"))
    if "*" not in value:
        return _tlv(_EQUALITY, name + _tlv(_OCTET_STRING, _value(value)))
    parts = value.split("*")
    pieces = []
    if parts[0]:
        pieces.append(_tlv(_INITIAL, _value(parts[0])))
    for middle in parts[1:-1]:
        if not middle:
            raise _Unsupported("an empty substring between two asterisks")
        pieces.append(_tlv(_ANY, _value(middle)))
    if parts[-1]:
        pieces.append(_tlv(_FINAL, _value(parts[-1])))
    return _tlv(_SUBSTRINGS, name + _tlv(_SEQUENCE, b"".join(pieces)))


def _filter(text: str, position: int) -> tuple[bytes, int]:
    """The filter starting at `position` (an opening parenthesis), and where it ends."""
    if position >= len(text) or text[position] != "(":
        raise _Unsupported("a filter must start with '('")
    position += 1
    if position >= len(text):
        raise _Unsupported("unterminated filter")
    kind = text[position]
    if kind in "&|!":
        position += 1
        parts: list[bytes] = []
        while position < len(text) and text[position] == "(":
            encoded, position = _filter(text, position)
            parts.append(encoded)
        if position >= len(text) or text[position] != ")" or not parts:
            raise _Unsupported("malformed filter list")
        if kind == "!":
            if len(parts) != 1:
                raise _Unsupported("NOT takes one filter")
            return _tlv(_NOT, parts[0]), position + 1
        return _tlv(_AND if kind == "&" else _OR, b"".join(parts)), position + 1
    end = text.find(")", position)
    if end < 0:
        raise _Unsupported("unterminated assertion")
    return _item(text[position:end]), end + 1


def encode_filter(search_filter: str) -> bytes | None:
    """The BER Filter for an RFC 4515 string in the supported subset, else None."""
    try:
        encoded, end = _filter(search_filter, 0)
    except _Unsupported:
        return None
    return encoded if end == len(search_filter) else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Search:
    """One search as the broker asks it (RFC 4511 §4.5.1; aliases always dereferenced,
    values and not only types wanted)."""

    base: str
    scope: int  # 0 base object, 2 whole subtree
    size_limit: int
    time_limit: int
    search_filter: str
    attributes: Sequence[str]

    def as_ldap3_request(self) -> dict[str, Any]:
        """The request as ldap3 keeps it for the search it has sent."""
        return {
            "base": self.base,
            "scope": self.scope,
            "dereferenceAlias": DEREF_ALWAYS,
            "sizeLimit": self.size_limit,
            "timeLimit": self.time_limit,
            "typesOnly": False,
            "filter": self.search_filter,
            "attributes": list(self.attributes),
            "type": "searchRequest",
            "controls": None,
        }


def search_message(message_id: int, search: Search) -> bytes | None:
    """The whole LDAPMessage for this search (no controls), or None when it is outside
    the subset (let ldap3 encode it)."""
    encoded_filter = encode_filter(search.search_filter)
    if encoded_filter is None:
        return None
    try:
        request = b"".join(
            (
                _tlv(_OCTET_STRING, search.base.encode("utf-8")),
                _integer(_ENUMERATED, search.scope),
                _integer(_ENUMERATED, DEREF_ALWAYS),
                _integer(_INTEGER, search.size_limit),
                _integer(_INTEGER, search.time_limit),
                _tlv(_BOOLEAN, b"\x00"),
                encoded_filter,
                _tlv(
                    _SEQUENCE,
                    b"".join(
                        _tlv(_OCTET_STRING, name.encode("utf-8")) for name in search.attributes
                    ),
                ),
            )
        )
        return _tlv(_SEQUENCE, _integer(_INTEGER, message_id) + _tlv(_SEARCH_REQUEST, request))
    except _Unsupported:
        return None


def send_search(connection: Connection, search: Search) -> bool:
    """Run the search on `connection` with a directly written request; afterwards
    `connection.result` and `connection.response` are what `Connection.search` leaves.

    False (nothing sent) when the search is outside the subset or the connection is not
    a plain synchronous one bound by a simple bind: the caller then uses
    `Connection.search`.
    """
    strategy: Any = connection.strategy
    if (
        connection.lazy
        or not connection.listening
        or connection.sasl_mechanism is not None
        or connection.usage
        or not strategy.sync
    ):
        return False
    with connection.connection_lock:
        message_id = connection.server.next_message_id()
        message = search_message(message_id, search)
        if message is None:
            # Outside the subset (or a negative limit: ldap3 says what it makes of it).
            # The id stays unused: RFC 4511 asks only that ids in use be unique.
            return False
        # What ldap3's response reader looks up for a search it sent.
        request = search.as_ldap3_request()
        connection.request = request
        strategy._outstanding[message_id] = request  # noqa: SLF001 - see the module doc
        try:
            connection.socket.sendall(message)
        except OSError as exc:
            strategy._outstanding.pop(message_id, None)  # noqa: SLF001
            connection.last_error = f"socket sending error {exc}"
            raise LDAPSocketSendError(connection.last_error) from exc
        strategy.post_send_search(message_id)
    return True
