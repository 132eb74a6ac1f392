"""CRLs shared through the store: a newer CRL one worker (or instance) fetched is used by
every other at its next check, not only after each one's own next refresh.

Two validators stand for two broker workers: each has its own CRL cache and its own
HTTP client, and they share only the database, on both backends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pki_validation_support import START, PkiEnv, RecordingFetcher

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki import CertificateValidator
from careid_broker.pki.crl import CrlSource, SourceKind, _shared_key
from careid_broker.pki.http import HttpFetchError
from careid_broker.pki.sharing import RevocationSharing
from careid_broker.store import SharedCrlTable, Store, create_store


@pytest.fixture
def shared(env: PkiEnv, store_url: str) -> Iterator[Store]:
    store = create_store(store_url, clock=env.clock)
    yield store
    store.dispose()


def _worker(env: PkiEnv, store: Store, fetcher: RecordingFetcher) -> CertificateValidator:
    sharing = RevocationSharing(crls=SharedCrlTable(store))
    return env.validator(
        **env.card_crls_only(),
        http=fetcher,
        sharing=sharing,
        revocation="crl",
        crl={"refresh_seconds": 3600},
    )


def test_a_crl_one_worker_refreshed_is_used_by_the_others_at_once(
    env: PkiEnv, shared: Store
) -> None:
    uuid = "555000000901"
    cert = env.issue(uuid=uuid)
    first_http, second_http = RecordingFetcher(), RecordingFetcher()
    first, second = _worker(env, shared, first_http), _worker(env, shared, second_http)
    first.validate(cert)
    second.validate(cert)  # each holds the CRL from before, good for a day

    env.clock.advance(timedelta(minutes=1))
    env.pki.revoke(uuid=uuid, reason="keyCompromise", now=env.clock.now)  # a later CRL
    assert first.revocation.crl.refresh_all() == 1  # an administrator's "refresh now"
    with pytest.raises(CertificateRevokedError):
        first.validate(cert)
    # The second worker's own CRL is still within its nextUpdate, yet it refuses the
    # card at once, without fetching anything itself.
    with pytest.raises(CertificateRevokedError):
        second.validate(cert)
    assert len(second_http.gets) == 1
    # And keeps the newer CRL from then on.
    with pytest.raises(CertificateRevokedError):
        second.validate(cert)


def test_a_shared_crl_that_does_not_verify_is_ignored(
    env: PkiEnv, shared: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cert = env.issue()
    worker = _worker(env, shared, RecordingFetcher())
    worker.validate(cert)
    # A newer "CRL" in the table, listing the card, but signed by another key.
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(env.pki.issuing_certificate.subject)
        .last_update(START + timedelta(minutes=30))
        .next_update(START + timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(START)
            .build()
        )
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    source = CrlSource(kind=SourceKind.URL, location=env.pki.urls.crl)
    _, issuing = env.issuing_ca_without_crl_point()  # the workers' (`_worker`)
    key = _shared_key((source, issuing.fingerprint(hashes.SHA256())))
    SharedCrlTable(shared).offer(
        key,
        der=forged.public_bytes(serialization.Encoding.DER),
        last_update=forged.last_update_utc,
        location=source.location,
    )
    env.clock.advance(timedelta(minutes=31))
    with caplog.at_level(logging.WARNING, logger="careid_broker.pki"):
        assert worker.validate(cert).revocation is not None  # its own CRL still stands
        assert worker.validate(cert).revocation is not None  # and it is not read again
    assert caplog.text.count("a shared CRL for") == 1


def test_the_table_keeps_the_newest_crl_whoever_offers_last(shared: Store) -> None:
    table = SharedCrlTable(shared)
    newer, older = START + timedelta(hours=1), START
    table.offer("k", der=b"newer", last_update=newer, location="http://crl/a")
    table.offer("k", der=b"older", last_update=older, location="http://crl/a")
    assert table.newest("k") == newer and table.load("k") == b"newer"
    assert table.newest("unknown") is None and table.load("unknown") is None


def test_an_administrators_refresh_reaches_every_worker(env: PkiEnv, shared: Store) -> None:
    uuid = "555000000902"
    cert = env.issue(uuid=uuid)
    worker = _worker(env, shared, RecordingFetcher())
    worker.validate(cert)
    env.clock.advance(timedelta(minutes=1))
    env.pki.revoke(uuid=uuid, now=env.clock.now)
    # `revocation refresh-crls` runs in a process of its own, with the registered cards'
    # certificates; the worker above fetches nothing itself.
    admin = _worker(env, shared, RecordingFetcher())
    [fetched] = [f for f in admin.fetch_crls([cert]) if f.ok]
    assert cert.serial_number in fetched.serials
    with pytest.raises(CertificateRevokedError):
        worker.validate(cert)


def test_another_partitions_crl_shared_by_one_worker_answers_for_no_card_of_this_one(
    env: PkiEnv, shared: Store
) -> None:
    part_a, part_b = f"{env.server.url}/part-a.crl", f"{env.server.url}/part-b.crl"
    card = env.craft(crl_urls=[part_b])

    def partitioned(url: str, this_update: datetime) -> bytes:
        point = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url)],
            relative_name=None,
            only_contains_user_certs=True,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(env.pki.issuing_certificate.subject)
            .last_update(this_update)
            .next_update(this_update + timedelta(days=1))
            .add_extension(point, critical=True)
            .sign(env.pki.issuing_key, hashes.SHA256())
        )
        return crl.public_bytes(serialization.Encoding.DER)

    honest = partitioned(part_b, START - timedelta(hours=1))
    second_http = RecordingFetcher(on_get=lambda _url: honest)
    second = _worker(env, shared, second_http)
    assert second.trust(card).revocation is not None

    # The first worker is answered at part B's distribution point with the CA's newer,
    # genuine CRL for part A, and offers it to the others as that source's newest.
    substituted = partitioned(part_a, START)
    first = _worker(env, shared, RecordingFetcher(on_get=lambda _url: substituted))
    with pytest.raises(RevocationUnavailableError):
        first.trust(card)
    # The second worker takes it up from the table, and it does not clear the card there
    # either: only a CRL that covers the card does.
    with pytest.raises(RevocationUnavailableError) as caught:
        second.trust(card)
    assert "does not cover" in (caught.value.detail or "")
    assert second_http.gets == [part_b]  # from the table, not fetched again


# A worker with no CRL of an issuer in memory yet (just started, or recycled), or only
# a stale one, is held to the table as much as one that has a CRL: what its
# distribution point serves may be older than what another worker or instance fetched.


def _crl(
    env: PkiEnv,
    this_update: datetime,
    *,
    revoked: tuple[x509.Certificate, ...] = (),
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """A CRL of the issuing CA (signed by `signer` instead: a forgery), good a day."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(env.pki.issuing_certificate.subject)
        .last_update(this_update)
        .next_update(this_update + timedelta(days=1))
    )
    for certificate in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(certificate.serial_number)
            .revocation_date(this_update)
            .build()
        )
    key = signer if signer is not None else env.pki.issuing_key
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _unreachable(url: str) -> bytes:
    raise HttpFetchError("connection refused")


