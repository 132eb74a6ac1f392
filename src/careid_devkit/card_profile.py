"""The card profile: one virtual PIV card's keys, certificate, CHUID, PIN and counters.

`careid-devkit pki issue-card` writes a profile; `careid-devkit card insert` serves it.
A profile is a small JSON file. The retry counters are written back whenever they change,
so a PIN blocked in one session stays blocked when the card is inserted again, as on a
real card. DEMO/TEST MATERIAL: a profile holds a private key and PINs in the clear.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

PROFILE_FORMAT = "careid-devkit-card:1"


class KeyAlgorithm(StrEnum):
    """Key types a card profile may hold (the PIV slot 9A key)."""

    P256 = "p256"
    P384 = "p384"
    RSA2048 = "rsa2048"


@dataclass(frozen=True, kw_only=True)
class CardProfile:
    """A virtual card. Immutable: counters change by `with_counters` and `save`."""

    uuid: str
    name: str
    algorithm: KeyAlgorithm
    private_key_pem: str
    certificate_pem: str
    chuid_hex: str
    """The CHUID object's value (the bytes inside tag 53), hex."""
    card_guid_hex: str
    """The 16-byte card GUID also carried in the CHUID, hex."""
    pin: str
    puk: str
    pin_retries_max: int = 3
    pin_retries_left: int = 3
    puk_retries_max: int = 3
    puk_retries_left: int = 3

    def with_counters(self, *, pin_retries_left: int, puk_retries_left: int) -> CardProfile:
        """A copy with new retry counters."""
        return replace(self, pin_retries_left=pin_retries_left, puk_retries_left=puk_retries_left)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk."""
        data = asdict(self)
        data["algorithm"] = str(self.algorithm)
        return {"format": PROFILE_FORMAT, "demoMaterial": True, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardProfile:
        """Parse a profile, refusing any other format."""
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a card profile (format must be {PROFILE_FORMAT!r})")
        fields = {k: v for k, v in data.items() if k not in ("format", "demoMaterial")}
        fields["algorithm"] = KeyAlgorithm(fields["algorithm"])
        return cls(**fields)


def load_profile(path: Path) -> CardProfile:
    """Read a profile from a file."""
    return CardProfile.from_json(json.loads(path.read_text(encoding="utf-8")))


def save_profile(profile: CardProfile, path: Path) -> None:
    """Write a profile atomically (a crash never leaves half a file), mode 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(profile.to_json(), fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
