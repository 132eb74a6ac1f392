"""The broker's directory: mail accounts, AUP acceptance and Care Identity records (LDAP).

Services depend on the `Directory` protocol; `LdapDirectory` is the production adapter,
built from a `DirectoryConfig` (see `DirectoryConfig.from_mapping`). `MemoryDirectory`
holds the same data in memory (the demo seed, for the in-process test tier) and answers
as slapd does.
"""

from __future__ import annotations

from careid_broker.directory.acceptance import AupRecordedButUnreadError
from careid_broker.directory.config import DirectoryConfig, PoolStrategy, TlsMode
from careid_broker.directory.ldap import LdapDirectory
from careid_broker.directory.mapping import (
    AccountMapping,
    AttributeMapping,
    CareIdentityMapping,
    StatusKind,
    StatusRule,
)
from careid_broker.directory.memory import MemoryDirectory
from careid_broker.directory.models import CareIdentity, Directory, MailAccount, Role
from careid_broker.directory.policy import account_refusals, check_account, check_care_identity
from careid_broker.directory.values import TimeFormat

__all__ = [
    "AccountMapping",
    "AttributeMapping",
    "AupRecordedButUnreadError",
    "CareIdentity",
    "CareIdentityMapping",
    "Directory",
    "DirectoryConfig",
    "LdapDirectory",
    "MailAccount",
    "MemoryDirectory",
    "PoolStrategy",
    "Role",
    "StatusKind",
    "StatusRule",
    "TimeFormat",
    "TlsMode",
    "account_refusals",
    "check_account",
    "check_care_identity",
]