def test_a_new_worker_never_takes_an_older_crl_than_the_shared_one(
    env: PkiEnv, shared: Store
) -> None:
    cert = env.issue()
    before = _crl(env, START - timedelta(hours=1))  # still within its nextUpdate
    after = _crl(env, START, revoked=(cert,))
    first = _worker(env, shared, RecordingFetcher(on_get=lambda _url: after))
    with pytest.raises(CertificateRevokedError):
        first.validate(cert)  # fetched the CRL listing the card, and shared it

    # A worker that has no CRL yet is served the earlier CRL by its distribution point
    # (a lagging mirror, or a replay of the plain-HTTP download): it refuses the card.
    lagging = RecordingFetcher(on_get=lambda _url: before)
    second = _worker(env, shared, lagging)
    with pytest.raises(CertificateRevokedError):
        second.validate(cert)
    assert lagging.gets == [env.pki.urls.crl]  # it did fetch; the older CRL lost
    with pytest.raises(CertificateRevokedError):
        second.validate(cert)
    assert lagging.gets == [env.pki.urls.crl]  # and it keeps the shared one


def test_a_new_worker_whose_distribution_point_is_down_uses_the_shared_crl(
    env: PkiEnv, shared: Store
) -> None:
    good, lost = env.issue(), env.issue()
    served = _crl(env, START, revoked=(lost,))
    first = _worker(env, shared, RecordingFetcher(on_get=lambda _url: served))
    assert first.validate(good).revocation is not None

    second = _worker(env, shared, RecordingFetcher(on_get=_unreachable))
    status = second.validate(good).revocation
    assert status is not None and status.this_update == START
    with pytest.raises(CertificateRevokedError):
        second.validate(lost)

    # The shared CRL counts only while it is fresh, like any other: past its nextUpdate
    # (and the skew) with the distribution point still down, the check fails closed.
    env.clock.advance(timedelta(days=1, minutes=10))
    third = _worker(env, shared, RecordingFetcher(on_get=_unreachable))
    for worker in (second, third):
        with pytest.raises(RevocationUnavailableError):
            worker.validate(good)


def test_a_worker_whose_crl_went_stale_takes_the_shared_one_over_a_lagging_mirror(
    env: PkiEnv, shared: Store
) -> None:
    cert = env.issue()
    yesterday = _crl(env, START)
    second = _worker(env, shared, RecordingFetcher(on_get=lambda _url: yesterday))
    assert second.validate(cert).revocation is not None

    env.clock.advance(timedelta(days=1, hours=1))  # its CRL is past nextUpdate + skew
    today = _crl(env, START + timedelta(days=1), revoked=(cert,))
    first = _worker(env, shared, RecordingFetcher(on_get=lambda _url: today))
    with pytest.raises(CertificateRevokedError):
        first.validate(cert)
    # Its distribution point still serves yesterday's CRL: the shared one answers.
    with pytest.raises(CertificateRevokedError):
        second.validate(cert)


def test_a_new_worker_does_not_take_a_shared_crl_that_does_not_verify(
    env: PkiEnv, shared: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cert = env.issue()
    forged = _crl(env, START, signer=ec.generate_private_key(ec.SECP256R1()))
    source = CrlSource(kind=SourceKind.URL, location=env.pki.urls.crl)
    _, issuing = env.issuing_ca_without_crl_point()  # the workers' (`_worker`)
    key = _shared_key((source, issuing.fingerprint(hashes.SHA256())))
    SharedCrlTable(shared).offer(key, der=forged, last_update=START, location=source.location)

    worker = _worker(env, shared, RecordingFetcher(on_get=_unreachable))
    with caplog.at_level(logging.WARNING, logger="careid_broker.pki"):
        for _ in range(2):
            with pytest.raises(RevocationUnavailableError):
                worker.validate(cert)
    # Read and refused once, and not read again while the table holds the same row.
    assert caplog.text.count("a shared CRL for") == 1
