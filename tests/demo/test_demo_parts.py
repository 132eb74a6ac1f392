"""The demo's parts that need no running service: accounts, ports, workspace, settings."""

from __future__ import annotations

import re
import socket
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from careid_agent.config import Overrides, PinProviderKind, parse_config
from careid_broker.config import BrokerConfig
from careid_broker.oidc.clients import load_clients
from careid_devkit.demo import (
    DEMO_ACCOUNTS,
    DEMO_PIN,
    UNREGISTERED_UUID,
    DemoPorts,
    DemoUrls,
    PortInUseError,
    demo_cards,
    free_port,
)
from careid_devkit.demo.configs import (
    agent_settings,
    broker_settings,
    clients_settings,
    to_toml,
    write_toml,
)
from careid_devkit.demo.workspace import Workspace, issue_demo_cards
from careid_devkit.slapd import DEMO_SEED
from careid_devkit.tray import CardKind, read_manifest
from careid_devkit.webmail.config import DEMO_CLIENT_SECRET

REPO = Path(__file__).resolve().parents[2]


def _ldif_people() -> dict[str, dict[str, str]]:
    people: dict[str, dict[str, str]] = {}
    for block in DEMO_SEED.read_text(encoding="utf-8").split("\n\n"):
        values = dict(
            line.split(": ", 1) for line in block.splitlines() if re.match(r"^[A-Za-z]+: ", line)
        )
        if "careidMailAccount" in block and "uid" in values:
            people[values["uid"]] = values
    return people


def test_the_demo_accounts_are_the_people_of_the_demo_directory() -> None:
    people = _ldif_people()
    assert sorted(people) == sorted(account.uid for account in DEMO_ACCOUNTS)
    for account in DEMO_ACCOUNTS:
        person = people[account.uid]
        assert person["mail"] == account.mail
        assert person["cn"] == account.name
        assert person["careidCareIdentityUuid"] == account.uuid
        assert person["careidOrgCode"] == account.org
    assert [a.uuid for a in DEMO_ACCOUNTS] == [f"55500000000{n}" for n in range(1, 10)]


def test_demo_cards_cover_every_account_and_the_bad_cards() -> None:
    cards = demo_cards()
    ids = [card.card_id for card in cards]
    assert len(set(ids)) == len(ids)
    assert {a.uuid for a in DEMO_ACCOUNTS} | {UNREGISTERED_UUID} <= set(ids)
    alex = {card.kind for card in cards if card.uuid == "555000000001"}
    assert alex == {CardKind.VALID, CardKind.REVOKED, CardKind.EXPIRED, CardKind.UNTRUSTED}
    assert all(card.kind is CardKind.VALID for card in cards if card.card_id == card.uuid)


def test_ports_resolve_zero_to_distinct_free_ports() -> None:
    ports = DemoPorts(broker=0, webmail=0, tray=0, agent=0, pki=0, ldap=0).resolve()
    chosen = [ports.broker, ports.webmail, ports.tray, ports.agent, ports.pki, ports.ldap]
    assert 0 not in chosen and len(set(chosen)) == len(chosen)


def test_a_taken_port_is_refused_naming_the_part_and_its_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            DemoPorts(broker=0, webmail=port, tray=0, agent=0, pki=0, ldap=0).resolve()
        assert caught.value.flag == "--webmail-port"
        assert caught.value.code == "devkit_demo_port_in_use"
        assert f"port {port} (the webmail)" in str(caught.value)
        # The tests' own choice steps around it.
        assert port not in vars(DemoPorts.defaults_or_free()).values()
    same = free_port()
    with pytest.raises(PortInUseError):
        DemoPorts(broker=same, webmail=same, tray=0, agent=0, pki=0, ldap=0).resolve()


