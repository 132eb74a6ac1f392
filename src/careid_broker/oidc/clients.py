"""The relying parties declared in `config/clients.toml`, checked when loaded.

    [clients.webmail]
    name = "Webmail (demo)"
    secret_hash = "scrypt$14$8$1$…"        # careid-broker clients hash-secret
    redirect_uris = ["http://localhost:5001/callback"]
    post_logout_redirect_uris = ["http://localhost:5001/"]
    backchannel_logout_uri = "http://localhost:5001/backchannel-logout"
    scopes = ["openid", "profile", "email", "nationalrbacaccess", "associatedorgs"]
    card_removal = "logout"                 # or "none"; default from [oidc] card_removal
    default_acr_values = ["AAL3_ANY"]       # card only, whatever the request says

Every problem in the file is collected and reported together (`OidcConfigError`).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum, unique
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from careid_broker.assurance import SUPPORTED_ACR_VALUES
from careid_broker.oidc.client_secrets import SecretHash, parse_secret_hash, verify_secret
from careid_broker.oidc.errors import OidcConfigError
from careid_broker.settings import SettingsReader, not_utf8


@unique
class AuthMethod(StrEnum):
    """Token endpoint client authentication methods (OIDC Core §9)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method name
    CLIENT_SECRET_JWT = "client_secret_jwt"  # noqa: S105 - a method name
    PRIVATE_KEY_JWT = "private_key_jwt"
    NONE = "none"


@unique
class CardRemoval(StrEnum):
    """What taking the card out does to a relying party's sign-in.

    `logout`: the RP is sent a back-channel logout and its tokens are revoked.
    `none`: the RP is not told and keeps its tokens (NHS England's newer smartcard
    client behaves so); the broker's own session still ends, so the next person at the
    workstation cannot use it to reach any service.
    """

    LOGOUT = "logout"
    NONE = "none"


@unique
class IdTokenAlg(StrEnum):
    """Algorithms the broker signs ID tokens with."""

    RS256 = "RS256"
    ES256 = "ES256"


# Scopes the broker knows, named as NHS CIS2 Authentication names them; a request's
# other scope values are ignored (OIDC Core §5.4). `selectedrole` asks the person to
# choose one of their roles at sign-in.
SUPPORTED_SCOPES = (
    "openid",
    "profile",
    "email",
    "nhsperson",
    "nationalrbacaccess",
    "associatedorgs",
    "selectedrole",
)
GRANT_TYPES = ("authorization_code", "refresh_token")
ALL_AUTH_METHODS = frozenset(AuthMethod)
_SECRET_METHODS = frozenset({AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST})
# RFC 7518 §3.2: an HMAC key at least as long as the hash output (HS256: 32 bytes).
MIN_JWT_SECRET_BYTES = 32
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True, kw_only=True)
class ClientRecord:
    """One relying party; `secret` is the parsed hash, never a plain secret."""

    client_id: str
    name: str
    auth_methods: tuple[AuthMethod, ...]
    secret: SecretHash | None = field(default=None, repr=False)
    # client_secret_jwt only: the shared HMAC key itself (it cannot be hashed).
    jwt_secret: bytes | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = True
    scopes: tuple[str, ...] = SUPPORTED_SCOPES
    grant_types: tuple[str, ...] = GRANT_TYPES
    require_pkce: bool = True
    id_token_alg: IdTokenAlg = IdTokenAlg.RS256
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    card_removal: CardRemoval = CardRemoval.LOGOUT
    # Asked for when a request names no acr_values, and the least any request gets
    # (`assurance.with_floor`); empty: none.
    default_acr_values: tuple[str, ...] = ()

    @property
    def confidential(self) -> bool:
        """True when the client authenticates at the token endpoint."""
        return AuthMethod.NONE not in self.auth_methods

    def check_secret(self, presented: str) -> bool:
        """Whether the presented secret matches (False for clients without one)."""
        return self.secret is not None and verify_secret(presented, self.secret)

    def allows_auth_method(self, method: str) -> bool:
        """Whether this client may authenticate with that method."""
        return any(m.value == method for m in self.auth_methods)


class ClientRegistry:
    """The loaded clients, by id."""

    def __init__(self, clients: Mapping[str, ClientRecord], *, source: Path | None = None):
        self._clients = dict(clients)
        self.source = source

    def get(self, client_id: str) -> ClientRecord | None:
        """The client with that id, or None."""
        return self._clients.get(client_id)

    def __iter__(self) -> Iterator[ClientRecord]:
        return iter(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)

    def id_token_algorithms(self) -> frozenset[IdTokenAlg]:
        """The signing algorithms some client needs (RS256 always: the default)."""
        return frozenset({IdTokenAlg.RS256, *(c.id_token_alg for c in self)})


@dataclass(frozen=True, kw_only=True)
class ClientDefaults:
    """Deployment-wide rules for every client ([oidc] in broker.toml)."""

    require_pkce: bool = True
    # The methods this deployment accepts at all; a client naming another is an error.
    auth_methods: frozenset[AuthMethod] = ALL_AUTH_METHODS
    card_removal: CardRemoval = CardRemoval.LOGOUT


