"""Which directory attributes hold which facts, and how to read their values.

The defaults are the project's own OpenLDAP schema (config/ldap/careid.ldif);
config/ldap/active-directory.toml is a sample for Active Directory. An empty string for
an optional attribute means "this directory does not keep that fact".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum, unique

from careid_broker.directory.values import TimeFormat, parse_flags
from careid_broker.errors import DirectoryConfigError
from careid_broker.settings import SettingsReader


@unique
class StatusKind(StrEnum):
    """How an attribute says whether something is active."""

    VALUES = "values"  # a word: "active" / "disabled"
    BITFLAG = "bitflag"  # a flags integer where a bit means disabled (AD userAccountControl)


@dataclass(frozen=True, kw_only=True)
class StatusRule:
    """Reads an active/not-active status; anything unrecognised counts as not active."""

    attribute: str
    kind: StatusKind = StatusKind.VALUES
    active_values: tuple[str, ...] = ("active",)
    inactive_values: tuple[str, ...] = ("disabled",)
    disabled_mask: int = 0x2

    def evaluate(self, values: Sequence[str]) -> tuple[bool, str | None]:
        """(active, problem): a missing or unreadable value is not active, and a problem."""
        if not values:
            return False, f"{self.attribute} is missing"
        raw = values[0]
        if self.kind is StatusKind.BITFLAG:
            try:
                flags = parse_flags(raw)
            except ValueError as exc:
                return False, f"{self.attribute}: {exc}"
            return not flags & self.disabled_mask, None
        word = raw.strip().casefold()
        if word in (value.casefold() for value in self.active_values):
            return True, None
        if word in (value.casefold() for value in self.inactive_values):
            return False, None
        return False, f"{self.attribute} value {raw!r} is neither active nor inactive"

    @classmethod
    def read(cls, reader: SettingsReader, *, attribute: str, inactive: str) -> StatusRule:
        """From a settings table (defaults: a word attribute)."""
        rule = cls(
            attribute=reader.attribute("attribute", attribute),
            kind=reader.choice("kind", StatusKind, StatusKind.VALUES),
            active_values=reader.strings("active_values", ("active",)),
            inactive_values=reader.strings("inactive_values", (inactive,)),
            disabled_mask=reader.integer("disabled_mask", 0x2, minimum=1, maximum=0xFFFFFFFF),
        )
        overlap = {v.casefold() for v in rule.active_values} & {
            v.casefold() for v in rule.inactive_values
        }
        if overlap:
            reader.problem("active_values", f"also listed as inactive: {sorted(overlap)}")
        reader.finish()
        return rule


@dataclass(frozen=True, kw_only=True)
class AccountMapping:
    """Where a mail account's facts are kept."""

    object_class: str = "careidMailAccount"
    mail: str = "mail"
    display_name: str = "displayName"
    given_name: str | None = "givenName"
    surname: str | None = "sn"
    status: StatusRule = field(default_factory=lambda: StatusRule(attribute="careidAccountStatus"))
    aup_version: str = "careidAupAcceptedVersion"
    aup_time: str | None = "careidAupAcceptedTime"
    aup_time_format: TimeFormat = TimeFormat.GENERALIZED_TIME
    org_code: str | None = "careidOrgCode"
    admin_org_codes: str | None = "careidAdminOrgCode"
    # AD extensionAttributes hold one string, so several codes are packed into it.
    admin_org_codes_separator: str | None = None
    expiry: str | None = "careidAccountExpires"
    expiry_format: TimeFormat = TimeFormat.GENERALIZED_TIME
    care_identity_uuid: str = "careidCareIdentityUuid"
    # The entry's immutable identifier (OpenLDAP's operational entryUUID, sent only when
    # asked for by name): tells an address given to a new entry, which must get a new
    # `sub`, from the same entry renamed or moved, which keeps its own.
    entry_id: str | None = "entryUUID"
    # A binary identifier (AD's objectGUID) is read as lower-case hex: UTF-8 decoding
    # would blur two GUIDs into one text.
    entry_id_binary: bool = False

    def attributes(self) -> list[str]:
        """Every attribute to request when reading an account."""
        names = [
            self.mail,
            self.display_name,
            self.given_name,
            self.surname,
            self.status.attribute,
            self.aup_version,
            self.aup_time,
            self.org_code,
            self.admin_org_codes,
            self.expiry,
            self.care_identity_uuid,
            self.entry_id,
        ]
        return sorted({name for name in names if name})

    def binary_attributes(self) -> frozenset[str]:
        """Attributes whose values are bytes, to be read as hex (names folded)."""
        if self.entry_id and self.entry_id_binary:
            return frozenset({self.entry_id.casefold()})
        return frozenset()

    @classmethod
    def read(cls, reader: SettingsReader) -> AccountMapping:
        """From a settings table."""
        d = cls()
        mapping = cls(
            object_class=reader.attribute("object_class", d.object_class),
            mail=reader.attribute("mail", d.mail),
            display_name=reader.attribute("display_name", d.display_name),
            given_name=reader.optional_attribute("given_name", d.given_name),
            surname=reader.optional_attribute("surname", d.surname),
            status=StatusRule.read(
                reader.table("status"), attribute=d.status.attribute, inactive="disabled"
            ),
            aup_version=reader.attribute("aup_version", d.aup_version),
            aup_time=reader.optional_attribute("aup_time", d.aup_time),
            aup_time_format=reader.choice("aup_time_format", TimeFormat, d.aup_time_format),
            org_code=reader.optional_attribute("org_code", d.org_code),
            admin_org_codes=reader.optional_attribute("admin_org_codes", d.admin_org_codes),
            admin_org_codes_separator=reader.optional_string("admin_org_codes_separator"),
            expiry=reader.optional_attribute("expiry", d.expiry),
            expiry_format=reader.choice("expiry_format", TimeFormat, d.expiry_format),
            care_identity_uuid=reader.attribute("care_identity_uuid", d.care_identity_uuid),
            entry_id=reader.optional_attribute("entry_id", d.entry_id),
            entry_id_binary=reader.boolean("entry_id_binary", d.entry_id_binary),
        )
        reader.finish()
        return mapping


