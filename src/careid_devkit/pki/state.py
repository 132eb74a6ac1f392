"""The PKI's state file (`ca.json`): base URL, issued certificates by UUID, revocations.

Folders made before the root CA published a CRL have no `rootCrlNumber` nor
`caRevocations`: read as none yet, so every command keeps working on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.codes import DevkitCode
from careid_devkit.pki.errors import PkiError
from careid_devkit.pki.files import PkiPaths, write_atomic

STATE_FORMAT = "careid-devkit-pki:1"


def utc(moment: datetime) -> datetime:
    """`moment` in UTC to the second (what a certificate can hold); naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _time_text(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return utc(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


@dataclass(frozen=True, kw_only=True)
class IssuedCertificate:
    """One card certificate this PKI issued."""

    serial: int
    uuid: str
    name: str
    algorithm: KeyAlgorithm
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    client_auth: bool


@dataclass(frozen=True, kw_only=True)
class Revocation:
    """A revoked certificate (RFC 5280 §5.3.1: `unspecified` is written as no reason)."""

    serial: int
    uuid: str
    revoked_at: datetime
    reason: x509.ReasonFlags


@dataclass(frozen=True, kw_only=True)
class CaRevocation:
    """The issuing CA's certificate, revoked by the root CA (listed on the root's CRL)."""

    serial: int
    subject: str
    revoked_at: datetime
    reason: x509.ReasonFlags


@dataclass(frozen=True, kw_only=True)
class PkiState:
    """Everything about the PKI that changes after `init`."""

    base_url: str
    created_at: datetime
    ocsp_signer_serial: int
    crl_number: int = 0
    """The number of the last CRL written (0: none yet)."""
    issued: tuple[IssuedCertificate, ...] = field(default=())
    revocations: tuple[Revocation, ...] = field(default=())
    root_crl_number: int = 0
    """The number of the root CA's last CRL written (0: none yet)."""
    ca_revocations: tuple[CaRevocation, ...] = field(default=())
    """CA certificates the root CA has revoked."""

    def issued_to(self, uuid: str) -> tuple[IssuedCertificate, ...]:
        """The card certificates issued to one Care Identity UUID, oldest first."""
        return tuple(cert for cert in self.issued if cert.uuid == uuid)

    def find_issued(self, serial: int) -> IssuedCertificate | None:
        """The card certificate with this serial number, if this PKI issued it."""
        return next((cert for cert in self.issued if cert.serial == serial), None)

    def revocation_of(self, serial: int) -> Revocation | None:
        """The revocation of this serial number, if it is revoked."""
        return next((rev for rev in self.revocations if rev.serial == serial), None)

    def ca_revocation_of(self, serial: int) -> CaRevocation | None:
        """The root CA's revocation of this CA certificate serial, if revoked."""
        return next((rev for rev in self.ca_revocations if rev.serial == serial), None)

    def with_issued(self, cert: IssuedCertificate) -> PkiState:
        """A copy that records one more issued certificate."""
        return replace(self, issued=(*self.issued, cert))

    def with_revocations(self, revocations: tuple[Revocation, ...]) -> PkiState:
        """A copy that records more revocations."""
        return replace(self, revocations=(*self.revocations, *revocations))

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to `ca.json`; issued certificates indexed by UUID."""
        by_uuid: dict[str, list[dict[str, Any]]] = {}
        for cert in self.issued:
            by_uuid.setdefault(cert.uuid, []).append(
                {
                    "serial": f"{cert.serial:X}",
                    "name": cert.name,
                    "algorithm": str(cert.algorithm),
                    "notBefore": _time_text(cert.not_before),
                    "notAfter": _time_text(cert.not_after),
                    "issuedAt": _time_text(cert.issued_at),
                    "clientAuth": cert.client_auth,
                }
            )
        return {
            "format": STATE_FORMAT,
            "demoMaterial": True,
            "baseUrl": self.base_url,
            "createdAt": _time_text(self.created_at),
            "ocspSignerSerial": f"{self.ocsp_signer_serial:X}",
            "crlNumber": self.crl_number,
            "issued": by_uuid,
            "revocations": [
                {
                    "serial": f"{rev.serial:X}",
                    "uuid": rev.uuid,
                    "revokedAt": _time_text(rev.revoked_at),
                    "reason": rev.reason.value,
                }
                for rev in self.revocations
            ],
            "rootCrlNumber": self.root_crl_number,
            "caRevocations": [
                {
                    "serial": f"{rev.serial:X}",
                    "subject": rev.subject,
                    "revokedAt": _time_text(rev.revoked_at),
                    "reason": rev.reason.value,
                }
                for rev in self.ca_revocations
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PkiState:
        """Parse `ca.json`; raises KeyError/ValueError/TypeError on a damaged file."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"format is not {STATE_FORMAT!r}")
        issued = tuple(
            IssuedCertificate(
                serial=int(item["serial"], 16),
                uuid=str(uuid),
                name=str(item["name"]),
                algorithm=KeyAlgorithm(item["algorithm"]),
                not_before=_parse_time(item["notBefore"]),
                not_after=_parse_time(item["notAfter"]),
                issued_at=_parse_time(item["issuedAt"]),
                client_auth=bool(item["clientAuth"]),
            )
            for uuid, items in data["issued"].items()
            for item in items
        )
        revocations = tuple(
            Revocation(
                serial=int(item["serial"], 16),
                uuid=str(item["uuid"]),
                revoked_at=_parse_time(item["revokedAt"]),
                reason=x509.ReasonFlags(item["reason"]),
            )
            for item in data["revocations"]
        )
        ca_revocations = tuple(
            CaRevocation(
                serial=int(item["serial"], 16),
                subject=str(item["subject"]),
                revoked_at=_parse_time(item["revokedAt"]),
                reason=x509.ReasonFlags(item["reason"]),
            )
            for item in data.get("caRevocations", ())
        )
        return cls(
            base_url=str(data["baseUrl"]),
            created_at=_parse_time(data["createdAt"]),
            ocsp_signer_serial=int(data["ocspSignerSerial"], 16),
            crl_number=int(data["crlNumber"]),
            issued=tuple(sorted(issued, key=lambda cert: cert.issued_at)),
            revocations=revocations,
            root_crl_number=int(data.get("rootCrlNumber", 0)),
            ca_revocations=ca_revocations,
        )


def load_state(paths: PkiPaths) -> PkiState:
    """Read `ca.json`, or raise `PkiError` (not found / damaged)."""
    try:
        text = paths.state.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PkiError(
            DevkitCode.DEVKIT_PKI_NOT_FOUND, f"{paths.directory} has no {paths.state.name}"
        ) from exc
    try:
        return PkiState.from_json(json.loads(text))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise PkiError(DevkitCode.DEVKIT_PKI_DAMAGED, f"{paths.state} is damaged ({exc})") from exc


def save_state(paths: PkiPaths, state: PkiState) -> None:
    """Write `ca.json` atomically (the responder may be reading it)."""
    text = json.dumps(state.to_json(), indent=2) + "\n"
    write_atomic(paths.state, text.encode("utf-8"))
