"""The demo's workspace: a development PKI, a card profile per demo card, the tray manifest.

    WORKSPACE/pki/             the development PKI (root + issuing CA, CRL, OCSP signer)
    WORKSPACE/untrusted-ca/    another CA's certificates (the broker does not trust it)
    WORKSPACE/cards/           one card profile per card, and cards.json for the tray
    WORKSPACE/broker/ agent/   generated settings (see configs.py); broker.db
    WORKSPACE/slapd/           the throwaway directory
    WORKSPACE/logs/            every process's output

DEMO/TEST MATERIAL: keys and PINs in the clear.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from careid_devkit.card_profile import CardProfile, KeyAlgorithm, save_profile
from careid_devkit.demo.accounts import DEMO_PIN, CardSpec, demo_cards
from careid_devkit.pki import Pki, expired_validity, init_pki
from careid_devkit.pki.certs import build_issuing_ca, build_root_ca
from careid_devkit.pki.constants import CA_BACKDATE, ISSUING_CA_LIFETIME
from careid_devkit.tray.model import CardKind, TrayCard, write_manifest

log = logging.getLogger(__name__)

#: A mix of key types, so the demo (and the end-to-end tests) sign with each of them.
CARD_ALGORITHMS: dict[str, KeyAlgorithm] = {
    "555000000004": KeyAlgorithm.P384,
    "555000000005": KeyAlgorithm.RSA2048,
}


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """The folders of one demo run."""

    root: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def untrusted_ca_dir(self) -> Path:
        return self.root / "untrusted-ca"

    @property
    def cards_dir(self) -> Path:
        return self.root / "cards"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def agent_dir(self) -> Path:
        return self.root / "agent"

    @property
    def slapd_dir(self) -> Path:
        return self.root / "slapd"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def make(self) -> None:
        """Create the folders (private: the workspace holds keys)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (self.cards_dir, self.broker_dir, self.agent_dir, self.logs_dir):
            folder.mkdir(exist_ok=True, mode=0o700)


@dataclass(frozen=True, kw_only=True)
class IssuedCards:
    """What `issue_demo_cards` made."""

    pki: Pki
    untrusted_ca: UntrustedCa
    cards: tuple[TrayCard, ...]
    manifest: Path


@dataclass(frozen=True, kw_only=True)
class UntrustedCa:
    """A root and issuing CA of their own names, which no demo setting trusts."""

    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey


def make_untrusted_ca(folder: Path, *, now: datetime) -> UntrustedCa:
    """A second, unrelated CA (certificates written to `folder`, keys kept in memory)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(
        key=root_key,
        name=_name("Untrusted Root CA (demo)"),
        not_before=now - CA_BACKDATE,
        not_after=now + ISSUING_CA_LIFETIME,
    )
    issuing = build_issuing_ca(
        key_public=issuing_key.public_key(),
        name=_name("Untrusted Issuing CA (demo)"),
        issuer=root,
        issuer_key=root_key,
        not_before=now - CA_BACKDATE,
        not_after=now + ISSUING_CA_LIFETIME,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for cert, file in ((root, "root-ca.pem"), (issuing, "issuing-ca.pem")):
        (folder / file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return UntrustedCa(root=root, issuing=issuing, issuing_key=issuing_key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _serial(profile: CardProfile) -> int:
    return x509.load_pem_x509_certificate(profile.certificate_pem.encode()).serial_number


def _issue(
    spec: CardSpec, *, pki: Pki, untrusted: UntrustedCa, now: datetime, pin: str
) -> CardProfile:
    algorithm = CARD_ALGORITHMS.get(spec.card_id, KeyAlgorithm.P256)
    if spec.kind is CardKind.UNTRUSTED:
        # Named after the other CA: a card a trust might really meet, not a forgery.
        return pki.issue_card(
            uuid=spec.uuid,
            name=spec.name,
            algorithm=algorithm,
            pin=pin,
            issuer_key=untrusted.issuing_key,
            issuer_cert=untrusted.issuing,
        )
    if spec.kind is CardKind.EXPIRED:
        start, end = expired_validity(now)
        return pki.issue_card(
            uuid=spec.uuid,
            name=spec.name,
            algorithm=algorithm,
            pin=pin,
            not_before=start,
            not_after=end,
            now=now,
        )
    profile = pki.issue_card(uuid=spec.uuid, name=spec.name, algorithm=algorithm, pin=pin)
    if spec.kind is CardKind.REVOKED:
        pki.revoke(uuid=spec.uuid, serial=_serial(profile), reason=x509.ReasonFlags.key_compromise)
    return profile


def issue_demo_cards(
    workspace: Workspace,
    *,
    pki_base_url: str,
    specs: Sequence[CardSpec] | None = None,
    pin: str = DEMO_PIN,
    now: datetime | None = None,
) -> IssuedCards:
    """A fresh PKI (whose certificates point at `pki_base_url`) and every demo card."""
    moment = now or datetime.now(UTC)
    workspace.make()
    pki = init_pki(workspace.pki_dir, base_url=pki_base_url, force=True)
    untrusted = make_untrusted_ca(workspace.untrusted_ca_dir, now=moment)
    cards: list[TrayCard] = []
    for spec in specs if specs is not None else demo_cards():
        profile = _issue(spec, pki=pki, untrusted=untrusted, now=moment, pin=pin)
        path = workspace.cards_dir / f"{spec.card_id}.json"
        save_profile(profile, path)
        cards.append(
            TrayCard(
                card_id=spec.card_id,
                uuid=spec.uuid,
                name=spec.name,
                kind=spec.kind,
                note=spec.note,
                profile_path=path,
            )
        )
    manifest = write_manifest(workspace.cards_dir, cards)
    log.info("issued %d demo cards in %s", len(cards), workspace.cards_dir)
    return IssuedCards(pki=pki, untrusted_ca=untrusted, cards=tuple(cards), manifest=manifest)
