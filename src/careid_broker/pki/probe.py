"""Asking the revocation services a `[pki]` configuration names whether they answer.

A card certificate's own OCSP and CRL URLs are known only once a card is presented, so
without one what can be checked is what the configuration names: the OCSP responder
that overrides the certificates' URLs, the responders given settings by URL, the CRL
files, and any OCSP or CRL URL in the trust anchors' and intermediates' own
certificates (the broker does not ask those about cards: reported, never required).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum, unique
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from careid_broker.pki.certfiles import parse_crl
from careid_broker.pki.config import PkiConfig, RevocationMode
from careid_broker.pki.crl import distribution_points
from careid_broker.pki.http import HttpFetcher, HttpFetchError
from careid_broker.pki.ocsp import OCSP_REQUEST_TYPE, ocsp_urls

#: A serial no real certificate is likely to have: the question is whether the
#: responder answers in OCSP at all, not what it says about this number.
PROBE_SERIAL = 0x7FFF_FFFF_FFFF_FFFF
#: However long the broker would wait during a sign-in, a check waits at most this.
MAX_PROBE_TIMEOUT = 5.0
CRL_FILES = "[pki.crl] files"


@unique
class ResponderKind(StrEnum):
    """What kind of revocation service was asked."""

    OCSP = "OCSP responder"
    CRL = "CRL"


@dataclass(frozen=True, kw_only=True)
class ResponderProbe:
    """One service: where it was named, whether the broker needs it, and its answer."""

    kind: ResponderKind
    location: str
    named_by: str
    needed: bool
    ok: bool
    detail: str


def probe_responders(
    config: PkiConfig, *, http: HttpFetcher, now: datetime
) -> tuple[ResponderProbe, ...]:
    """Ask every service the configuration names, once each, in a stable order."""
    uses_ocsp = config.revocation is not RevocationMode.CRL
    uses_crl = config.revocation is not RevocationMode.OCSP
    probes: list[ResponderProbe] = []
    seen: set[tuple[ResponderKind, str]] = set()
    for kind, location, named_by, needed in _named(config, uses_ocsp, uses_crl):
        if (kind, location) in seen:
            continue
        seen.add((kind, location))
        if kind is ResponderKind.OCSP:
            timeout = min(config.ocsp.timeout_seconds, MAX_PROBE_TIMEOUT)
            ok, detail = _ask_ocsp(location, config, http, timeout)
        elif named_by == CRL_FILES:
            ok, detail = _read_crl_file(Path(location), now, config.max_clock_skew)
        else:
            timeout = min(config.crl.timeout_seconds, MAX_PROBE_TIMEOUT)
            ok, detail = _fetch_crl(location, http, timeout, now, config.max_clock_skew)
        probes.append(
            ResponderProbe(
                kind=kind, location=location, named_by=named_by, needed=needed, ok=ok, detail=detail
            )
        )
    return tuple(probes)


def _named(
    config: PkiConfig, uses_ocsp: bool, uses_crl: bool
) -> Iterator[tuple[ResponderKind, str, str, bool]]:
    if uses_ocsp and config.ocsp.responder_url:
        yield ResponderKind.OCSP, config.ocsp.responder_url, "[pki.ocsp] responder_url", True
    if uses_ocsp:
        for responder in config.ocsp.responders:
            yield ResponderKind.OCSP, responder.url, "[[pki.ocsp.responders]] url", True
    if uses_crl:
        for path in config.crl.files:
            yield ResponderKind.CRL, str(path), CRL_FILES, True
    for certificate in (*config.trust_anchors, *config.intermediates):
        subject = certificate.subject.rfc4514_string()
        if uses_ocsp:
            for url in ocsp_urls(certificate):
                yield ResponderKind.OCSP, url, f"CA certificate {subject!r}", False
        if uses_crl and config.crl.use_distribution_points:
            for url in distribution_points(certificate):
                yield ResponderKind.CRL, url, f"CA certificate {subject!r}", False


def _ask_ocsp(url: str, config: PkiConfig, http: HttpFetcher, timeout: float) -> tuple[bool, str]:
    issuer = (config.intermediates or config.trust_anchors)[0]
    # RFC 6960 §4.1.1's CertID with SHA-1, which every responder accepts (it names the
    # issuer, it signs nothing); the key hash is RFC 5280 §4.2.1.2's method (1).
    name_hash = hashes.Hash(hashes.SHA1())  # noqa: S303
    name_hash.update(issuer.subject.public_bytes())
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            name_hash.finalize(),
            key_hash,
            PROBE_SERIAL,
            hashes.SHA1(),  # noqa: S303
        )
        .build()
    )
    try:
        body = http.post(
            url, request.public_bytes(serialization.Encoding.DER), OCSP_REQUEST_TYPE, timeout
        )
    except (HttpFetchError, OSError) as exc:
        return False, f"does not answer: {exc}"
    try:
        answer = ocsp.load_der_ocsp_response(body)
    except ValueError:
        return False, "answered, but not with an OCSP response"
    return True, f"answers (OCSP status: {answer.response_status.name.lower()})"


def _fetch_crl(
    url: str, http: HttpFetcher, timeout: float, now: datetime, skew: timedelta
) -> tuple[bool, str]:
    try:
        body = http.get(url, timeout)
    except (HttpFetchError, OSError) as exc:
        return False, f"does not answer: {exc}"
    return _crl_freshness(url, body, now, skew)


def _read_crl_file(path: Path, now: datetime, skew: timedelta) -> tuple[bool, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return False, f"cannot be read: {exc.strerror or exc}"
    return _crl_freshness(str(path), data, now, skew)


def _crl_freshness(source: str, data: bytes, now: datetime, skew: timedelta) -> tuple[bool, str]:
    try:
        crl = parse_crl(data, source=source)
    except ValueError as exc:
        return False, str(exc)
    next_update = crl.next_update_utc
    if next_update is None:
        return True, "a CRL with no next update"
    if next_update + skew < now:
        # Every card it covers would be refused (or soft-failed): its CA has not
        # published a fresh one, or this copy is not being replaced.
        return False, f"out of date: its next update was due {next_update:%Y-%m-%d %H:%M}Z"
    return True, f"current until {next_update:%Y-%m-%d %H:%M}Z"
