"""`Pki`: an existing development PKI folder, and what can be done with it."""

from __future__ import annotations

import logging
import math
import uuid as uuid_module
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.codes import DevkitCode
from careid_devkit.pki import cards
from careid_devkit.pki.certs import (
    CardCertificateRequest,
    PkiUrls,
    authority_key_identifier,
    build_card_certificate,
)
from careid_devkit.pki.constants import (
    CARD_BACKDATE,
    CARD_LIFETIME,
)
from careid_devkit.pki.crl import build_crl, crl_needs_refresh
from careid_devkit.pki.errors import PkiError
from careid_devkit.pki.files import (
    PkiPaths,
    locked,
    pem_with_header,
    write_atomic,
)
from careid_devkit.pki.keys import (
    generate_card_key,
    load_certificate,
    load_issuer_key,
    private_key_pem,
    same_public_key,
)
from careid_devkit.pki.state import (
    CaRevocation,
    IssuedCertificate,
    PkiState,
    Revocation,
    load_state,
    save_state,
    utc,
)

logger = logging.getLogger(__name__)

_PEM = serialization.Encoding.PEM
DEFAULT_CRL_HOURS = 24.0
#: A year: longer-lived CRLs defeat the point of a revocation demo.
MAX_CRL_HOURS = 366 * 24.0


def now_utc(now: datetime | None) -> datetime:
    """`now` (or the system time) in UTC to the second."""
    return utc(now if now is not None else datetime.now(UTC))


def write_key(path: Path, key: CertificateIssuerPrivateKeyTypes, what: str) -> None:
    """A private key file, readable by its owner only."""
    write_atomic(path, pem_with_header(private_key_pem(key), what), mode=0o600)


def write_cert(path: Path, cert: x509.Certificate, what: str) -> None:
    """A certificate file with the DEMO/TEST MATERIAL notice."""
    write_atomic(path, pem_with_header(cert.public_bytes(_PEM), what))


def check_crl_hours(hours: float) -> None:
    """Refuse a CRL lifetime that is not a sensible number of hours."""
    if not (math.isfinite(hours) and 0 < hours <= MAX_CRL_HOURS):
        raise PkiError(
            DevkitCode.DEVKIT_INVALID_ARGUMENT,
            f"the CRL's next update must be between 0 and {MAX_CRL_HOURS:g} hours ahead",
        )


