"""The `[admin]` and `[api]` sections of broker.toml.

    [admin]
    rights_cache_seconds = 300     # how long an administrator's rights are trusted

    [api]
    token_lifetime_seconds = 600
    [api.clients.rx1-registrations]
    name = "RX1 joiners and leavers tool"
    secret_hash = "scrypt$14$8$1$…"   # careid-broker clients hash-secret
    scopes = ["registrations:read", "registrations:write"]
    org_codes = ["RX1"]

An API client is a machine, not a relying party: it has no redirect URI and never signs
a person in, so it is declared here rather than in clients.toml, and its id may not be
a relying party's id too (a token is known by its client id in the store).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum, unique

from careid_broker.oidc.client_secrets import SecretHash, parse_secret_hash, verify_secret
from careid_broker.settings import SettingsReader

# Rights are re-read from the directory at least this often (the promise: a
# revoked administrator loses access within five minutes).
MAX_RIGHTS_CACHE_SECONDS = 300
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ORG_CODE = re.compile(r"[A-Za-z0-9]{1,32}")


@unique
class ApiScope(StrEnum):
    """What an API token may do."""

    READ = "registrations:read"
    WRITE = "registrations:write"


@dataclass(frozen=True, kw_only=True)
class AdminSettings:
    """`[admin]`: the console's limits and how long administrator rights are cached."""

    rights_cache: timedelta = timedelta(seconds=MAX_RIGHTS_CACHE_SECONDS)
    search_limit: int = 50
    recent_signins: int = 10
    audit_entries: int = 50


@dataclass(frozen=True, kw_only=True)
class ApiClient:
    """A machine client of the registrations API; `secret` is a hash, never the secret."""

    client_id: str
    name: str
    secret: SecretHash = field(repr=False)
    scopes: frozenset[ApiScope]
    org_codes: frozenset[str]

    def check_secret(self, presented: str) -> bool:
        """Whether the presented secret matches the stored hash."""
        # Imported here: broker.toml is read (this module) before the OP package loads.

        return verify_secret(presented, self.secret)


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """`[api]`: token lifetime and the declared API clients."""

    token_lifetime: timedelta = timedelta(seconds=600)
    clients: Mapping[str, ApiClient] = field(default_factory=dict)

    def client(self, client_id: str) -> ApiClient | None:
        """The client with that id, or None."""
        return self.clients.get(client_id)


def org_key(code: str) -> str:
    """The form organisation codes are compared in (ODS codes are case-insensitive)."""
    return code.strip().upper()


def is_org_code(code: str) -> bool:
    """Whether the text (spaces aside) can be an organisation (ODS) code: ASCII letters
    and digits only, as an API client's `org_codes` must be."""
    return _ORG_CODE.fullmatch(code.strip()) is not None


def read_admin_settings(reader: SettingsReader) -> AdminSettings:
    """`[admin]`; problems go to the reader."""
    settings = AdminSettings(
        rights_cache=timedelta(
            seconds=reader.integer(
                "rights_cache_seconds",
                MAX_RIGHTS_CACHE_SECONDS,
                minimum=0,
                maximum=MAX_RIGHTS_CACHE_SECONDS,
            )
        ),
        search_limit=reader.integer("search_limit", 50, minimum=1, maximum=200),
        recent_signins=reader.integer("recent_signins", 10, minimum=1, maximum=100),
        audit_entries=reader.integer("audit_entries", 50, minimum=1, maximum=500),
    )
    reader.finish()
    return settings


def read_api_settings(
    reader: SettingsReader, *, reserved_client_ids: Collection[str] = ()
) -> ApiSettings:
    """`[api]`; `reserved_client_ids` are the relying parties' ids; problems go to the
    reader."""
    lifetime = reader.integer("token_lifetime_seconds", 600, minimum=60, maximum=3600)
    clients_reader = reader.table("clients")
    raw = reader.data.get("clients")
    clients: dict[str, ApiClient] = {}
    if isinstance(raw, Mapping):
        for client_id in raw:
            client = _client(clients_reader.table(client_id), client_id, reserved_client_ids)
            if client is not None:
                clients[client_id] = client
    reader.finish()
    return ApiSettings(token_lifetime=timedelta(seconds=lifetime), clients=clients)


def _client(reader: SettingsReader, client_id: str, reserved: Collection[str]) -> ApiClient | None:
    problems_before = reader.problem_count
    if not _CLIENT_ID.fullmatch(client_id):
        reader.problem(None, "a client id is 1-64 letters, digits, '.', '_' or '-'")
    if client_id in reserved:
        reader.problem(None, "is also a relying party's client id in the clients file")
    name = reader.string("name", client_id)
    secret: SecretHash | None = None
    if reader.has("secret"):
        reader.optional_string("secret")
        reader.problem("secret", "plain secrets are not accepted: store secret_hash instead")
    text = reader.string("secret_hash")
    if text:
        try:
            secret = parse_secret_hash(text)
        except ValueError as exc:
            reader.problem("secret_hash", str(exc))
    scopes = set(reader.choices("scopes", ApiScope))
    if not scopes and not reader.has("scopes"):
        reader.problem("scopes", "is required (registrations:read and/or registrations:write)")
    orgs = reader.strings("org_codes", ())
    if not orgs:
        # A client with no organisation could do nothing; saying so beats silence.
        reader.problem("org_codes", "is required: the organisations (ODS codes) it may act on")
    for code in orgs:
        if not _ORG_CODE.fullmatch(code):
            reader.problem("org_codes", f"{code!r} is not an organisation (ODS) code")
    reader.finish()
    if secret is None or reader.problem_count != problems_before:
        return None
    return ApiClient(
        client_id=client_id,
        name=name,
        secret=secret,
        scopes=frozenset(scopes),
        org_codes=frozenset(org_key(code) for code in orgs),
    )
