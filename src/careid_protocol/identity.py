"""Which Care Identity a certificate names: the rule the agent and the broker share.

A Care Identity UUID is a 12-digit number. Care Identity certificates carry it in the
subject; where exactly varies by issuer and era, so the rule is configurable: an ordered
list of subject attributes (default serialNumber, then CN) and a pattern the value must
match in full (default twelve digits). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

#: Attribute names accepted in configuration (RFC 4514 short names and a few long ones).
ATTRIBUTE_NAMES: dict[str, x509.ObjectIdentifier] = {
    "serialNumber": NameOID.SERIAL_NUMBER,
    "CN": NameOID.COMMON_NAME,
    "commonName": NameOID.COMMON_NAME,
    "UID": NameOID.USER_ID,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "pseudonym": NameOID.PSEUDONYM,
}

DEFAULT_PATTERN = r"^[0-9]{12}$"


def attribute_oid(name: str) -> x509.ObjectIdentifier:
    """The OID for a configured attribute: a known name or a dotted OID ("2.5.4.5")."""
    if name in ATTRIBUTE_NAMES:
        return ATTRIBUTE_NAMES[name]
    if re.fullmatch(r"[0-2](\.[0-9]+)+", name):
        return x509.ObjectIdentifier(name)
    raise ValueError(f"unknown subject attribute {name!r}")


@dataclass(frozen=True, kw_only=True)
class IdentityRule:
    """Where the UUID lives: subject attributes tried in order, and its pattern."""

    attributes: tuple[x509.ObjectIdentifier, ...] = (
        NameOID.SERIAL_NUMBER,
        NameOID.COMMON_NAME,
    )
    pattern: str = DEFAULT_PATTERN
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.attributes:
            raise ValueError("an identity rule needs at least one attribute")
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"invalid identity pattern: {exc}") from exc
        object.__setattr__(self, "_compiled", compiled)

    @classmethod
    def from_config(
        cls, attributes: Sequence[str] | None = None, pattern: str | None = None
    ) -> IdentityRule:
        """A rule from configuration strings (attribute names or dotted OIDs)."""
        defaults = cls()
        return cls(
            attributes=(
                tuple(attribute_oid(a) for a in attributes)
                if attributes is not None
                else defaults.attributes
            ),
            pattern=pattern if pattern is not None else defaults.pattern,
        )

    def matches(self, value: str) -> bool:
        """Whether a value is a UUID under this rule.

        `fullmatch`, not `match`: with `$` alone, "555000000001\\n" would pass.
        """
        return self._compiled.fullmatch(value) is not None


DEFAULT_RULE = IdentityRule()


def uuid_from_certificate(
    certificate: x509.Certificate, rule: IdentityRule = DEFAULT_RULE
) -> str | None:
    """The Care Identity UUID the certificate names, or None.

    The first attribute (in the rule's order) with a matching value decides. If that
    attribute has two different matching values the certificate is ambiguous and names
    no one: guessing an identity is worse than refusing.
    """
    subject = certificate.subject
    for oid in rule.attributes:
        found = {
            value
            for attr in subject.get_attributes_for_oid(oid)
            if isinstance(value := attr.value, str) and rule.matches(value)
        }
        if len(found) == 1:
            return found.pop()
        if found:
            return None
    return None


def holder_name(certificate: x509.Certificate) -> str:
    """The card holder's name: the subject CN, else the whole subject (RFC 4514)."""
    for attr in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attr.value, str) and attr.value.strip():
            return attr.value.strip()
    return certificate.subject.rfc4514_string()
