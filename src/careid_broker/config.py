"""The broker's configuration: `config/broker.toml` plus `CAREID_*` environment overrides.

`load_config(path)` reads the file, applies the environment (see `config_env`), and
checks every section, raising one `BrokerConfigError` that names every problem — what
`careid-broker check-config` prints. Sections: `[broker]`, `[server]`, `[logging]`,
`[ops]`, `[database]`, `[directory]` (`DirectoryConfig`), `[signin]`, `[oidc]`
(`OidcConfig`: lifetimes, signing key passphrase, clients), `[card]` (`CardSettings`)
and `[pki]` (`PkiConfig`: card sign-in is available only when it is given), `[admin]` and `[api]`
(local administrators' console and API: `careid_broker.admin.config`), and `[retention]`
(`RetentionSettings`: how long old working state is kept before it is purged).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum, unique
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from careid_broker.admin.config import (
    AdminSettings,
    ApiSettings,
    read_admin_settings,
    read_api_settings,
)
from careid_broker.card.settings import CardSettings, read_card_settings
from careid_broker.codes import BrokerCode
from careid_broker.config_env import CONFIG_PATH_ENV, SECTIONS, apply_env_overrides
from careid_broker.directory import DirectoryConfig
from careid_broker.directory.config import read_directory_config
from careid_broker.errors import BrokerError
from careid_broker.oidc.config import OidcConfig, read_oidc_config
from careid_broker.origins import origin_of
from careid_broker.pki.config import PkiConfig, read_pki_config
from careid_broker.settings import SettingsReader, did_you_mean, not_utf8
from careid_broker.store import RetentionPolicy, ThrottlePolicy, driver_problem, sqlite_file

DEFAULT_CONFIG_PATH = Path("config") / "broker.toml"
# The key in the shipped demo configuration: public, so refused outside development.
DEMO_SECRET_KEY = "demo-only-not-secret-change-me-5f1c0e7d9a2b4c6e8f"  # noqa: S105
MIN_SECRET_KEY_LENGTH = 32

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BrokerConfigError(BrokerError):
    """The broker's settings are not valid; `problems` names every fault."""

    default_code = BrokerCode.BROKER_CONFIG_INVALID

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(detail="; ".join(self.problems))


@unique
class LogFormat(StrEnum):
    """How log lines are written."""

    JSON = "json"
    TEXT = "text"


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """`[broker]`: who the broker is, cookies and sessions."""

    issuer: str
    secret_key: str = field(repr=False)
    previous_secret_keys: tuple[str, ...] = field(default=(), repr=False)
    """Keys replaced by `secret_key`, still accepted while what they signed lives on."""
    dev: bool = False
    session_lifetime: timedelta = timedelta(hours=8)
    session_idle: timedelta = timedelta(hours=2)
    trusted_proxies: int = 0
    dev_disable_workers: bool = False

    @property
    def secure_cookies(self) -> bool:
        """Cookies are `Secure` (and `__Host-` named) everywhere but development."""
        return not self.dev


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """`[server]`: how `careid-broker serve` runs gunicorn."""

    bind: str = "127.0.0.1:5000"
    # Chosen by measurement on 2 cores: see config/broker.toml's [server].
    workers: int = 3
    threads: int = 1
    timeout_seconds: int = 30


@dataclass(frozen=True, kw_only=True)
class LoggingSettings:
    """`[logging]`."""

    level: str = "INFO"
    format: LogFormat = LogFormat.JSON


