"""Environment overrides for the broker's TOML settings: `CAREID_<SECTION>_<KEY>`.

Secrets and per-deployment values (the database URL, the session secret, the directory
password, the signing key passphrase) are better kept out of a file checked into
configuration management; containers and systemd units pass them as environment
variables instead. `CAREID_DATABASE_URL` sets `[database] url`,
`CAREID_DIRECTORY_BIND_PASSWORD` sets `[directory] bind_password`, and so on;
`CAREID_SECRET_KEY` is a short alias for `CAREID_BROKER_SECRET_KEY`, and
`CAREID_PREVIOUS_SECRET_KEYS` (comma-separated) for `CAREID_BROKER_PREVIOUS_SECRET_KEYS`.

Environment values are text: each is converted to the type the setting has (a number,
true/false, a comma-separated list). Setting `<key>` also drops a `<key>_file` from the
file, so an override of a password given as a file works without editing the file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "CAREID_"
# Where the configuration file is; not itself a setting.
CONFIG_PATH_ENV = "CAREID_CONFIG"

SECTIONS = (
    "broker",
    "server",
    "logging",
    "ops",
    "database",
    "directory",
    "signin",
    "oidc",
    "card",
    "pki",
    "admin",
    "api",
    "retention",
)

ALIASES: Mapping[str, tuple[str, str]] = {
    "CAREID_SECRET_KEY": ("broker", "secret_key"),
    "CAREID_PREVIOUS_SECRET_KEYS": ("broker", "previous_secret_keys"),
}

# The type of every non-text setting, for settings absent from the file (a present one
# gives its own type). Settings not listed here, and not in the file, are text.
_BOOL, _INT, _FLOAT, _LIST = "bool", "int", "float", "list"
KNOWN_TYPES: Mapping[tuple[str, str], str] = {
    ("broker", "dev"): _BOOL,
    ("broker", "dev_disable_workers"): _BOOL,
    ("broker", "session_lifetime_seconds"): _INT,
    ("broker", "session_idle_seconds"): _INT,
    ("broker", "trusted_proxies"): _INT,
    ("broker", "previous_secret_keys"): _LIST,
    ("server", "workers"): _INT,
    ("server", "threads"): _INT,
    ("server", "timeout_seconds"): _INT,
    ("ops", "metrics_allowed_networks"): _LIST,
    ("database", "pool_size"): _INT,
    ("database", "busy_timeout_seconds"): _FLOAT,
    ("directory", "urls"): _LIST,
    ("directory", "connect_timeout"): _FLOAT,
    ("directory", "receive_timeout"): _FLOAT,
    ("directory", "server_retry_after"): _FLOAT,
    ("directory", "writable"): _BOOL,
    ("directory", "search_limit"): _INT,
    ("directory", "connection_pool_size"): _INT,
    ("directory", "connection_max_idle_seconds"): _FLOAT,
    ("signin", "directory_lockout_failures"): _INT,
    ("signin", "directory_lockout_window_seconds"): _INT,
    ("signin", "account_free_failures"): _INT,
    ("signin", "failure_answer_ms"): _INT,
    ("signin", "address_free_failures"): _INT,
    ("signin", "window_seconds"): _INT,
    ("signin", "first_block_seconds"): _INT,
    ("signin", "max_block_seconds"): _INT,
    ("oidc", "code_lifetime_seconds"): _INT,
    ("oidc", "access_token_lifetime_seconds"): _INT,
    ("oidc", "refresh_token_lifetime_seconds"): _INT,
    ("oidc", "id_token_lifetime_seconds"): _INT,
    ("oidc", "require_pkce"): _BOOL,
    ("oidc", "backchannel_worker"): _BOOL,
    ("oidc", "backchannel_timeout_seconds"): _FLOAT,
    ("oidc", "backchannel_max_attempts"): _INT,
    ("oidc", "backchannel_first_retry_seconds"): _FLOAT,
    ("oidc", "backchannel_poll_seconds"): _FLOAT,
    ("oidc", "token_endpoint_auth_methods"): _LIST,
    ("card", "challenge_lifetime_seconds"): _INT,
    ("card", "session_lock"): _BOOL,
    ("card", "registration_lifetime_seconds"): _INT,
    ("card", "removal_rate_limit"): _INT,
    ("card", "removal_rate_window_seconds"): _INT,
    ("pki", "trust_anchors"): _LIST,
    ("pki", "intermediates"): _LIST,
    ("pki", "max_clock_skew_seconds"): _INT,
    ("pki", "require_policies"): _LIST,
    ("pki", "disallowed_policies"): _LIST,
    ("pki", "soft_fail"): _BOOL,
    ("admin", "rights_cache_seconds"): _INT,
    ("admin", "search_limit"): _INT,
    ("admin", "recent_signins"): _INT,
    ("admin", "audit_entries"): _INT,
    ("api", "token_lifetime_seconds"): _INT,
    ("retention", "enabled"): _BOOL,
    ("retention", "interval_seconds"): _INT,
    ("retention", "batch_size"): _INT,
    ("retention", "ended_sessions_days"): _INT,
    ("retention", "expired_tokens_days"): _INT,
    ("retention", "expired_codes_days"): _INT,
    ("retention", "expired_challenges_days"): _INT,
    ("retention", "login_transactions_days"): _INT,
    ("retention", "used_jtis_days"): _INT,
    ("retention", "throttle_counters_days"): _INT,
    ("retention", "logout_deliveries_days"): _INT,
    ("retention", "heartbeats_days"): _INT,
    ("retention", "ocsp_state_days"): _INT,
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def target_of(name: str) -> tuple[str, str] | None:
    """The (section, key) an environment variable name sets, or None if it sets nothing."""
    if name in ALIASES:
        return ALIASES[name]
    if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
        return None
    rest = name[len(ENV_PREFIX) :].lower()
    for section in SECTIONS:
        if rest.startswith(section + "_") and len(rest) > len(section) + 1:
            return section, rest[len(section) + 1 :]
    return None


def _kind(section: str, key: str, current: object) -> str:
    # The setting's declared type first: the value written in the file is only an
    # example of it (15 in the file does not make 2.5 seconds a mistake).
    known = KNOWN_TYPES.get((section, key))
    if known is not None:
        return known
    if isinstance(current, bool):
        return _BOOL
    if isinstance(current, int):
        return _INT
    if isinstance(current, float):
        return _FLOAT
    if isinstance(current, list):
        return _LIST
    return "str"


def _convert(raw: str, kind: str) -> object:
    text = raw.strip()
    if kind == _BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind == _INT:
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind == _FLOAT:
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number") from None
    if kind == _LIST:
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def apply_env_overrides(
    data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The settings with overrides applied, the names applied, and problems found.

    Never logs or returns a value: the applied list names variables only.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(data))
    applied: list[str] = []
    problems: list[str] = []
    for name in sorted(env):
        target = target_of(name)
        if target is None:
            continue
        section, key = target
        table = merged.get(section)
        if table is None:
            table = merged[section] = {}
        if not isinstance(table, dict):
            problems.append(f"{name}: [{section}] in the file is not a table")
            continue
        try:
            value = _convert(env[name], _kind(section, key, table.get(key)))
        except ValueError as exc:
            problems.append(f"{name} (sets {section}.{key}): {exc}")
            continue
        table[key] = value
        table.pop(f"{key}_file", None)
        applied.append(name)
    return merged, applied, problems
