"""The `[oidc]` section of broker.toml and the client registry it points at."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from careid_broker.oidc.clients import (
    ALL_AUTH_METHODS,
    AuthMethod,
    CardRemoval,
    ClientDefaults,
    ClientRegistry,
    load_clients,
)
from careid_broker.oidc.errors import OidcConfigError
from careid_broker.settings import SettingsReader, not_utf8
from careid_broker.store import RetryPolicy

DEFAULT_CLIENTS_FILE = "clients.toml"


@dataclass(frozen=True, kw_only=True)
class OidcConfig:
    """Lifetimes, PKCE policy, signing key passphrase and the declared clients."""

    clients_file: Path
    clients: ClientRegistry = field(compare=False)
    # The token endpoint's client authentication methods this deployment accepts.
    auth_methods: frozenset[AuthMethod] = ALL_AUTH_METHODS
    # What card removal does to an RP that does not say (its `card_removal`).
    card_removal: CardRemoval = CardRemoval.LOGOUT
    # Organisation names by ODS code (upper case), for role selection and claims.
    organisations: Mapping[str, str] = field(default_factory=dict, compare=False)
    code_lifetime_seconds: int = 60
    access_token_lifetime_seconds: int = 600
    refresh_token_lifetime_seconds: int = 28800
    id_token_lifetime_seconds: int = 300
    signing_key_passphrase: str | None = field(default=None, repr=False)
    # While the passphrase changes (`keys reencrypt`): keys still under the old one load.
    signing_key_previous_passphrase: str | None = field(default=None, repr=False)
    require_pkce: bool = True
    # Back-channel logout delivery (OIDC Back-Channel Logout 1.0 §2.7).
    backchannel_worker: bool = True
    backchannel_timeout_seconds: float = 5.0
    backchannel_max_attempts: int = 8
    backchannel_first_retry_seconds: float = 5.0
    backchannel_poll_seconds: float = 2.0

    @property
    def code_ttl(self) -> timedelta:
        """How long an authorization code may be redeemed."""
        return timedelta(seconds=self.code_lifetime_seconds)

    @property
    def access_token_ttl(self) -> timedelta:
        """Access token lifetime."""
        return timedelta(seconds=self.access_token_lifetime_seconds)

    @property
    def refresh_token_ttl(self) -> timedelta:
        """Refresh token lifetime."""
        return timedelta(seconds=self.refresh_token_lifetime_seconds)

    @property
    def id_token_ttl(self) -> timedelta:
        """ID token lifetime (its `exp`)."""
        return timedelta(seconds=self.id_token_lifetime_seconds)

    @property
    def key_passphrase(self) -> bytes | None:
        """The signing key passphrase as `Repositories.build(key_passphrase=…)` takes it."""
        if self.signing_key_passphrase is None:
            return None
        return self.signing_key_passphrase.encode("utf-8")

    @property
    def key_previous_passphrase(self) -> bytes | None:
        """The passphrase being replaced, as `Repositories.build` takes it."""
        if self.signing_key_previous_passphrase is None:
            return None
        return self.signing_key_previous_passphrase.encode("utf-8")

    @property
    def logout_retry(self) -> RetryPolicy:
        """The outbox retry policy (`Repositories.build(logout_retry=…)`)."""
        return RetryPolicy(
            max_attempts=self.backchannel_max_attempts,
            first_delay=timedelta(seconds=self.backchannel_first_retry_seconds),
        )

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, object],
        *,
        base_dir: Path,
    ) -> OidcConfig:
        """From the parsed `[oidc]` table; `OidcConfigError` names every problem.

        `clients_file` is relative to `base_dir` (the folder of broker.toml).
        """
        problems: list[str] = []
        reader = SettingsReader(data, "oidc", problems)
        clients_file = base_dir / reader.string("clients_file", DEFAULT_CLIENTS_FILE)
        require_pkce = reader.boolean("require_pkce", True)
        passphrase = _passphrase(reader)
        previous_passphrase = reader.optional_string("signing_key_previous_passphrase")
        code = reader.integer("code_lifetime_seconds", 60, minimum=5, maximum=600)
        access = reader.integer("access_token_lifetime_seconds", 600, minimum=30, maximum=86400)
        refresh = reader.integer(
            "refresh_token_lifetime_seconds", 28800, minimum=60, maximum=30 * 86400
        )
        id_token = reader.integer("id_token_lifetime_seconds", 300, minimum=30, maximum=86400)
        worker = reader.boolean("backchannel_worker", True)
        timeout = reader.number("backchannel_timeout_seconds", 5.0, minimum=0.1, maximum=60)
        attempts = reader.integer("backchannel_max_attempts", 8, minimum=1, maximum=50)
        first_retry = reader.number(
            "backchannel_first_retry_seconds", 5.0, minimum=0.0, maximum=3600
        )
        poll = reader.number("backchannel_poll_seconds", 2.0, minimum=0.05, maximum=300)
        auth_methods = _auth_methods(reader)
        card_removal = reader.choice("card_removal", CardRemoval, CardRemoval.LOGOUT)
        organisations_text = reader.optional_string("organisations_file")
        reader.finish()
        organisations: dict[str, str] = {}
        if organisations_text is not None:
            organisations = _organisations(base_dir / organisations_text, problems)
        clients = ClientRegistry({})
        defaults = ClientDefaults(
            require_pkce=require_pkce, auth_methods=auth_methods, card_removal=card_removal
        )
        try:
            clients = load_clients(clients_file, defaults=defaults)
        except OidcConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise OidcConfigError(problems)
        return cls(
            clients_file=clients_file,
            clients=clients,
            auth_methods=auth_methods,
            card_removal=card_removal,
            organisations=organisations,
            signing_key_passphrase=passphrase,
            signing_key_previous_passphrase=previous_passphrase,
            require_pkce=require_pkce,
            code_lifetime_seconds=code,
            access_token_lifetime_seconds=access,
            refresh_token_lifetime_seconds=refresh,
            id_token_lifetime_seconds=id_token,
            backchannel_worker=worker,
            backchannel_timeout_seconds=timeout,
            backchannel_max_attempts=attempts,
            backchannel_first_retry_seconds=first_retry,
            backchannel_poll_seconds=poll,
        )


def _auth_methods(reader: SettingsReader) -> frozenset[AuthMethod]:
    if not reader.has("token_endpoint_auth_methods"):
        return ALL_AUTH_METHODS
    methods = frozenset(reader.choices("token_endpoint_auth_methods", AuthMethod))
    if not methods:
        reader.problem("token_endpoint_auth_methods", "must name at least one method")
        return ALL_AUTH_METHODS
    return methods


def _organisations(path: Path, problems: list[str]) -> dict[str, str]:
    """`ods_code,name` lines (a header line `ods_code,name` is allowed), by upper-case code."""
    names: dict[str, str] = {}
    try:
        # Decoded whole, so a byte that is not UTF-8 is named by its line.
        text = path.read_bytes().decode("utf-8")
        for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            if not row or row[0].startswith("#") or (number == 1 and row[0] == "ods_code"):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                problems.append(f"oidc.organisations_file: {path}:{number}: want 'ods_code,name'")
                continue
            names[row[0].strip().upper()] = row[1].strip()
    except OSError as exc:
        problems.append(f"oidc.organisations_file: {str(path)!r} cannot be read: {exc.strerror}")
    except UnicodeDecodeError as exc:
        problems.append(f"oidc.organisations_file: {path}: {not_utf8(exc)}")
    except csv.Error as exc:
        problems.append(f"oidc.organisations_file: {path}: {exc}")
    return names


def _passphrase(reader: SettingsReader) -> str | None:
    # Better set as CAREID_OIDC_SIGNING_KEY_PASSPHRASE: the broker's environment
    # overrides (config_env) put it here before this table is read.
    return reader.optional_string("signing_key_passphrase")


def read_oidc_config(reader: SettingsReader, *, base_dir: Path) -> OidcConfig | None:
    """`[oidc]` through the shared reader; None when it named a problem."""
    try:
        return OidcConfig.from_mapping(reader.data, base_dir=base_dir)
    except OidcConfigError as exc:
        reader.problems_found(exc.problems)
        return None
