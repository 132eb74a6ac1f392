"""What a directory is asked: lookup values and passwords, cleaned the same way by the
LDAP adapter and the in-memory directory, so both refuse exactly the same input."""

from __future__ import annotations

from careid_broker.errors import InvalidCredentialsError

# Longer than any real address (RFC 5321 caps a path at 256) or search: refuse, do not
# send the directory a megabyte of filter.
MAX_MAIL_LENGTH = 320
MAX_SEARCH_TEXT = 128
MAX_UUID_LENGTH = 64
# An entry's immutable identifier as the store keeps it (a UUID's text, a GUID's hex).
MAX_ENTRY_ID_LENGTH = 128
# A password longer than this (in UTF-8 bytes) is not a password anyone typed.
MAX_PASSWORD_LENGTH = 1024


def lookup_value(value: str, max_length: int) -> str | None:
    """A value fit to look up (stripped), or None when nothing could match it."""
    value = value.strip()
    if not value or len(value) > max_length:
        return None
    # Escaping keeps a NUL from changing the filter, but OpenLDAP's IA5 matching rules
    # stop reading an assertion at NUL, so "alex@x\0" would match alex@x. No address,
    # UUID or name holds a control character, so such a value matches nothing.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None  # lone surrogates from a broken form: no entry holds those
    return value


def password_bytes(password: str) -> bytes:
    """The password to bind with, or InvalidCredentialsError before any bind.

    An empty password is refused here: a simple bind with a name and no password is an
    "unauthenticated" bind (RFC 4513 §5.1.2), which some servers answer with success
    without checking anything.
    """
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:
        secret = b""  # lone surrogates: nothing anyone could have set as a password
    if not secret or len(secret) > MAX_PASSWORD_LENGTH:
        raise InvalidCredentialsError(detail="empty or unusable password, not sent")
    return secret
