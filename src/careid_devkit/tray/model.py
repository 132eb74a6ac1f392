"""The card tray's cards: who each demo card belongs to, what is wrong with it, its file.

A tray is described by a manifest (`cards.json`) next to the card profiles, written by
the demo's workspace builder and read by the tray. DEMO/TEST MATERIAL throughout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum, unique
from pathlib import Path
from typing import Any

from careid_devkit.card_profile import CardProfile, load_profile, save_profile
from careid_devkit.pki.files import write_atomic

MANIFEST_FORMAT = "careid-devkit-tray:1"
MANIFEST_NAME = "cards.json"
#: Card ids appear in URLs (`/cards/<id>/insert`): keep them to a safe alphabet.
CARD_ID = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")


@unique
class CardKind(StrEnum):
    """What the card's certificate is like; the broker's answer depends on it."""

    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNTRUSTED = "untrusted"

    @property
    def description(self) -> str:
        """Words for the tray page."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    CardKind.VALID: "Valid certificate",
    CardKind.REVOKED: "Certificate revoked",
    CardKind.EXPIRED: "Certificate expired",
    CardKind.UNTRUSTED: "Issued by an untrusted CA",
}


@dataclass(frozen=True, kw_only=True)
class TrayCard:
    """One card in the tray: `card_id` is its handle (the UUID for a person's main card)."""

    card_id: str
    uuid: str
    name: str
    kind: CardKind
    note: str
    profile_path: Path

    def __post_init__(self) -> None:
        if not CARD_ID.fullmatch(self.card_id):
            raise ValueError(f"card id {self.card_id!r} must be lower-case letters, digits, -")

    def load(self) -> CardProfile:
        """The card profile as it is on disk now (retry counters included)."""
        return load_profile(self.profile_path)

    def save(self, profile: CardProfile) -> None:
        """Write the profile back (the card's retry counters changed)."""
        save_profile(profile, self.profile_path)


def write_manifest(folder: Path, cards: Sequence[TrayCard]) -> Path:
    """Write `cards.json` in `folder` (profile paths relative to it when inside it)."""
    entries: list[dict[str, Any]] = []
    for card in cards:
        path = card.profile_path
        try:
            shown = str(path.resolve().relative_to(folder.resolve()))
        except ValueError:
            shown = str(path.resolve())
        entries.append(
            {
                "id": card.card_id,
                "uuid": card.uuid,
                "name": card.name,
                "kind": card.kind.value,
                "note": card.note,
                "profile": shown,
            }
        )
    manifest = {"format": MANIFEST_FORMAT, "demoMaterial": True, "cards": entries}
    target = folder / MANIFEST_NAME
    write_atomic(target, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return target


def read_manifest(path: Path) -> tuple[TrayCard, ...]:
    """The cards a manifest names; ValueError when it is not a tray manifest."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a card tray manifest ({MANIFEST_FORMAT})")
    cards = []
    for entry in data["cards"]:
        cards.append(
            TrayCard(
                card_id=str(entry["id"]),
                uuid=str(entry["uuid"]),
                name=str(entry["name"]),
                kind=CardKind(entry["kind"]),
                note=str(entry.get("note", "")),
                profile_path=(path.parent / str(entry["profile"])).resolve(),
            )
        )
    ids = [card.card_id for card in cards]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path} names a card id twice")
    return tuple(cards)