def load_clients(
    path: Path, *, default_require_pkce: bool = True, defaults: ClientDefaults | None = None
) -> ClientRegistry:
    """Read and check a clients file; `OidcConfigError` names every problem."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise OidcConfigError([f"{path}: cannot read the clients file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise OidcConfigError([f"{path}: {not_utf8(exc)}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise OidcConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    return clients_from_mapping(
        data,
        base_dir=path.parent,
        default_require_pkce=default_require_pkce,
        defaults=defaults,
        source=path,
    )


def clients_from_mapping(
    data: Mapping[str, object],
    *,
    base_dir: Path,
    default_require_pkce: bool = True,
    defaults: ClientDefaults | None = None,
    source: Path | None = None,
) -> ClientRegistry:
    """Build the registry from a parsed clients file (`[clients.<id>]` tables)."""
    if defaults is None:
        defaults = ClientDefaults(require_pkce=default_require_pkce)
    problems: list[str] = []
    root = SettingsReader(data, "", problems)
    table = root.table("clients")
    root.finish()
    raw = data.get("clients")
    clients: dict[str, ClientRecord] = {}
    if isinstance(raw, Mapping):
        for client_id in raw:
            entry = raw[client_id]
            record = _client(
                table.table(client_id),
                entry if isinstance(entry, Mapping) else {},
                client_id,
                base_dir=base_dir,
                defaults=defaults,
                problems=problems,
            )
            if record is not None:
                clients[client_id] = record
    if not clients and not problems:
        problems.append("clients: no client is declared ([clients.<client_id>] tables)")
    if problems:
        where = f"{source}: " if source is not None else ""
        raise OidcConfigError([f"{where}{p}" for p in problems])
    return ClientRegistry(clients, source=source)


def _client(
    reader: SettingsReader,
    raw: Mapping[str, object],
    client_id: str,
    *,
    base_dir: Path,
    defaults: ClientDefaults,
    problems: list[str],
) -> ClientRecord | None:
    before = len(problems)
    if not client_id.strip() or any(ch.isspace() or ord(ch) < 0x21 for ch in client_id):
        reader.problem(None, "a client id must be printable ASCII without spaces")
    name = reader.string("name", client_id)
    secret = _secret_hash(reader)
    jwks = _inline_jwks(reader, raw)
    jwks_uri = _jwks_uri(reader, base_dir)
    if jwks is not None and jwks_uri is not None:
        reader.problem("jwks", "give jwks or jwks_uri, not both")
    jwt_secret = _jwt_secret(reader, base_dir)
    methods = _auth_methods(
        reader,
        has_secret=secret is not None,
        has_jwt_secret=jwt_secret is not None,
        has_keys=bool(jwks or jwks_uri),
    )
    for method in methods:
        if method not in defaults.auth_methods:
            allowed = ", ".join(sorted(m.value for m in defaults.auth_methods))
            reader.problem(
                "token_endpoint_auth_method",
                f"{method.value!r} is not allowed in this deployment "
                f"([oidc] token_endpoint_auth_methods: {allowed})",
            )
    if any(m in _SECRET_METHODS for m in methods) and secret is None:
        reader.problem("secret_hash", "is required for client_secret_basic/client_secret_post")
    if AuthMethod.CLIENT_SECRET_JWT in methods and jwt_secret is None:
        reader.problem("secret_file", "or secret_env is required for client_secret_jwt")
    if jwt_secret is not None and AuthMethod.CLIENT_SECRET_JWT not in methods:
        reader.problem("secret_file", "is used only by client_secret_jwt (add that method)")
    if AuthMethod.PRIVATE_KEY_JWT in methods and not (jwks or jwks_uri):
        reader.problem("jwks", "or jwks_uri is required for private_key_jwt")
    if AuthMethod.NONE in methods and len(methods) > 1:
        reader.problem("token_endpoint_auth_method", "'none' (a public client) stands alone")
    redirect_uris = reader.strings("redirect_uris", ())
    if not redirect_uris:
        reader.problem("redirect_uris", "at least one redirect URI is required")
    for uri in redirect_uris:
        _check_uri(reader, "redirect_uris", uri)
    post_logout = reader.strings("post_logout_redirect_uris", ())
    for uri in post_logout:
        _check_uri(reader, "post_logout_redirect_uris", uri)
    backchannel = reader.optional_string("backchannel_logout_uri")
    if backchannel is not None:
        _check_uri(reader, "backchannel_logout_uri", backchannel)
    scopes = reader.strings("scopes", SUPPORTED_SCOPES)
    for scope in scopes:
        if scope not in SUPPORTED_SCOPES:
            reader.problem("scopes", f"unknown scope {scope!r} ({', '.join(SUPPORTED_SCOPES)})")
    if "openid" not in scopes:
        reader.problem("scopes", "must include 'openid'")
    grant_types = reader.strings("grant_types", GRANT_TYPES)
    for grant in grant_types:
        if grant not in GRANT_TYPES:
            reader.problem("grant_types", f"unknown grant type {grant!r}")
    if "authorization_code" not in grant_types:
        reader.problem("grant_types", "must include 'authorization_code'")
    require_pkce = reader.boolean("require_pkce", defaults.require_pkce)
    if not require_pkce and AuthMethod.NONE in methods:
        # A public client has nothing else binding the code to it (RFC 9700 §2.1.1).
        reader.problem("require_pkce", "may be false only for a confidential client")
    default_acr_values = reader.strings("default_acr_values", (), allow_empty=True)
    for value in default_acr_values:
        if value not in SUPPORTED_ACR_VALUES:
            reader.problem(
                "default_acr_values",
                f"unknown acr value {value!r} (the broker's: {', '.join(SUPPORTED_ACR_VALUES)})",
            )
    record = ClientRecord(
        client_id=client_id,
        name=name,
        auth_methods=methods,
        secret=secret,
        jwt_secret=jwt_secret,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout,
        backchannel_logout_uri=backchannel,
        backchannel_logout_session_required=reader.boolean(
            "backchannel_logout_session_required", True
        ),
        scopes=scopes,
        grant_types=grant_types,
        require_pkce=require_pkce,
        id_token_alg=reader.choice("id_token_signed_response_alg", IdTokenAlg, IdTokenAlg.RS256),
        jwks=jwks,
        jwks_uri=jwks_uri,
        card_removal=reader.choice("card_removal", CardRemoval, defaults.card_removal),
        default_acr_values=tuple(dict.fromkeys(default_acr_values)),
    )
    reader.finish()
    return record if len(problems) == before else None


def _secret_hash(reader: SettingsReader) -> SecretHash | None:
    if reader.has("secret"):
        reader.optional_string("secret")
        reader.problem("secret", "plain secrets are not accepted: store secret_hash instead")
    text = reader.optional_string("secret_hash")
    if text is None:
        return None
    try:
        return parse_secret_hash(text)
    except ValueError as exc:
        reader.problem("secret_hash", str(exc))
        return None


def _jwt_secret(reader: SettingsReader, base_dir: Path) -> bytes | None:
    """client_secret_jwt's shared key: from a file, or an environment variable by name."""
    path_text = reader.optional_string("secret_file")
    env_name = reader.optional_string("secret_env")
    if path_text is not None and env_name is not None:
        reader.problem("secret_file", "give secret_file or secret_env, not both")
        return None
    value: bytes | None = None
    if path_text is not None:
        path = base_dir / path_text
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            reader.problem("secret_file", f"{str(path)!r} cannot be read: {exc.strerror}")
            return None
    elif env_name is not None:
        text = os.environ.get(env_name)
        if not text:
            reader.problem("secret_env", f"the environment variable {env_name} is not set")
            return None
        value = text.strip().encode("utf-8")
    if value is not None and len(value) < MIN_JWT_SECRET_BYTES:
        key = "secret_file" if path_text is not None else "secret_env"
        reader.problem(
            key, f"the secret must be at least {MIN_JWT_SECRET_BYTES} bytes (RFC 7518 §3.2)"
        )
        return None
    return value