@dataclass(frozen=True, kw_only=True)
class CareIdentityMapping:
    """Where a Care Identity record's facts are kept."""

    object_class: str = "careidCareIdentity"
    uuid: str = "careidUuid"
    status: StatusRule = field(
        default_factory=lambda: StatusRule(attribute="careidStatus", inactive_values=("inactive",))
    )
    roles: str | None = "careidRole"
    role_field_separator: str = "|"
    roles_separator: str | None = None

    def attributes(self) -> list[str]:
        """Every attribute to request when reading a record."""
        return sorted({name for name in (self.uuid, self.status.attribute, self.roles) if name})

    @classmethod
    def read(cls, reader: SettingsReader) -> CareIdentityMapping:
        """From a settings table."""
        d = cls()
        mapping = cls(
            object_class=reader.attribute("object_class", d.object_class),
            uuid=reader.attribute("uuid", d.uuid),
            status=StatusRule.read(
                reader.table("status"), attribute=d.status.attribute, inactive="inactive"
            ),
            roles=reader.optional_attribute("roles", d.roles),
            role_field_separator=reader.string("role_field_separator", d.role_field_separator),
            roles_separator=reader.optional_string("roles_separator"),
        )
        if mapping.roles_separator and mapping.roles_separator == mapping.role_field_separator:
            reader.problem("roles_separator", "must differ from role_field_separator")
        reader.finish()
        return mapping


@dataclass(frozen=True, kw_only=True)
class AttributeMapping:
    """The whole mapping: mail accounts and Care Identity records."""

    accounts: AccountMapping = field(default_factory=AccountMapping)
    care_identities: CareIdentityMapping = field(default_factory=CareIdentityMapping)

    @classmethod
    def read(cls, reader: SettingsReader) -> AttributeMapping:
        """From a settings table; problems go to the reader's list."""
        mapping = cls(
            accounts=AccountMapping.read(reader.table("accounts")),
            care_identities=CareIdentityMapping.read(reader.table("care_identities")),
        )
        reader.finish()
        return mapping

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, where: str = "mapping"
    ) -> AttributeMapping:
        """From a dict (a parsed TOML table), raising one error that names every problem."""
        problems: list[str] = []
        mapping = cls.read(SettingsReader(data, where, problems))
        if problems:
            raise DirectoryConfigError(problems)
        return mapping
