"""Who is in the demo: the nine accounts of config/ldap/demo.ldif and their cards.

Public DEMO MATERIAL: the password and PIN below are printed by the demo on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from careid_devkit.slapd import DEMO_USER_PASSWORD
from careid_devkit.tray.model import CardKind

DEMO_PIN = "246810"
DEMO_PASSWORD = DEMO_USER_PASSWORD
UNREGISTERED_UUID = "555000000099"


@dataclass(frozen=True, kw_only=True)
class DemoAccount:
    """A mail account and Care Identity from the demo directory."""

    uid: str
    name: str
    uuid: str
    org: str
    note: str

    @property
    def mail(self) -> str:
        """The nhs.net address the person signs in with."""
        return f"{self.uid}@nhs.net"


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount(
        uid="alex.morgan",
        name="Alex Morgan",
        uuid="555000000001",
        org="RX1",
        note="active; AUP accepted; Clinical Practitioner",
    ),
    DemoAccount(
        uid="sam.patel",
        name="Sam Patel",
        uuid="555000000002",
        org="RX1",
        note="has never accepted the acceptable use policy",
    ),
    DemoAccount(
        uid="jo.bloggs", name="Jo Bloggs", uuid="555000000003", org="RX1", note="mail disabled"
    ),
    DemoAccount(
        uid="lee.admin",
        name="Lee Admin",
        uuid="555000000004",
        org="RX1",
        note="local administrator for RX1",
    ),
    DemoAccount(
        uid="kim.taylor",
        name="Kim Taylor",
        uuid="555000000005",
        org="Y00001",
        note="another organisation",
    ),
    DemoAccount(
        uid="pat.jones",
        name="Pat Jones",
        uuid="555000000006",
        org="RX1",
        note="Care Identity inactive",
    ),
    DemoAccount(
        uid="chris.old",
        name="Chris Old",
        uuid="555000000007",
        org="RX1",
        note="accepted an older AUP only",
    ),
    DemoAccount(
        uid="robin.hale",
        name="Robin Hale",
        uuid="555000000008",
        org="RX1",
        note="a locum: three roles in three organisations",
    ),
    DemoAccount(
        uid="casey.doyle",
        name="Casey Doyle",
        uuid="555000000009",
        org="Y00001",
        note="a GP in two practices",
    ),
)


def account_by_uid(uid: str) -> DemoAccount:
    """The demo account with this uid (KeyError if there is none)."""
    for account in DEMO_ACCOUNTS:
        if account.uid == uid:
            return account
    raise KeyError(uid)


@dataclass(frozen=True, kw_only=True)
class CardSpec:
    """A card the demo issues: whose, and what is special about it."""

    card_id: str
    uuid: str
    name: str
    kind: CardKind
    note: str


def demo_cards() -> tuple[CardSpec, ...]:
    """A card for every account, an unregistered card, and Alex's bad second cards."""
    alex = account_by_uid("alex.morgan")
    cards = [
        CardSpec(
            card_id=account.uuid,
            uuid=account.uuid,
            name=account.name,
            kind=CardKind.VALID,
            note=f"{account.mail}: {account.note}",
        )
        for account in DEMO_ACCOUNTS
    ]
    cards.append(
        CardSpec(
            card_id=UNREGISTERED_UUID,
            uuid=UNREGISTERED_UUID,
            name="Robin Unregistered",
            kind=CardKind.VALID,
            note="a valid card whose UUID no mail account names",
        )
    )
    for kind, note in (
        (CardKind.REVOKED, "Alex's second card, revoked (keyCompromise)"),
        (CardKind.EXPIRED, "Alex's card whose certificate ended yesterday"),
        (CardKind.UNTRUSTED, "a card for Alex from a CA the broker does not trust"),
    ):
        cards.append(
            CardSpec(
                card_id=f"{alex.uuid}-{kind.value}",
                uuid=alex.uuid,
                name=alex.name,
                kind=kind,
                note=note,
            )
        )
    return tuple(cards)