def test_workspace_cards_are_what_their_kind_says(tmp_path: Path) -> None:
    workspace = Workspace(root=tmp_path / "ws")
    issued = issue_demo_cards(workspace, pki_base_url="http://127.0.0.1:5080")
    now = datetime.now(UTC)
    assert read_manifest(issued.manifest) == issued.cards
    revoked_serials = {rev.serial for rev in issued.pki.state().revocations}
    by_id = {card.card_id: card for card in issued.cards}
    for card in issued.cards:
        profile = card.load()
        assert profile.pin == DEMO_PIN and profile.uuid == card.uuid
        cert = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
        ours = cert.issuer == issued.pki.issuing_certificate.subject
        ocsp = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        assert "http://127.0.0.1:5080/ocsp" in str(ocsp.value)
        assert (cert.serial_number in revoked_serials) == (card.kind is CardKind.REVOKED)
        assert (cert.not_valid_after_utc < now) == (card.kind is CardKind.EXPIRED)
        assert ours == (card.kind is not CardKind.UNTRUSTED)
    assert by_id["555000000004"].load().algorithm == "p384"
    assert by_id["555000000005"].load().algorithm == "rsa2048"


def test_to_toml_writes_nested_tables_and_values() -> None:
    text = to_toml({"a": {"s": 'x"y', "n": 3, "f": 1.5, "b": True, "l": ["p", "q"], "t": {"k": 1}}})
    assert tomllib.loads(text) == {
        "a": {"s": 'x"y', "n": 3, "f": 1.5, "b": True, "l": ["p", "q"], "t": {"k": 1}}
    }


def test_generated_settings_are_accepted_by_the_broker_and_the_agent(tmp_path: Path) -> None:
    ports = DemoPorts(broker=5100, webmail=5101, tray=5103, agent=47700, pki=5180, ldap=3390)
    urls = DemoUrls(ports=ports)
    issued = issue_demo_cards(
        Workspace(root=tmp_path), pki_base_url=urls.pki, specs=demo_cards()[:1]
    )
    clients = write_toml(tmp_path / "clients.toml", clients_settings(urls), header="test")
    directory = {
        "urls": ["ldap://127.0.0.1:3390"],
        "bind_dn": "cn=careid-broker,ou=services,dc=nhs,dc=example",
        "bind_password": "Demo-Broker-Service-1",
        "accounts_base": "ou=people,dc=nhs,dc=example",
        "care_identities_base": "ou=careidentities,dc=nhs,dc=example",
        "current_aup_version": "2024-1",
    }
    tables = broker_settings(
        urls=urls,
        slapd=directory,
        database_url=f"sqlite:///{tmp_path / 'broker.db'}",
        pki=issued.pki,
        clients_file=clients,
    )
    path = write_toml(tmp_path / "broker.toml", tables, header="test")
    assert path.stat().st_mode & 0o077 == 0  # it holds the cookie secret
    config = BrokerConfig.from_mapping(tomllib.loads(path.read_text()), base_dir=tmp_path)
    assert config.broker.issuer == "http://localhost:5100"
    assert config.broker.dev
    assert config.server.bind == "127.0.0.1:5100"

    webmail = load_clients(clients).get("webmail")
    assert webmail is not None
    assert webmail.redirect_uris == ("http://localhost:5101/callback",)
    assert webmail.backchannel_logout_uri == "http://localhost:5101/backchannel-logout"
    assert webmail.check_secret(DEMO_CLIENT_SECRET)

    agent = parse_config(
        agent_settings(
            urls,
            reader="Virtual PCD 00 00",
            pin_provider="env",
            card_sessions_file=tmp_path / "agent" / "card-sessions.json",
        ),
        overrides=Overrides(dev=True),
    )
    assert agent.allowed_origins == ("http://localhost:5100",)
    # The demo's agent keeps its card sessions in the workspace, not the user's own file.
    assert agent.card_sessions_file == tmp_path / "agent" / "card-sessions.json"
    assert agent.port == 47700 and agent.reader == "Virtual PCD 00 00"
    assert agent.pin_provider is PinProviderKind.ENV
