"""Every typed setting can be overridden from the environment without being in the file.

An override of a setting absent from the file is typed from `config_env.KNOWN_TYPES`; a
setting missing there is taken as text and refused ("must be a whole number"). The
settings are enumerated from what the readers themselves ask for (each typed read is
recorded, with its default), so a setting added to a reader and not to the table fails
here rather than in an operator's hands.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import REPO, TEST_SECRET_KEY
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from careid_broker.config import BrokerConfig, BrokerConfigError
from careid_broker.config_env import ENV_PREFIX, KNOWN_TYPES, SECTIONS, apply_env_overrides
from careid_broker.pki import config as pki_config
from careid_broker.settings import SettingsReader

# The problems a reader names when a value has the wrong type (not a wrong value).
TYPE_PROBLEMS = (
    "must be a whole number",
    "must be a number",
    "must be true or false",
    "must be a non-empty list of non-empty strings",
    "must be a list of non-empty strings",
)


@dataclass(frozen=True, kw_only=True)
class TypedSetting:
    section: str
    key: str
    kind: str
    default: object

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}{self.section}_{self.key}".upper()

    def sample(self) -> str:
        """A value of the right type as environment text (the default where there is one)."""
        if self.kind == "bool":
            return "true" if self.default else "false"
        if self.kind == "list":
            items = self.default if isinstance(self.default, tuple) and self.default else ("x",)
            return ",".join(str(item) for item in items)
        return str(self.default)


def _record(monkeypatch: pytest.MonkeyPatch) -> list[TypedSetting]:
    """Wrap the readers' typed methods to note each (table, key, kind, default) asked for."""
    seen: list[TypedSetting] = []

    def wrap(cls: type[SettingsReader], name: str, kind: str) -> None:
        original = getattr(cls, name)

        def recording(self: SettingsReader, key: str, *args: Any, **kwargs: Any) -> Any:
            default = args[0] if args else kwargs.get("default")
            where = self.path(None)
            if where in SECTIONS:  # the environment sets a section's own keys only
                seen.append(TypedSetting(section=where, key=key, kind=kind, default=default))
            return original(self, key, *args, **kwargs)

        monkeypatch.setattr(cls, name, recording)

    wrap(SettingsReader, "integer", "int")
    wrap(SettingsReader, "number", "float")
    wrap(SettingsReader, "boolean", "bool")
    wrap(SettingsReader, "strings", "list")
    wrap(pki_config._Reader, "string_list", "list")
    return seen


def _ca_file(folder: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Env Types Test Root")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / "root-ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _every_section(tmp_path: Path, clients_file: Path) -> dict[str, Any]:
    """A valid file with every section present (so every reader runs), keys at defaults."""
    data: dict[str, Any] = {name: {} for name in SECTIONS}
    data["broker"] = {"issuer": "https://sso.example.test", "secret_key": TEST_SECRET_KEY}
    data["database"] = {"url": "sqlite:///broker.db"}
    data["directory"] = {
        "urls": ["ldap://127.0.0.1:3389"],
        "bind_dn": "cn=careid-broker,ou=services,dc=nhs,dc=example",
        "bind_password": "Demo-Broker-Service-1",
        "accounts_base": "ou=people,dc=nhs,dc=example",
        "care_identities_base": "ou=careidentities,dc=nhs,dc=example",
        "current_aup_version": "2024-1",
    }
    data["oidc"] = {"clients_file": str(clients_file)}
    data["pki"] = {"trust_anchors": [str(_ca_file(tmp_path))]}
    return data


@pytest.fixture
def typed_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clients_file: Path
) -> tuple[list[TypedSetting], dict[str, Any]]:
    data = _every_section(tmp_path, clients_file)
    seen = _record(monkeypatch)
    BrokerConfig.from_mapping(data, base_dir=tmp_path, env={})
    monkeypatch.undo()
    unique = {(s.section, s.key): s for s in seen}
    return sorted(unique.values(), key=lambda s: (s.section, s.key)), data


def test_the_enumeration_covers_the_documented_typed_settings(
    typed_settings: tuple[list[TypedSetting], dict[str, Any]],
) -> None:
    settings, _ = typed_settings
    found = {(s.section, s.key) for s in settings}
    shipped = tomllib.loads((REPO / "config" / "broker.toml").read_text(encoding="utf-8"))
    documented = {
        (section, key)
        for section, table in shipped.items()
        for key, value in table.items()
        if isinstance(value, bool | int | float | list)
    }
    assert documented <= found, documented - found
    assert ("signin", "directory_lockout_failures") in found


def test_each_typed_setting_has_its_type_in_the_table(
    typed_settings: tuple[list[TypedSetting], dict[str, Any]],
) -> None:
    settings, _ = typed_settings
    wrong = {
        s.env_name: (s.kind, KNOWN_TYPES.get((s.section, s.key)))
        for s in settings
        if KNOWN_TYPES.get((s.section, s.key)) != s.kind
    }
    assert wrong == {}


def test_each_typed_setting_overrides_from_the_environment_alone(
    typed_settings: tuple[list[TypedSetting], dict[str, Any]], tmp_path: Path
) -> None:
    settings, data = typed_settings
    refused: dict[str, str] = {}
    for setting in settings:
        file_data = {name: dict(table) for name, table in data.items()}
        file_data[setting.section].pop(setting.key, None)
        env = {setting.env_name: setting.sample()}
        try:
            config = BrokerConfig.from_mapping(file_data, base_dir=tmp_path, env=env)
        except BrokerConfigError as exc:
            mine = [
                p
                for p in exc.problems
                if setting.env_name in p
                or (
                    p.startswith(f"{setting.section}.{setting.key}")
                    and any(t in p for t in TYPE_PROBLEMS)
                )
            ]
            if mine:
                refused[setting.env_name] = "; ".join(mine)
            continue
        if setting.env_name not in config.env_overrides:
            refused[setting.env_name] = "not applied"
    assert refused == {}


def test_an_override_takes_the_settings_type_not_the_files_value() -> None:
    # The file says 15 (a whole number); the setting is a number of seconds, and 2.5 is
    # one. A list setting written as one string in the file is still a list.
    data = {"database": {"busy_timeout_seconds": 15}, "server": {"workers": 3}}
    merged, applied, problems = apply_env_overrides(
        data,
        {"CAREID_DATABASE_BUSY_TIMEOUT_SECONDS": "2.5", "CAREID_SERVER_WORKERS": "4"},
    )
    assert problems == []
    assert merged["database"]["busy_timeout_seconds"] == 2.5
    assert merged["server"]["workers"] == 4
    assert len(applied) == 2