@dataclass(frozen=True, kw_only=True)
class OpsSettings:
    """`[ops]`: who may read /metrics."""

    metrics_allowed_networks: tuple[IpNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """`[database]`: the store (the URL may hold a password, so it stays out of repr)."""

    url: str = field(repr=False)
    pool_size: int = 5
    busy_timeout: timedelta = timedelta(seconds=15)


@dataclass(frozen=True, kw_only=True)
class SigninSettings:
    """`[signin]`: password throttling and where the help on refusal pages points."""

    account_throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    address_throttle: ThrottlePolicy = field(
        default_factory=lambda: ThrottlePolicy(free_failures=30)
    )
    aup_url: str = "https://portal.nhs.net/"
    help_contact: str = "your local IT service desk"
    help_url: str | None = None
    # A refused password is answered no sooner than this after the directory was asked.
    failure_answer_floor: timedelta = timedelta(milliseconds=50)


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    """`[retention]`: the background purge of old working state (never the audit log)."""

    enabled: bool = True
    interval: timedelta = timedelta(minutes=10)
    policy: RetentionPolicy = field(default_factory=RetentionPolicy)


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """Every section, checked."""

    broker: BrokerSettings
    server: ServerSettings = field(default_factory=ServerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    database: DatabaseSettings
    directory: DirectoryConfig
    signin: SigninSettings = field(default_factory=SigninSettings)
    oidc: OidcConfig
    card: CardSettings = field(default_factory=CardSettings)
    pki: PkiConfig | None = None
    admin: AdminSettings = field(default_factory=AdminSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    source: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    env_overrides: tuple[str, ...] = ()

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        base_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        source: Path | None = None,
    ) -> BrokerConfig:
        """From parsed TOML (and an environment), raising one error naming every problem."""
        root = (base_dir or Path.cwd()).resolve()
        merged, applied, problems = apply_env_overrides(data, env or {})
        for name in sorted(set(merged) - set(SECTIONS)):
            problems.append(f"[{name}]: is not a known section{did_you_mean(name, SECTIONS)}")
        top = SettingsReader(merged, "", problems)

        broker = read_broker_settings(top.table("broker"))
        server = read_server_settings(top.table("server"))
        logging_settings = read_logging_settings(top.table("logging"))
        ops = read_ops_settings(top.table("ops"))
        database = read_database_settings(top.table("database"), root, dev=broker.dev)
        signin = read_signin_settings(top.table("signin"))
        directory: DirectoryConfig | None = None
        if top.has("directory"):
            directory = read_directory_config(top.table("directory"), base_dir=root)
        else:
            problems.append("[directory]: is required")
        oidc = read_oidc_config(top.table("oidc"), base_dir=root)
        card = read_card_settings(top.table("card"))
        pki = read_pki_config(top.table("pki"), base_dir=root) if top.has("pki") else None
        admin = read_admin_settings(top.table("admin"))
        api = read_api_settings(
            top.table("api"),
            reserved_client_ids=[c.client_id for c in oidc.clients] if oidc else (),
        )
        retention = _keep_throttle_counters(read_retention_settings(top.table("retention")), signin)
        if problems:
            raise BrokerConfigError(problems)
        # None only alongside a problem:
        assert directory is not None and oidc is not None  # noqa: S101
        return cls(
            broker=broker,
            server=server,
            logging=logging_settings,
            ops=ops,
            database=database,
            directory=directory,
            signin=signin,
            oidc=oidc,
            card=card,
            pki=pki,
            admin=admin,
            api=api,
            retention=retention,
            source=source,
            base_dir=root,
            env_overrides=tuple(applied),
        )


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$CAREID_CONFIG`, else `config/broker.toml` in the working folder."""
    environ = os.environ if env is None else env
    return Path(environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> BrokerConfig:
    """Read, override from the environment, and check the configuration file."""
    environ = dict(os.environ) if env is None else dict(env)
    config_path = (path or default_config_path(environ)).resolve()
    try:
        with config_path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise BrokerConfigError([f"{config_path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise BrokerConfigError([f"{config_path}: {not_utf8(exc)}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise BrokerConfigError([f"{config_path}: not valid TOML: {exc}"]) from None
    return BrokerConfig.from_mapping(
        data, base_dir=config_path.parent, env=environ, source=config_path
    )


def _seconds(reader: SettingsReader, key: str, default: timedelta, *, minimum: int) -> timedelta:
    value = reader.integer(key, int(default.total_seconds()), minimum=minimum, maximum=10**7)
    return timedelta(seconds=value)


def read_broker_settings(reader: SettingsReader) -> BrokerSettings:
    dev = reader.boolean("dev", False)
    issuer = reader.string("issuer").rstrip("/")
    if issuer:
        parts = urlsplit(issuer)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            reader.problem("issuer", f"{issuer!r} must be an https:// URL")
        elif parts.scheme == "http" and not dev:
            reader.problem("issuer", "must be https:// unless dev = true")
        elif origin_of(issuer) is None:
            # Card tokens are signed for this origin and card requests must carry it:
            # a host a browser and the agent cannot name (an underscore, say) or a port
            # outside 1-65535 would leave the broker unable to start.
            reader.problem(
                "issuer",
                f"{issuer!r} has no usable origin: its host must be letters, digits, dots"
                " and hyphens (or an IP address) and its port 1-65535",
            )
        if parts.query or parts.fragment:
            reader.problem("issuer", "must have no query or fragment (OpenID Discovery §3)")
        if parts.path:
            # The agent sends card-removal notices to the sign-in page's origin, at
            # /card/removed, and the broker's pages link from the root: served under a
            # path, the card lock would end nothing.
            reader.problem(
                "issuer",
                f"{issuer!r} must have no path: serve the broker at the root of its own"
                " host name (e.g. https://sso.trust.example)",
            )
    secret_key = reader.string("secret_key")
    if secret_key and len(secret_key) < MIN_SECRET_KEY_LENGTH:
        reader.problem("secret_key", f"must be at least {MIN_SECRET_KEY_LENGTH} characters")
    if secret_key == DEMO_SECRET_KEY and not dev:
        reader.problem("secret_key", "is the public demo key; set CAREID_SECRET_KEY")
    # An empty list is the usual state once a replacement is over.
    previous_secret_keys = reader.strings("previous_secret_keys", (), allow_empty=True)
    for previous in previous_secret_keys:
        if len(previous) < MIN_SECRET_KEY_LENGTH:
            reader.problem(
                "previous_secret_keys", f"each must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        elif previous == secret_key:
            reader.problem("previous_secret_keys", "must not hold the current secret_key")
        elif previous == DEMO_SECRET_KEY and not dev:
            reader.problem("previous_secret_keys", "must not hold the public demo key")
    disable_workers = reader.boolean("dev_disable_workers", False)
    if disable_workers and not dev:
        # It stops CRL refreshes and logout deliveries: a test switch, never production's.
        reader.problem("dev_disable_workers", "is a development switch: it needs dev = true")
    settings = BrokerSettings(
        issuer=issuer,
        secret_key=secret_key,
        previous_secret_keys=previous_secret_keys,
        dev=dev,
        session_lifetime=_seconds(
            reader, "session_lifetime_seconds", timedelta(hours=8), minimum=60
        ),
        session_idle=_seconds(reader, "session_idle_seconds", timedelta(hours=2), minimum=60),
        trusted_proxies=reader.integer("trusted_proxies", 0, minimum=0, maximum=5),
        dev_disable_workers=disable_workers,
    )
    reader.finish()
    return settings


#: The most workers, and threads per worker, `[server]` and `serve` accept.
MOST_WORKERS = MOST_THREADS = 64


def bind_problem(bind: str) -> str | None:
    """What is wrong with a gunicorn bind address (HOST:PORT, [IPv6]:PORT, unix:PATH or
    fd://N), or None; found here rather than by gunicorn after the master started."""
    if (bind.startswith("unix:") and len(bind) > 5) or re.fullmatch(r"fd://[0-9]+", bind):
        return None
    host, colon, port = bind.rpartition(":")
    bracketed = host.startswith("[") or host.endswith("]")
    if bracketed and not (len(host) > 2 and host.startswith("[") and host.endswith("]")):
        host = ""
    elif not bracketed and ":" in host:
        host = ""  # an IPv6 address needs its brackets
    if not colon or not host or not port.isdigit():
        return "must be HOST:PORT ([ADDRESS]:PORT for IPv6, or unix:PATH)"
    if not 1 <= int(port) <= 65535:
        return f"port {port} is not between 1 and 65535"
    return None


def read_server_settings(reader: SettingsReader) -> ServerSettings:
    bind = reader.string("bind", "127.0.0.1:5000")
    problem = bind_problem(bind)
    if problem is not None:
        reader.problem("bind", f"{bind!r} {problem}")
    settings = ServerSettings(
        bind=bind,
        workers=reader.integer("workers", 3, minimum=1, maximum=MOST_WORKERS),
        threads=reader.integer("threads", 1, minimum=1, maximum=MOST_THREADS),
        timeout_seconds=reader.integer("timeout_seconds", 30, minimum=5, maximum=600),
    )
    reader.finish()
    return settings


def read_logging_settings(reader: SettingsReader) -> LoggingSettings:
    level = reader.string("level", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        reader.problem("level", "must be one of: DEBUG, INFO, WARNING, ERROR")
        level = "INFO"
    settings = LoggingSettings(
        level=level, format=reader.choice("format", LogFormat, LogFormat.JSON)
    )
    reader.finish()
    return settings


def read_ops_settings(reader: SettingsReader) -> OpsSettings:
    networks: list[IpNetwork] = []
    for text in reader.strings("metrics_allowed_networks", ("127.0.0.0/8", "::1/128")):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            reader.problem("metrics_allowed_networks", f"{text!r} is not an address or network")
    reader.finish()
    return OpsSettings(metrics_allowed_networks=tuple(networks))


def read_database_settings(reader: SettingsReader, root: Path, *, dev: bool) -> DatabaseSettings:
    raw = reader.string("url")
    url = raw
    if raw:
        try:
            parsed = make_url(raw)
        except ArgumentError:
            reader.problem("url", "is not a database URL (sqlite:///… or postgresql+psycopg://…)")
        else:
            backend = parsed.get_backend_name()
            problem = driver_problem(parsed)
            if problem is not None:
                reader.problem("url", problem)
            elif backend == "sqlite" and sqlite_file(parsed) is None:
                if not dev:
                    reader.problem(
                        "url",
                        "an in-memory SQLite database is lost at exit and not shared between"
                        " workers: it needs dev = true",
                    )
            elif backend == "sqlite" and parsed.database:
                # Relative to the configuration file, not to wherever the server started.
                path = Path(parsed.database)
                if not path.is_absolute():
                    url = parsed.set(database=os.path.normpath(root / path)).render_as_string(
                        hide_password=False
                    )
    settings = DatabaseSettings(
        url=url,
        pool_size=reader.integer("pool_size", 5, minimum=1, maximum=100),
        busy_timeout=timedelta(
            seconds=reader.number("busy_timeout_seconds", 15.0, minimum=0.1, maximum=300)
        ),
    )
    reader.finish()
    return settings


def _throttle(
    reader: SettingsReader,
    prefix: str,
    free: int,
    *,
    guard: int | None = None,
    guard_window: timedelta = timedelta(minutes=15),
) -> ThrottlePolicy:
    window = reader.integer("window_seconds", 900, minimum=1, maximum=86400)
    first = reader.integer("first_block_seconds", 30, minimum=1, maximum=86400)
    longest = reader.integer("max_block_seconds", 3600, minimum=1, maximum=86400)
    if longest < first:
        reader.problem("max_block_seconds", "must not be less than first_block_seconds")
    return ThrottlePolicy(
        free_failures=reader.integer(f"{prefix}_free_failures", free, minimum=1, maximum=10000),
        window=timedelta(seconds=window),
        first_block=timedelta(seconds=first),
        max_block=timedelta(seconds=max(longest, first)),
        guard_failures=guard,
        guard_window=guard_window,
    )


def read_signin_settings(reader: SettingsReader) -> SigninSettings:
    aup_url = reader.string("aup_url", "https://portal.nhs.net/")
    help_url = reader.optional_string("help_url")
    for key, value in (("aup_url", aup_url), ("help_url", help_url)):
        if value is not None and urlsplit(value).scheme not in ("https", "http"):
            reader.problem(key, f"{value!r} must be an http(s) URL")
    # The directory's own lockout (OpenLDAP ppolicy pwdMaxFailure and
    # pwdFailureCountInterval; Active Directory's lockout threshold and window): the
    # broker stops one failure short of it, so a stranger typing wrong passwords for a
    # real address can never lock that person out (0: the directory has no lockout).
    lockout_failures = reader.integer("directory_lockout_failures", 5, minimum=0, maximum=1000)
    if lockout_failures == 1:
        reader.problem("directory_lockout_failures", "must be 0 (none) or at least 2")
    lockout_window = timedelta(
        seconds=reader.integer(
            "directory_lockout_window_seconds", 900, minimum=1, maximum=7 * 86400
        )
    )
    settings = SigninSettings(
        account_throttle=_throttle(
            reader,
            "account",
            5,
            guard=lockout_failures - 1 if lockout_failures >= 2 else None,
            guard_window=lockout_window,
        ),
        # A hospital's staff may share one public address: far more room per address.
        address_throttle=_throttle(reader, "address", 30),
        aup_url=aup_url,
        help_contact=reader.string("help_contact", "your local IT service desk"),
        help_url=help_url,
        # The directory does more for a real entry than for a name no entry has (OpenLDAP's
        # ppolicy records the failure): about 0.5 ms that would tell a stranger which
        # addresses are real. Every refusal waits out the same floor instead.
        failure_answer_floor=timedelta(
            milliseconds=reader.integer("failure_answer_ms", 50, minimum=0, maximum=2000)
        ),
    )
    reader.finish()
    return settings


def _keep_throttle_counters(
    retention: RetentionSettings, signin: SigninSettings
) -> RetentionSettings:
    """Keep throttle counters at least as long as any throttle may still count them.

    The guard counts an account's failures for as long as the directory does
    (`directory_lockout_window_seconds`, up to a week): a counter purged sooner would
    let a stranger start again while the directory still remembers the failures.
    """
    policies = (signin.account_throttle, signin.address_throttle)
    longest = max(
        max(p.window, p.guard_window) if p.guard_failures is not None else p.window
        for p in policies
    )
    if retention.policy.throttle_counters >= longest:
        return retention
    return replace(retention, policy=replace(retention.policy, throttle_counters=longest))


def read_retention_settings(reader: SettingsReader) -> RetentionSettings:
    def days(key: str, default: timedelta, minimum: int = 0) -> timedelta:
        value = reader.integer(key, default.days, minimum=minimum, maximum=3650)
        return timedelta(days=value)

    defaults = RetentionPolicy()
    settings = RetentionSettings(
        enabled=reader.boolean("enabled", True),
        interval=timedelta(
            seconds=reader.integer("interval_seconds", 600, minimum=60, maximum=86400)
        ),
        policy=RetentionPolicy(
            ended_sessions=days("ended_sessions_days", defaults.ended_sessions),
            expired_tokens=days("expired_tokens_days", defaults.expired_tokens),
            expired_codes=days("expired_codes_days", defaults.expired_codes),
            expired_challenges=days("expired_challenges_days", defaults.expired_challenges),
            login_transactions=days("login_transactions_days", defaults.login_transactions),
            used_jtis=days("used_jtis_days", defaults.used_jtis),
            # Never less than a day: the longest throttle window ([signin] window_seconds).
            throttle_counters=days("throttle_counters_days", defaults.throttle_counters, 1),
            logout_deliveries=days("logout_deliveries_days", defaults.logout_deliveries),
            heartbeats=days("heartbeats_days", defaults.heartbeats),
            ocsp_state=days("ocsp_state_days", defaults.ocsp_state),
            batch_size=reader.integer("batch_size", defaults.batch_size, minimum=10, maximum=10000),
        ),
    )
    reader.finish()
    return settings
