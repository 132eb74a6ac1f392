"""`[card]` and `[pki]`: defaults, every problem named, environment overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import TEST_SECRET_KEY
from card_support import CardPki

from careid_broker.config import BrokerConfig, BrokerConfigError
from careid_broker.store import LinkMode

DIRECTORY = {
    "urls": ["ldap://127.0.0.1:3389"],
    "bind_dn": "cn=careid-broker,ou=services,dc=nhs,dc=example",
    "bind_password": "Demo-Broker-Service-1",
    "accounts_base": "ou=people,dc=nhs,dc=example",
    "care_identities_base": "ou=careidentities,dc=nhs,dc=example",
    "current_aup_version": "2024-1",
}


def _settings(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    clients = tmp_path / "clients.toml"
    clients.write_text('[clients.rp]\nredirect_uris = ["https://rp.example.test/cb"]\n')
    data: dict[str, Any] = {
        "broker": {"issuer": "https://sso.example.test", "secret_key": TEST_SECRET_KEY},
        "database": {"url": "sqlite:///broker.db"},
        "directory": dict(DIRECTORY),
        "oidc": {"clients_file": str(clients)},
    }
    data.update(sections)
    return data


def test_defaults_and_no_pki_means_card_sign_in_is_off(tmp_path: Path) -> None:
    config = BrokerConfig.from_mapping(_settings(tmp_path), base_dir=tmp_path)
    card = config.card
    assert config.pki is None
    assert card.agent_url == "http://127.0.0.1:47600"
    assert card.agent_origin == "http://127.0.0.1:47600"
    assert card.challenge_lifetime == timedelta(minutes=5)
    assert card.link_mode is LinkMode.UUID and card.session_lock is True
    assert card.agent_install_url is None
    assert card.registration_lifetime == timedelta(minutes=15)


def test_a_pki_section_is_loaded(tmp_path: Path, card_pki: CardPki) -> None:
    data = _settings(tmp_path, pki=card_pki.pki_settings(), card={"link_mode": "certificate"})
    config = BrokerConfig.from_mapping(data, base_dir=tmp_path)
    assert config.pki is not None and len(config.pki.trust_anchors) == 1
    assert config.card.link_mode is LinkMode.CERTIFICATE


def test_every_problem_is_named(tmp_path: Path) -> None:
    data = _settings(
        tmp_path,
        card={
            "agent_url": "http://127.0.0.1:47600/v1",
            "link_mode": "email",
            "session_lock": "yes",
            "challenge_lifetime_seconds": 5,
            "agent_install_url": "ftp://example.test/agent",
            "pin": "1234",
        },
        pki={"trust_anchors": ["missing.pem"]},
    )
    with pytest.raises(BrokerConfigError) as raised:
        BrokerConfig.from_mapping(data, base_dir=tmp_path)
    problems = "\n".join(raised.value.problems)
    for fragment in (
        "card.agent_url",
        "card.link_mode: must be one of: uuid, certificate",
        "card.session_lock: must be true or false",
        "card.challenge_lifetime_seconds",
        "card.agent_install_url",
        "card.pin: is not a known setting",
        "pki.trust_anchors[0]",
    ):
        assert fragment in problems, fragment


def test_environment_overrides_reach_the_card_section(tmp_path: Path) -> None:
    env = {
        "CAREID_CARD_SESSION_LOCK": "false",
        "CAREID_CARD_LINK_MODE": "certificate",
        "CAREID_CARD_CHALLENGE_LIFETIME_SECONDS": "120",
    }
    config = BrokerConfig.from_mapping(_settings(tmp_path), base_dir=tmp_path, env=env)
    assert config.card.session_lock is False
    assert config.card.link_mode is LinkMode.CERTIFICATE
    assert config.card.challenge_lifetime == timedelta(seconds=120)