class Pki:
    """An existing development PKI folder: its CA material and the operations on it."""

    def __init__(
        self,
        *,
        paths: PkiPaths,
        base_url: str,
        root_certificate: x509.Certificate,
        issuing_certificate: x509.Certificate,
        issuing_key: CertificateIssuerPrivateKeyTypes,
        ocsp_certificate: x509.Certificate,
        ocsp_key: CertificateIssuerPrivateKeyTypes,
    ) -> None:
        self.paths = paths
        self.urls = PkiUrls(base_url=base_url)
        self.root_certificate = root_certificate
        self.issuing_certificate = issuing_certificate
        self.issuing_key = issuing_key
        self.ocsp_certificate = ocsp_certificate
        self.ocsp_key = ocsp_key

    @classmethod
    def open(cls, directory: Path | str) -> Pki:
        """Load a PKI made by `init_pki`, or raise `PkiError` (not found / damaged)."""
        paths = PkiPaths(directory=Path(directory))
        state = load_state(paths)
        try:
            return cls(
                paths=paths,
                base_url=state.base_url,
                root_certificate=load_certificate(
                    paths.root_certificate.read_bytes(), source=str(paths.root_certificate)
                ),
                issuing_certificate=load_certificate(
                    paths.issuing_certificate.read_bytes(), source=str(paths.issuing_certificate)
                ),
                issuing_key=load_issuer_key(
                    paths.issuing_key.read_bytes(), source=str(paths.issuing_key)
                ),
                ocsp_certificate=load_certificate(
                    paths.ocsp_certificate.read_bytes(), source=str(paths.ocsp_certificate)
                ),
                ocsp_key=load_issuer_key(paths.ocsp_key.read_bytes(), source=str(paths.ocsp_key)),
            )
        except OSError as exc:
            detail = f"cannot read {exc.filename}: {exc.strerror}"
            raise PkiError(DevkitCode.DEVKIT_PKI_DAMAGED, detail) from exc
        except PkiError as exc:
            raise PkiError(DevkitCode.DEVKIT_PKI_DAMAGED, exc.detail) from exc

    @property
    def directory(self) -> Path:
        """The PKI folder."""
        return self.paths.directory

    @property
    def base_url(self) -> str:
        """The URL prefix written into certificates (CRL, OCSP, CA issuers)."""
        return self.urls.base_url

    def state(self) -> PkiState:
        """The current state, read afresh from `ca.json`."""
        return load_state(self.paths)

    def issue_card(
        self,
        *,
        uuid: str,
        name: str,
        algorithm: KeyAlgorithm | str,
        pin: str,
        puk: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        client_auth: bool = True,
        issuer_key: CertificateIssuerPrivateKeyTypes | None = None,
        issuer_cert: x509.Certificate | None = None,
        now: datetime | None = None,
    ) -> CardProfile:
        """A new card: key pair, PIV Authentication certificate, CHUID, PIN and PUK.

        With `issuer_key` the certificate is signed by another CA's key: named after
        `issuer_cert` when given, else a forgery claiming this issuing CA's name and key
        identifier. Such cards are not recorded here (this PKI did not issue them).
        """
        uuid = cards.validate_uuid(uuid)
        name = cards.validate_name(name)
        key_algorithm = cards.parse_algorithm(algorithm)
        pin = cards.validate_pin(pin)
        puk = cards.validate_puk(puk)
        if issuer_cert is not None and issuer_key is None:
            raise PkiError(
                DevkitCode.DEVKIT_INVALID_ARGUMENT, "an issuer certificate needs its issuer key"
            )
        moment = now_utc(now)
        if issuer_key is None:
            signer_key: CertificateIssuerPrivateKeyTypes = self.issuing_key
            issuer: x509.Certificate = self.issuing_certificate
        elif issuer_cert is None:
            signer_key, issuer = issuer_key, self.issuing_certificate
        else:
            if not same_public_key(issuer_key, issuer_cert):
                raise PkiError(
                    DevkitCode.DEVKIT_KEY_UNUSABLE,
                    "the issuer certificate does not belong to the issuer key",
                )
            signer_key, issuer = issuer_key, issuer_cert
        start = utc(not_before) if not_before is not None else moment - CARD_BACKDATE
        if not_after is not None:
            end = utc(not_after)
        else:
            # A default lifetime stops with the issuer's: a card should never claim to be
            # valid at a time when no valid issuer could vouch for it.
            end = min(start + CARD_LIFETIME, utc(issuer.not_valid_after_utc))
        if end <= start:
            raise PkiError(
                DevkitCode.DEVKIT_INVALID_ARGUMENT, "the certificate must end after it starts"
            )
        card_key = generate_card_key(key_algorithm)
        guid = uuid_module.uuid4().bytes
        request = CardCertificateRequest(
            uuid=uuid,
            name=name,
            public_key=card_key.public_key(),
            card_guid=guid,
            serial=x509.random_serial_number(),
            not_before=start,
            not_after=end,
            client_auth=client_auth,
            urls=self.urls,
        )
        certificate = build_card_certificate(
            request,
            issuer_name=issuer.subject,
            issuer_aki=authority_key_identifier(issuer),
            issuer_key=signer_key,
        )
        if issuer_key is None:
            self._record_issued(certificate, request, key_algorithm, moment)
        chuid = cards.new_chuid(guid=guid, expiration=end.date())
        logger.info(
            "issued card certificate serial %X to UUID %s (%s, %s)",
            request.serial,
            uuid,
            key_algorithm,
            "this issuing CA" if issuer_key is None else "another issuer's key",
        )
        return CardProfile(
            uuid=uuid,
            name=name,
            algorithm=key_algorithm,
            private_key_pem=private_key_pem(card_key).decode("ascii"),
            certificate_pem=certificate.public_bytes(_PEM).decode("ascii"),
            chuid_hex=chuid.encode().hex().upper(),
            card_guid_hex=guid.hex().upper(),
            pin=pin,
            puk=puk,
        )

    def _record_issued(
        self,
        certificate: x509.Certificate,
        request: CardCertificateRequest,
        algorithm: KeyAlgorithm,
        moment: datetime,
    ) -> None:
        record = IssuedCertificate(
            serial=request.serial,
            uuid=request.uuid,
            name=request.name,
            algorithm=algorithm,
            not_before=request.not_before,
            not_after=request.not_after,
            issued_at=moment,
            client_auth=request.client_auth,
        )
        with locked(self.paths):
            state = load_state(self.paths)
            write_cert(
                self.paths.issued_certificate(request.serial),
                certificate,
                f"card certificate for Care Identity UUID {request.uuid}",
            )
            save_state(self.paths, state.with_issued(record))

    def revoke(
        self,
        *,
        uuid: str,
        serial: int | None = None,
        reason: x509.ReasonFlags | str = x509.ReasonFlags.unspecified,
        now: datetime | None = None,
        next_update_hours: float = DEFAULT_CRL_HOURS,
    ) -> tuple[Revocation, ...]:
        """Revoke a UUID's certificates (or the one with `serial`), then rewrite the CRL.

        Returns the new revocations; certificates already revoked are left as they were.
        """
        uuid = cards.validate_uuid(uuid)
        flag = cards.parse_reason(reason)
        check_crl_hours(next_update_hours)  # before anything is written
        moment = now_utc(now)
        with locked(self.paths):
            state = load_state(self.paths)
            targets = state.issued_to(uuid)
            if not targets:
                raise PkiError(
                    DevkitCode.DEVKIT_CARD_NOT_FOUND, f"no certificate was issued to UUID {uuid}"
                )
            if serial is not None:
                targets = tuple(cert for cert in targets if cert.serial == serial)
                if not targets:
                    raise PkiError(
                        DevkitCode.DEVKIT_CARD_NOT_FOUND,
                        f"UUID {uuid} has no certificate with serial {serial:X}",
                    )
            new = tuple(
                Revocation(serial=cert.serial, uuid=uuid, revoked_at=moment, reason=flag)
                for cert in targets
                if state.revocation_of(cert.serial) is None
            )
            state = state.with_revocations(new)
            save_state(self.paths, state)
            self._write_crl_locked(state, now=moment, next_update_hours=next_update_hours)
        for revocation in new:
            logger.info("revoked serial %X (UUID %s, %s)", revocation.serial, uuid, flag.value)
        return new

    def write_crl(
        self, *, next_update_hours: float = DEFAULT_CRL_HOURS, now: datetime | None = None
    ) -> x509.CertificateRevocationList:
        """Sign a new CRL (next CRL number) and write it as DER and PEM."""
        moment = now_utc(now)
        with locked(self.paths):
            return self._write_crl_locked(
                load_state(self.paths), now=moment, next_update_hours=next_update_hours
            )

    def current_crl(
        self,
        *,
        now: datetime | None = None,
        next_update_hours: float = DEFAULT_CRL_HOURS,
        refresh_margin: timedelta = timedelta(hours=1),
    ) -> x509.CertificateRevocationList:
        """The CRL on disk, remade first if revocations changed or nextUpdate is near."""
        moment = now_utc(now)
        margin = min(refresh_margin, timedelta(hours=next_update_hours) / 2)
        with locked(self.paths):
            state = load_state(self.paths)
            crl = _read_crl(self.paths.crl_der)
            if crl is not None and not crl_needs_refresh(
                crl,
                issuer=self.issuing_certificate,
                revocations=state.revocations,
                now=moment,
                refresh_margin=margin,
            ):
                return crl
            return self._write_crl_locked(state, now=moment, next_update_hours=next_update_hours)

    def revoke_issuing_ca(
        self,
        *,
        reason: x509.ReasonFlags | str = x509.ReasonFlags.ca_compromise,
        now: datetime | None = None,
        next_update_hours: float = DEFAULT_CRL_HOURS,
    ) -> CaRevocation | None:
        """Revoke the issuing CA's certificate on the root CA's CRL, then rewrite that CRL.

        Every card this PKI issued then fails at a broker that checks CA revocation (the
        issuing CA names the root's CRL as its distribution point). None when it was
        revoked already. The OCSP responder goes on answering for cards as before: a
        real issuing CA's responder would not know of its own revocation either.
        """
        flag = cards.parse_reason(reason)
        check_crl_hours(next_update_hours)  # before anything is written
        moment = now_utc(now)
        issuing = self.issuing_certificate
        with locked(self.paths):
            state = load_state(self.paths)
            if state.ca_revocation_of(issuing.serial_number) is not None:
                new = None
            else:
                new = CaRevocation(
                    serial=issuing.serial_number,
                    subject=issuing.subject.rfc4514_string(),
                    revoked_at=moment,
                    reason=flag,
                )
                state = replace(state, ca_revocations=(*state.ca_revocations, new))
                save_state(self.paths, state)
            self._write_root_crl_locked(state, now=moment, next_update_hours=next_update_hours)
        if new is not None:
            logger.info("revoked the issuing CA, serial %X (%s)", new.serial, flag.value)
        return new

    def write_root_crl(
        self, *, next_update_hours: float = DEFAULT_CRL_HOURS, now: datetime | None = None
    ) -> x509.CertificateRevocationList:
        """Sign a new root CA CRL (next root CRL number) and write it as DER and PEM."""
        moment = now_utc(now)
        with locked(self.paths):
            return self._write_root_crl_locked(
                load_state(self.paths), now=moment, next_update_hours=next_update_hours
            )

    def current_root_crl(
        self,
        *,
        now: datetime | None = None,
        next_update_hours: float = DEFAULT_CRL_HOURS,
        refresh_margin: timedelta = timedelta(hours=1),
    ) -> x509.CertificateRevocationList:
        """The root CA's CRL on disk, remade first if its revocations changed or its
        nextUpdate is near (a folder made before the root published one gets one now)."""
        moment = now_utc(now)
        margin = min(refresh_margin, timedelta(hours=next_update_hours) / 2)
        with locked(self.paths):
            state = load_state(self.paths)
            crl = _read_crl(self.paths.root_crl_der)
            if crl is not None and not crl_needs_refresh(
                crl,
                issuer=self.root_certificate,
                revocations=state.ca_revocations,
                now=moment,
                refresh_margin=margin,
            ):
                return crl
            return self._write_root_crl_locked(
                state, now=moment, next_update_hours=next_update_hours
            )

    def _write_crl_locked(
        self, state: PkiState, *, now: datetime, next_update_hours: float
    ) -> x509.CertificateRevocationList:
        check_crl_hours(next_update_hours)
        number = state.crl_number + 1
        crl = build_crl(
            issuer=self.issuing_certificate,
            issuer_key=self.issuing_key,
            revocations=state.revocations,
            number=number,
            this_update=now,
            next_update=now + timedelta(hours=next_update_hours),
        )
        self.paths.crl_directory.mkdir(exist_ok=True)
        write_atomic(self.paths.crl_der, crl.public_bytes(serialization.Encoding.DER))
        write_atomic(self.paths.crl_pem, pem_with_header(crl.public_bytes(_PEM), "CRL"))
        save_state(self.paths, replace(state, crl_number=number))
        return crl

    def _write_root_crl_locked(
        self, state: PkiState, *, now: datetime, next_update_hours: float
    ) -> x509.CertificateRevocationList:
        check_crl_hours(next_update_hours)
        # Read only here: the root key signs nothing else after `init`.
        try:
            root_key = load_issuer_key(
                self.paths.root_key.read_bytes(), source=str(self.paths.root_key)
            )
        except OSError as exc:
            detail = f"cannot read {exc.filename}: {exc.strerror}"
            raise PkiError(DevkitCode.DEVKIT_PKI_DAMAGED, detail) from exc
        number = state.root_crl_number + 1
        crl = build_crl(
            issuer=self.root_certificate,
            issuer_key=root_key,
            revocations=state.ca_revocations,
            number=number,
            this_update=now,
            next_update=now + timedelta(hours=next_update_hours),
        )
        self.paths.crl_directory.mkdir(exist_ok=True)
        write_atomic(self.paths.root_crl_der, crl.public_bytes(serialization.Encoding.DER))
        write_atomic(self.paths.root_crl_pem, pem_with_header(crl.public_bytes(_PEM), "root CRL"))
        save_state(self.paths, replace(state, root_crl_number=number))
        return crl


def _read_crl(path: Path) -> x509.CertificateRevocationList | None:
    """The CRL at `path`, or None when there is none (or it does not parse)."""
    try:
        return x509.load_der_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return None
