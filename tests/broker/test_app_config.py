"""The broker's configuration: the shipped file, environment overrides, every problem named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import REPO, TEST_SECRET_KEY

from careid_broker.assurance import ACR_CARD, ACR_PASSWORD, demands_card, satisfies
from careid_broker.config import (
    DEMO_SECRET_KEY,
    BrokerConfig,
    BrokerConfigError,
    LogFormat,
    load_config,
)
from careid_broker.config_env import apply_env_overrides, target_of

DIRECTORY = {
    "urls": ["ldap://127.0.0.1:3389"],
    "bind_dn": "cn=careid-broker,ou=services,dc=nhs,dc=example",
    "bind_password": "Demo-Broker-Service-1",
    "accounts_base": "ou=people,dc=nhs,dc=example",
    "care_identities_base": "ou=careidentities,dc=nhs,dc=example",
    "current_aup_version": "2024-1",
}


def _settings(clients_file: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "broker": {"issuer": "https://sso.example.test", "secret_key": TEST_SECRET_KEY},
        "database": {"url": "sqlite:///broker.db"},
        "directory": dict(DIRECTORY),
        "oidc": {"clients_file": str(clients_file)},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def test_the_shipped_configuration_is_valid(tmp_path: Path) -> None:
    if not (REPO / "config" / "clients.toml").is_file():
        pytest.skip("config/clients.toml (the OpenID Provider's demo clients) is not there yet")
    config = load_config(REPO / "config" / "broker.toml", env={})
    assert config.broker.dev is True
    assert config.broker.issuer == "http://localhost:5000"
    assert config.database.url == f"sqlite:///{(REPO / 'var' / 'broker.db').resolve()}"
    assert config.directory.current_aup_version == "2024-1"
    assert config.logging.format is LogFormat.JSON
    assert config.oidc is not None


def test_defaults_and_a_relative_sqlite_path(tmp_path: Path, clients_file: Path) -> None:
    config = BrokerConfig.from_mapping(_settings(clients_file), base_dir=tmp_path)
    assert config.broker.secure_cookies
    assert config.broker.session_lifetime == timedelta(hours=8)
    assert (config.server.workers, config.server.threads) == (3, 1)
    assert config.signin.account_throttle.free_failures == 5
    assert config.signin.address_throttle.free_failures == 30
    assert config.database.url == f"sqlite:///{tmp_path.resolve() / 'broker.db'}"
    assert config.oidc.code_ttl == timedelta(seconds=60)
    assert "secret" not in repr(config.broker) and TEST_SECRET_KEY not in repr(config)


def test_environment_overrides_apply_with_their_types(tmp_path: Path, clients_file: Path) -> None:
    secret_file = tmp_path / "ldap-password"
    secret_file.write_text("from-a-file\n")
    data = _settings(clients_file)
    del data["directory"]["bind_password"]
    data["directory"]["bind_password_file"] = str(secret_file)
    env = {
        "CAREID_DATABASE_URL": "postgresql+psycopg://careid@db.example.test/careid",
        "CAREID_SECRET_KEY": "s" * 40,
        "CAREID_DIRECTORY_BIND_PASSWORD": "from-the-environment",
        "CAREID_DIRECTORY_URLS": "ldap://a.example.test, ldap://b.example.test",
        "CAREID_SERVER_WORKERS": "4",
        "CAREID_BROKER_DEV": "false",
        "CAREID_OIDC_SIGNING_KEY_PASSPHRASE": "key-passphrase",
        "CAREID_SIGNIN_ACCOUNT_FREE_FAILURES": "7",
        "CAREID_TEST_DATABASE_URL": "ignored: not a section",
        "HOME": "/root",
    }
    config = BrokerConfig.from_mapping(data, base_dir=tmp_path, env=env)
    assert config.database.url == "postgresql+psycopg://careid@db.example.test/careid"
    assert config.broker.secret_key == "s" * 40
    assert config.directory.bind_password == "from-the-environment"
    assert config.directory.urls == ("ldap://a.example.test", "ldap://b.example.test")
    assert config.server.workers == 4
    assert config.signin.account_throttle.free_failures == 7
    assert config.oidc.signing_key_passphrase == "key-passphrase"
    assert set(config.env_overrides) == set(env) - {"CAREID_TEST_DATABASE_URL", "HOME"}


def test_a_badly_typed_override_is_named() -> None:
    _, applied, problems = apply_env_overrides({}, {"CAREID_SERVER_WORKERS": "many"})
    assert applied == []
    assert problems == ["CAREID_SERVER_WORKERS (sets server.workers): must be a whole number"]
    assert target_of("CAREID_OIDC_REQUIRE_PKCE") == ("oidc", "require_pkce")
    assert target_of("CAREID_CONFIG") is None
    assert target_of("CAREID_AGENT_PORT") is None


@pytest.mark.parametrize(
    "issuer",
    ["https://careid_broker.trust.example", "https://sso.trust.example:99999"],
)
def test_an_issuer_with_no_usable_origin_is_a_configuration_problem(
    tmp_path: Path, clients_file: Path, issuer: str
) -> None:
    # Card tokens are signed for the issuer's origin: without one, the broker would pass
    # the check and then fail to start.
    data = _settings(clients_file, broker={"issuer": issuer, "secret_key": TEST_SECRET_KEY})
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path, env={})
    assert any(
        p.startswith("broker.issuer:") and "has no usable origin" in p
        for p in raised.value.problems
    ), raised.value.problems


def test_an_issuer_with_a_path_is_a_configuration_problem(
    tmp_path: Path, clients_file: Path
) -> None:
    # The agent sends card-removal notices to the page's origin + /card/removed, and the
    # broker's own pages link from the root: under a path the card lock would do nothing.
    data = _settings(
        clients_file,
        broker={"issuer": "https://intranet.trust.example/careid", "secret_key": TEST_SECRET_KEY},
    )
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path, env={})
    assert any(
        p.startswith("broker.issuer:") and "must have no path" in p for p in raised.value.problems
    ), raised.value.problems


def test_every_problem_is_named_at_once(tmp_path: Path, clients_file: Path) -> None:
    data = _settings(
        clients_file,
        broker={"issuer": "http://sso.example.test/?x=1", "secret_key": "short", "colour": "red"},
        server={"workers": 0},
        database={"url": "mysql://x@y/z"},
        signin={"aup_url": "ftp://example.test", "first_block_seconds": 60, "max_block_seconds": 5},
        ops={"metrics_allowed_networks": ["10.0.0.0/8", "not-a-network"]},
        logs={"level": "INFO"},
    )
    del data["directory"]["bind_dn"]
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path, env={"CAREID_SERVER_THREADS": "x"})
    problems = "\n".join(raised.value.problems)
    expected = [
        "[logs]: is not a known section",
        "broker.issuer: must be https:// unless dev = true",
        "broker.issuer: must have no query or fragment",
        "broker.secret_key: must be at least 32 characters",
        "broker.colour: is not a known setting",
        "server.workers: must be between 1 and 64",
        "database.url: 'mysql' databases are not supported",
        "signin.aup_url: 'ftp://example.test' must be an http(s) URL",
        "signin.max_block_seconds: must not be less than first_block_seconds",
        "ops.metrics_allowed_networks: 'not-a-network' is not an address or network",
        "directory.bind_dn: is required",
        "CAREID_SERVER_THREADS (sets server.threads): must be a whole number",
    ]
    for problem in expected:
        assert problem in problems
    assert raised.value.code.value == "broker_config_invalid"


@pytest.mark.parametrize(
    ("url", "instead"),
    [
        ("postgresql+psycopg2://careid@db.example.test/careid", "postgresql+psycopg://"),
        ("postgresql+asyncpg://careid@db.example.test/careid", "postgresql+psycopg://"),
        ("postgresql+pg8000://careid@db.example.test/careid", "postgresql+psycopg://"),
        ("sqlite+pysqlcipher:///broker.db", "sqlite:///"),
    ],
)
def test_a_database_driver_the_broker_does_not_ship_is_named(
    url: str, instead: str, tmp_path: Path, clients_file: Path
) -> None:
    data = _settings(clients_file, database={"url": url})
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    driver = url.partition(":")[0]
    [problem] = [p for p in raised.value.problems if p.startswith("database.url:")]
    assert f"{driver!r} is not a driver the broker uses" in problem
    assert f"write {instead}" in problem


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///broker.db",
        "sqlite+pysqlite:///broker.db",
        "postgresql://careid@db.example.test/careid",
        "postgresql+psycopg://careid@db.example.test/careid",
    ],
)
def test_the_database_drivers_the_broker_ships_are_accepted(
    url: str, tmp_path: Path, clients_file: Path
) -> None:
    data = _settings(clients_file, database={"url": url})
    assert BrokerConfig.from_mapping(data, base_dir=tmp_path).database.url


def test_the_public_demo_key_is_refused_outside_development(
    tmp_path: Path, clients_file: Path
) -> None:
    data = _settings(clients_file, broker={"secret_key": DEMO_SECRET_KEY})
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    assert any("public demo key" in p for p in raised.value.problems)
    data["broker"].update(dev=True, issuer="http://localhost:5000")
    assert BrokerConfig.from_mapping(data, base_dir=tmp_path).broker.dev


def test_previous_secret_keys_are_checked_and_kept_out_of_the_repr(
    tmp_path: Path, clients_file: Path
) -> None:
    current = _settings(clients_file)["broker"]["secret_key"]
    env = {"CAREID_PREVIOUS_SECRET_KEYS": f"{'p' * 40}, {'q' * 40}"}
    config = BrokerConfig.from_mapping(_settings(clients_file), base_dir=tmp_path, env=env)
    assert config.broker.previous_secret_keys == ("p" * 40, "q" * 40)
    assert "p" * 40 not in repr(config)
    # Once a replacement is over the list is empty, in the file or the environment.
    for settings, env in (
        (_settings(clients_file, broker={"previous_secret_keys": []}), {}),
        (_settings(clients_file), {"CAREID_PREVIOUS_SECRET_KEYS": ""}),
    ):
        empty = BrokerConfig.from_mapping(settings, base_dir=tmp_path, env=env)
        assert empty.broker.previous_secret_keys == ()
    for keys, problem in (
        (["short"], "each must be at least 32 characters"),
        ([current], "must not hold the current secret_key"),
        ([DEMO_SECRET_KEY], "must not hold the public demo key"),
    ):
        data = _settings(clients_file, broker={"previous_secret_keys": keys})
        with pytest.raises(BrokerConfigError) as raised:
            BrokerConfig.from_mapping(data, base_dir=tmp_path)
        assert f"broker.previous_secret_keys: {problem}" in raised.value.problems


def test_the_op_section_is_checked_by_the_op(tmp_path: Path) -> None:
    data = _settings(tmp_path / "missing-clients.toml")
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    assert any("missing-clients.toml" in p for p in raised.value.problems)


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError) as raised:
        load_config(tmp_path / "nope.toml", env={})
    assert "cannot read" in raised.value.problems[0]
    broken = tmp_path / "broken.toml"
    broken.write_text("[broker\n")
    with pytest.raises(BrokerConfigError) as raised:
        load_config(broken, env={})
    assert "not valid TOML" in raised.value.problems[0]


def test_a_configuration_file_that_is_not_utf8_is_named(tmp_path: Path, clients_file: Path) -> None:
    # A comment with an accent, saved by an editor set to Latin-1.
    latin = tmp_path / "broker.toml"
    latin.write_bytes('[broker]\n# Caf\u00e9 de la gare\nissuer = "x"\n'.encode("latin-1"))
    with pytest.raises(BrokerConfigError) as raised:
        load_config(latin, env={})
    assert raised.value.problems == (f"{latin}: is not UTF-8 text (line 2): save it as UTF-8",)


@pytest.mark.parametrize("setting", ["clients_file", "organisations_file"])
def test_an_oidc_file_that_is_not_utf8_is_named(
    setting: str, tmp_path: Path, clients_file: Path
) -> None:
    latin = tmp_path / "latin.txt"
    good = clients_file.read_bytes() if setting == "clients_file" else b"X26,NHS England\n"
    latin.write_bytes(good + "# Caf\u00e9 client\n".encode("latin-1"))
    data = _settings(clients_file, oidc={setting: str(latin)})
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    line = good.count(b"\n") + 1
    assert any(
        f"{latin}: is not UTF-8 text (line {line}): save it as UTF-8" in problem
        for problem in raised.value.problems
    ), raised.value.problems


@pytest.mark.parametrize(
    ("session_acr", "requested", "expected"),
    [
        (ACR_PASSWORD, None, True),
        (ACR_PASSWORD, "", True),
        (ACR_PASSWORD, "AAL1_USERPASS", True),
        (ACR_PASSWORD, "AAL3_ANY", False),
        (ACR_PASSWORD, "AAL3_SMARTCARD", False),
        (ACR_PASSWORD, "AAL1_USERPASS AAL3_ANY", True),  # any one listed value will do
        (ACR_PASSWORD, "urn:unknown:acr", False),  # values it cannot read are not met
        (ACR_PASSWORD, "urn:unknown:acr AAL3_ANY", False),
        (ACR_CARD, "AAL3_ANY", True),
        (ACR_CARD, "AAL1_USERPASS", True),
        (ACR_CARD, ["AAL3_SMARTCARD"], True),
        ("something-else", "AAL1_USERPASS", False),
    ],
)
def test_acr_satisfaction(session_acr: str, requested: Any, expected: bool) -> None:
    assert satisfies(session_acr, requested) is expected


def test_demands_card() -> None:
    assert demands_card("AAL3_ANY") and not demands_card(None)
    assert not demands_card("AAL3_ANY AAL1_USERPASS")


def test_throttle_counters_outlive_the_directorys_lockout_window(
    tmp_path: Path, clients_file: Path
) -> None:
    # A directory that counts failures for three days: its guard's counters must be kept
    # as long, whatever [retention] throttle_counters_days says.
    data = _settings(clients_file, signin={"directory_lockout_window_seconds": 3 * 86400})
    config = BrokerConfig.from_mapping(data, base_dir=tmp_path)
    assert config.signin.account_throttle.guard_window == timedelta(days=3)
    assert config.retention.policy.throttle_counters >= timedelta(days=3)

    longer = _settings(clients_file, retention={"throttle_counters_days": 10})
    kept = BrokerConfig.from_mapping(longer, base_dir=tmp_path).retention.policy
    assert kept.throttle_counters == timedelta(days=10)


def test_an_empty_secret_is_a_problem_not_none(tmp_path: Path, clients_file: Path) -> None:
    # An empty variable (a deployment template with nothing filled in) would otherwise
    # silently mean "no passphrase" and override the one in the file.
    data = _settings(clients_file, oidc={"signing_key_passphrase": "from-the-file"})
    env = {"CAREID_OIDC_SIGNING_KEY_PASSPHRASE": "", "CAREID_DIRECTORY_BIND_PASSWORD": " "}
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path, env=env)
    empty = [p.split(":")[0] for p in raised.value.problems if "set but empty" in p]
    assert empty == ["directory.bind_password", "oidc.signing_key_passphrase"]


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:broker?mode=memory&uri=true"]
)
def test_an_in_memory_database_is_for_development_only(
    url: str, tmp_path: Path, clients_file: Path
) -> None:
    # Each worker would have its own empty database, lost at exit.
    data = _settings(clients_file, database={"url": url})
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    assert [p for p in raised.value.problems if p.startswith("database.url:")] == [
        "database.url: an in-memory SQLite database is lost at exit and not shared between"
        " workers: it needs dev = true"
    ]
    data["broker"]["dev"] = True
    assert BrokerConfig.from_mapping(data, base_dir=tmp_path).database.url == url


@pytest.mark.parametrize(
    ("bind", "problem"),
    [
        ("127.0.0.1:99999", "port 99999 is not between 1 and 65535"),
        ("127.0.0.1:0", "port 0 is not between 1 and 65535"),
        ("127.0.0.1", "must be HOST:PORT"),
        ("127.0.0.1:http", "must be HOST:PORT"),
        (":5000", "must be HOST:PORT"),
        ("[::1:5000", "must be HOST:PORT"),
    ],
)
def test_a_bind_address_must_be_host_and_port(
    bind: str, problem: str, tmp_path: Path, clients_file: Path
) -> None:
    data = _settings(clients_file, server={"bind": bind})
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    [named] = raised.value.problems
    assert named.startswith(f"server.bind: {bind!r} {problem}")


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "[::1]:5000", "broker.internal:443"])
def test_good_bind_addresses_pass(bind: str, tmp_path: Path, clients_file: Path) -> None:
    data = _settings(clients_file, server={"bind": bind})
    assert BrokerConfig.from_mapping(data, base_dir=tmp_path).server.bind == bind
