"""DirectoryConfig and AttributeMapping from TOML tables: every problem is named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from careid_broker.codes import BrokerCode
from careid_broker.directory import (
    AttributeMapping,
    DirectoryConfig,
    PoolStrategy,
    StatusKind,
    TimeFormat,
    TlsMode,
)
from careid_broker.errors import DirectoryConfigError

MINIMAL: dict[str, object] = {
    "urls": ["ldap://dir.trust.example"],
    "bind_dn": "cn=careid-broker,ou=services,dc=nhs,dc=example",
    "bind_password": "s3cret-service-password",
    "accounts_base": "ou=people,dc=nhs,dc=example",
    "care_identities_base": "ou=careidentities,dc=nhs,dc=example",
    "current_aup_version": "2024-1",
}


def _problems(data: dict[str, object], **kwargs: object) -> list[str]:
    with pytest.raises(DirectoryConfigError) as caught:
        DirectoryConfig.from_mapping(data, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == BrokerCode.DIRECTORY_CONFIG_INVALID
    return list(caught.value.problems)


def test_minimal_config_and_defaults() -> None:
    config = DirectoryConfig.from_mapping(MINIMAL)
    assert config.urls == ("ldap://dir.trust.example",)
    assert config.pool_strategy is PoolStrategy.FIRST
    assert config.use_tls is TlsMode.NONE
    assert config.writable is False
    assert config.mapping == AttributeMapping()
    (server,) = config.servers()
    assert (server.host, server.port, server.use_ssl) == ("dir.trust.example", 389, False)


def test_the_password_stays_out_of_repr() -> None:
    config = DirectoryConfig.from_mapping(
        {**MINIMAL, "write_bind_dn": "cn=w,dc=x", "write_bind_password": "writer-secret"}
    )
    assert "s3cret-service-password" not in repr(config)
    assert "writer-secret" not in repr(config)


def test_empty_table_names_every_required_setting() -> None:
    problems = _problems({})
    for key in (
        "urls",
        "bind_dn",
        "bind_password",
        "accounts_base",
        "care_identities_base",
        "current_aup_version",
    ):
        assert any(p.startswith(f"directory.{key}:") for p in problems), key


def test_many_problems_at_once() -> None:
    problems = _problems(
        {
            **MINIMAL,
            "urls": ["http://dir", "ldaps://dir:636", "ldap://dir/ou=x", "ldap://:389"],
            "use_tls": "sometimes",
            "pool_strategy": "random",
            "connect_timeout": -1,
            "receive_timeout": "10",
            "writable": "yes",
            "accounts_base": "not a dn",
            "search_limit": 0,
            "bind_dn_typo": "x",
        }
    )
    joined = "\n".join(problems)
    assert "directory.urls[0]: 'http://dir' must start with ldap:// or ldaps://" in joined
    assert "directory.urls[1]: 'ldaps://dir:636' does not match use_tls = 'none'" in joined
    assert "directory.urls[2]" in joined and "directory.urls[3]" in joined
    assert "directory.use_tls: must be one of: none, ldaps, starttls" in joined
    assert "directory.pool_strategy: must be one of: first, round_robin" in joined
    assert "directory.connect_timeout: must be between" in joined
    assert "directory.receive_timeout: must be a number" in joined
    assert "directory.writable: must be true or false" in joined
    assert "directory.accounts_base: 'not a dn' is not a valid DN" in joined
    assert "directory.search_limit: must be between 1 and 1000" in joined
    assert "directory.bind_dn_typo: is not a known setting" in joined
    # The service password never appears in a configuration error.
    assert "s3cret" not in joined


def test_ldaps_urls_need_ldaps_mode(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = DirectoryConfig.from_mapping(
        {
            **MINIMAL,
            "urls": ["ldaps://a", "ldaps://b:3269"],
            "use_tls": "ldaps",
            "ca_file": "ca.pem",
        },
        base_dir=tmp_path,
    )
    assert [(s.host, s.port, s.use_ssl) for s in config.servers()] == [
        ("a", 636, True),
        ("b", 3269, True),
    ]
    assert config.ca_file == ca
    problems = _problems(
        {**MINIMAL, "use_tls": "starttls", "ca_file": "missing.pem"}, base_dir=tmp_path
    )
    assert any("directory.ca_file:" in p and "not a readable file" in p for p in problems)


def test_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    data = {k: v for k, v in MINIMAL.items() if k != "bind_password"}
    config = DirectoryConfig.from_mapping(
        {**data, "bind_password_file": "secret"}, base_dir=tmp_path
    )
    assert config.bind_password == "from-file"
    assert any(
        "bind_password_file" in p
        for p in _problems({**data, "bind_password_file": "nope"}, base_dir=tmp_path)
    )
    assert any(
        "not both" in p
        for p in _problems({**MINIMAL, "bind_password_file": "secret"}, base_dir=tmp_path)
    )


def test_writer_credentials_go_together() -> None:
    assert any("write_bind_dn" in p for p in _problems({**MINIMAL, "write_bind_dn": "cn=w"}))


def test_the_ad_sample_mapping_loads_by_file() -> None:
    folder = Path(__file__).resolve().parents[2] / "config" / "ldap"
    config = DirectoryConfig.from_mapping(
        {**MINIMAL, "mapping_file": "active-directory.toml"}, base_dir=folder
    )
    accounts = config.mapping.accounts
    assert accounts.status.kind is StatusKind.BITFLAG
    assert accounts.status.attribute == "userAccountControl"
    assert accounts.status.disabled_mask == 0x2
    assert accounts.expiry == "accountExpires"
    assert accounts.expiry_format is TimeFormat.FILETIME
    assert accounts.admin_org_codes_separator == ","
    assert config.mapping.care_identities.roles_separator == ";"


def test_mapping_problems_are_named_with_their_path() -> None:
    problems = _problems(
        {
            **MINIMAL,
            "mapping": {
                "accounts": {
                    "mail": "mail)(objectClass=*",
                    "status": {"kind": "bits", "disabled_mask": -2, "colour": "red"},
                    "expiry_format": "unix",
                    "given_name": 5,
                },
                "care_identities": {
                    "status": {"active_values": ["active"], "inactive_values": ["Active"]},
                    "roles_separator": "|",
                },
                "extra": {},
            },
        }
    )
    joined = "\n".join(problems)
    assert (
        "directory.mapping.accounts.mail: 'mail)(objectClass=*' is not an LDAP attribute" in joined
    )
    assert "directory.mapping.accounts.status.kind: must be one of: values, bitflag" in joined
    assert "directory.mapping.accounts.status.disabled_mask: must be between" in joined
    assert "directory.mapping.accounts.status.colour: is not a known setting" in joined
    assert "directory.mapping.accounts.expiry_format: must be one of" in joined
    assert "directory.mapping.accounts.given_name: must be a string" in joined
    assert (
        "directory.mapping.care_identities.status.active_values: also listed as inactive" in joined
    )
    assert "directory.mapping.care_identities.roles_separator: must differ" in joined
    assert "directory.mapping.extra: is not a known setting" in joined


def test_a_broken_mapping_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[accounts\n")
    problems = _problems({**MINIMAL, "mapping_file": "bad.toml"}, base_dir=tmp_path)
    assert any("mapping_file" in p and "not valid TOML" in p for p in problems)


def test_empty_string_unmaps_an_optional_attribute() -> None:
    mapping = AttributeMapping.from_mapping({"accounts": {"expiry": "", "admin_org_codes": ""}})
    assert mapping.accounts.expiry is None
    assert mapping.accounts.admin_org_codes is None
    assert "careidAccountExpires" not in mapping.accounts.attributes()


def test_the_entry_id_is_asked_for_by_name_and_may_be_unmapped_or_binary() -> None:
    # entryUUID is operational: a search returns it only when it is named.
    assert "entryUUID" in AttributeMapping().accounts.attributes()
    assert AttributeMapping().accounts.binary_attributes() == frozenset()
    unmapped = AttributeMapping.from_mapping({"accounts": {"entry_id": ""}}).accounts
    assert unmapped.entry_id is None and "entryUUID" not in unmapped.attributes()
    assert unmapped.binary_attributes() == frozenset()
    ad = AttributeMapping.from_mapping(
        {"accounts": {"entry_id": "objectGUID", "entry_id_binary": True}}
    ).accounts
    assert ad.binary_attributes() == frozenset({"objectguid"})


def test_attribute_mapping_from_toml_text() -> None:
    data = tomllib.loads(
        '[accounts.status]\nkind = "bitflag"\nattribute = "uac"\ndisabled_mask = 0x2\n'
    )
    rule = AttributeMapping.from_mapping(data).accounts.status
    assert (rule.kind, rule.attribute, rule.disabled_mask) == (StatusKind.BITFLAG, "uac", 2)
    with pytest.raises(DirectoryConfigError) as caught:
        AttributeMapping.from_mapping({"accounts": "nope"})
    assert caught.value.problems == ("mapping.accounts: must be a table, not str",)


def test_default_timeouts_fit_a_person_waiting_at_the_sign_in_page() -> None:
    # One connect plus one receive: a stopped directory is reported in about 5 s.
    config = DirectoryConfig.from_mapping(MINIMAL)
    assert config.connect_timeout + config.receive_timeout <= 5.0
    assert (config.connect_timeout, config.receive_timeout) == (2.0, 3.0)


@pytest.mark.parametrize("setting", ["bind_password_file", "mapping_file"])
def test_a_file_that_is_not_utf8_is_named_without_its_content(setting: str, tmp_path: Path) -> None:
    (tmp_path / "latin").write_bytes("p\u00a3ssword\n".encode("latin-1"))
    data = {k: v for k, v in MINIMAL.items() if k != "bind_password"}
    if setting == "mapping_file":
        data["bind_password"] = MINIMAL["bind_password"]
    problems = _problems({**data, setting: "latin"}, base_dir=tmp_path)
    assert problems == [
        f"directory.{setting}: {str(tmp_path / 'latin')!r} is not UTF-8 text (line 1):"
        " save it as UTF-8"
    ]