def _auth_methods(
    reader: SettingsReader, *, has_secret: bool, has_jwt_secret: bool, has_keys: bool
) -> tuple[AuthMethod, ...]:
    if not reader.has("token_endpoint_auth_method"):
        if has_secret:
            return (AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST)
        if has_jwt_secret:
            return (AuthMethod.CLIENT_SECRET_JWT,)
        if has_keys:
            return (AuthMethod.PRIVATE_KEY_JWT,)
        return (AuthMethod.NONE,)
    return reader.choices("token_endpoint_auth_method", AuthMethod)


def _inline_jwks(reader: SettingsReader, raw: Mapping[str, object]) -> Mapping[str, Any] | None:
    if not reader.has("jwks"):
        return None
    reader.table("jwks")  # marks it read; the JWK set's own shape is checked below
    value = raw.get("jwks")
    if not isinstance(value, Mapping):
        reader.problem("jwks", "must be a table with a 'keys' list")
        return None
    try:
        key_set = KeySet.import_key_set(dict(value))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        reader.problem("jwks", f"is not a valid JWK set: {exc}")
        return None
    if any(key.is_private for key in key_set):
        reader.problem("jwks", "holds a private key: publish only the public keys")
        return None
    return dict(value)


def _jwks_uri(reader: SettingsReader, base_dir: Path) -> str | None:
    text = reader.optional_string("jwks_uri")
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme in ("https", "http"):
        _check_uri(reader, "jwks_uri", text)
        return text
    path = base_dir / (parts.path if parts.scheme == "file" else text)
    if not path.is_file():
        reader.problem("jwks_uri", f"{str(path)!r} is not a readable file")
        return None
    return path.resolve().as_uri()


def _check_uri(reader: SettingsReader, key: str, uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        reader.problem(key, f"{uri!r} must be an absolute https:// URL")
    elif parts.fragment:
        reader.problem(key, f"{uri!r} must not have a #fragment (OAuth 2.0 §3.1.2)")
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        reader.problem(key, f"{uri!r}: plain http is allowed only on localhost")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
