"""The directory connection settings, read from the broker's TOML configuration."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum, unique
from pathlib import Path
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from careid_broker.directory.mapping import AttributeMapping
from careid_broker.errors import DirectoryConfigError
from careid_broker.settings import SettingsReader, not_utf8


@unique
class PoolStrategy(StrEnum):
    """How a request picks among several directory servers."""

    FIRST = "first"  # the first that answers: a primary with standbys
    ROUND_ROBIN = "round_robin"  # spread load across equals


@unique
class TlsMode(StrEnum):
    """How the connection to the directory is protected."""

    NONE = "none"
    LDAPS = "ldaps"
    STARTTLS = "starttls"


@dataclass(frozen=True, kw_only=True)
class ServerAddress:
    """One directory server from the `urls` list."""

    url: str
    host: str
    port: int
    use_ssl: bool


DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_RECEIVE_TIMEOUT = 3.0


@dataclass(frozen=True, kw_only=True)
class DirectoryConfig:
    """Everything the LDAP adapter needs; passwords are kept out of repr()."""

    urls: tuple[str, ...]
    pool_strategy: PoolStrategy = PoolStrategy.FIRST
    bind_dn: str
    bind_password: str = field(repr=False)
    accounts_base: str
    care_identities_base: str
    # From the sign-in's budget: a person at the login page should hear "try again
    # shortly" within about five seconds of a directory that has stopped answering, one
    # connect plus one receive. ldap3 sets SO_RCVTIMEO from the receive timeout in whole
    # seconds, so it is rounded up when used.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT
    # A server that failed is skipped for this long (unless every server has failed).
    server_retry_after: float = 30.0
    use_tls: TlsMode = TlsMode.NONE
    ca_file: Path | None = None
    writable: bool = False
    write_bind_dn: str | None = None
    write_bind_password: str | None = field(default=None, repr=False)
    current_aup_version: str
    search_limit: int = 100
    # Bound connections kept open between operations, per server and account (service,
    # writer, user binds); 0 opens and closes one per operation.
    connection_pool_size: int = 8
    # A kept connection unused for this long is closed rather than reused (servers and
    # firewalls drop idle connections; Active Directory after 900 s by default).
    connection_max_idle_seconds: float = 60.0
    mapping: AttributeMapping = field(default_factory=AttributeMapping)

    def servers(self) -> tuple[ServerAddress, ...]:
        """The urls as addresses (validated at load time)."""
        return tuple(_parse_url(url) for url in self.urls)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, object],
        *,
        where: str = "directory",
        base_dir: Path | None = None,
    ) -> DirectoryConfig:
        """From a parsed TOML table, raising one error that names every problem.

        `*_file` settings (passwords, the CA, a mapping file) are relative to `base_dir`,
        normally the folder of the configuration file.
        """
        problems: list[str] = []
        reader = SettingsReader(data, where, problems)
        root = base_dir or Path.cwd()

        urls = reader.strings("urls", ())
        if not reader.has("urls"):
            reader.problem("urls", "is required")
        use_tls = reader.choice("use_tls", TlsMode, TlsMode.NONE)
        for index, url in enumerate(urls):
            try:
                address = _parse_url(url)
            except ValueError as exc:
                problems.append(f"{reader.path('urls')}[{index}]: {exc}")
                continue
            if address.use_ssl != (use_tls is TlsMode.LDAPS):
                problems.append(
                    f"{reader.path('urls')}[{index}]: {url!r} does not match"
                    f" use_tls = {use_tls.value!r} (ldaps:// exactly when use_tls is ldaps)"
                )

        bind_dn = reader.string("bind_dn")
        bind_password = _secret(reader, "bind_password", root, required=True) or ""
        writable = reader.boolean("writable", False)
        write_bind_dn = reader.optional_string("write_bind_dn")
        write_bind_password = _secret(reader, "write_bind_password", root, required=False)
        if (write_bind_dn is None) != (write_bind_password is None):
            reader.problem("write_bind_dn", "and write_bind_password go together")

        ca_file: Path | None = None
        ca_text = reader.optional_string("ca_file")
        if ca_text is not None:
            ca_file = root / ca_text
            if not ca_file.is_file():
                reader.problem("ca_file", f"{str(ca_file)!r} is not a readable file")
            elif use_tls is TlsMode.NONE:
                reader.problem("ca_file", "is set but use_tls is 'none'")

        accounts_base = _dn(reader, "accounts_base")
        care_identities_base = _dn(reader, "care_identities_base")

        mapping = _mapping(reader, root, problems)
        config = cls(
            urls=urls,
            pool_strategy=reader.choice("pool_strategy", PoolStrategy, PoolStrategy.FIRST),
            bind_dn=bind_dn,
            bind_password=bind_password,
            accounts_base=accounts_base,
            care_identities_base=care_identities_base,
            connect_timeout=reader.number(
                "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.1, maximum=120
            ),
            receive_timeout=reader.number(
                "receive_timeout", DEFAULT_RECEIVE_TIMEOUT, minimum=0.1, maximum=600
            ),
            server_retry_after=reader.number("server_retry_after", 30.0, minimum=0, maximum=3600),
            use_tls=use_tls,
            ca_file=ca_file,
            writable=writable,
            write_bind_dn=write_bind_dn,
            write_bind_password=write_bind_password,
            current_aup_version=reader.string("current_aup_version"),
            search_limit=reader.integer("search_limit", 100, minimum=1, maximum=1000),
            connection_pool_size=reader.integer("connection_pool_size", 8, minimum=0, maximum=256),
            connection_max_idle_seconds=reader.number(
                "connection_max_idle_seconds", 60.0, minimum=1.0, maximum=3600.0
            ),
            mapping=mapping,
        )
        reader.finish()
        if problems:
            raise DirectoryConfigError(problems)
        return config


def _parse_url(url: str) -> ServerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps"):
        raise ValueError(f"{url!r} must start with ldap:// or ldaps://")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r} must be only scheme://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    use_ssl = parts.scheme == "ldaps"
    return ServerAddress(
        url=url,
        host=parts.hostname,
        port=port if port is not None else (636 if use_ssl else 389),
        use_ssl=use_ssl,
    )


def _dn(reader: SettingsReader, key: str) -> str:
    value = reader.string(key)
    if value:
        try:
            parse_dn(value)
        except LDAPInvalidDnError:
            reader.problem(key, f"{value!r} is not a valid DN")
    return value


def _secret(reader: SettingsReader, key: str, root: Path, *, required: bool) -> str | None:
    """A password given inline or, better, as `<key>_file` (kept out of the main file)."""
    inline = reader.optional_string(key)
    file_name = reader.optional_string(f"{key}_file")
    if inline is not None and file_name is not None:
        reader.problem(key, f"give {key} or {key}_file, not both")
        return None
    if file_name is not None:
        path = root / file_name
        try:
            text = path.read_bytes().decode("utf-8").strip()
        except OSError as exc:
            reader.problem(f"{key}_file", f"cannot read {str(path)!r}: {exc.strerror}")
            return None
        except UnicodeDecodeError as exc:
            reader.problem(f"{key}_file", f"{str(path)!r} {not_utf8(exc)}")
            return None
        if not text:
            reader.problem(f"{key}_file", f"{str(path)!r} is empty")
            return None
        return text
    if inline is None and required:
        reader.problem(key, f"is required (or {key}_file)")
    return inline


def _mapping(reader: SettingsReader, root: Path, problems: list[str]) -> AttributeMapping:
    """The attribute mapping: an inline [mapping] table or a `mapping_file`."""
    file_name = reader.optional_string("mapping_file")
    if file_name is not None and reader.has("mapping"):
        reader.table("mapping")  # consumed, so it is named once, here
        reader.problem("mapping_file", "give mapping or mapping_file, not both")
    if file_name is None:
        return AttributeMapping.read(reader.table("mapping"))
    path = root / file_name
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        reader.problem("mapping_file", f"cannot read {str(path)!r}: {exc.strerror}")
        return AttributeMapping()
    except UnicodeDecodeError as exc:
        reader.problem("mapping_file", f"{str(path)!r} {not_utf8(exc)}")
        return AttributeMapping()
    except tomllib.TOMLDecodeError as exc:
        reader.problem("mapping_file", f"{str(path)!r} is not valid TOML: {exc}")
        return AttributeMapping()
    return AttributeMapping.read(SettingsReader(data, path.name, problems))


def read_directory_config(reader: SettingsReader, *, base_dir: Path) -> DirectoryConfig | None:
    """`[directory]` through the shared reader; None when it named a problem."""
    try:
        return DirectoryConfig.from_mapping(reader.data, where=reader.path(None), base_dir=base_dir)
    except DirectoryConfigError as exc:
        reader.problems_found(exc.problems)
        return None
