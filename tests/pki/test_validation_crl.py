"""Revocation by CRL: distribution points over HTTP, configured files, cache, refresh."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pki_validation_support import START, PkiEnv, RecordingFetcher, signed_crl

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki import HttpFetchError, RevocationSource
from careid_devkit.pki import init_pki
from careid_protocol.errors import ErrorCode


def _crl_file(env: PkiEnv, name: str, data: bytes) -> Path:
    path = env.work / name
    path.write_bytes(data)
    return path


def test_a_revoked_card_is_refused_by_the_distribution_point_crl(env: PkiEnv) -> None:
    uuid = "555000000888"
    cert = env.issue(uuid=uuid)
    env.pki.revoke(uuid=uuid, reason="affiliationChanged", now=START)
    with pytest.raises(CertificateRevokedError) as caught:
        env.validator(revocation="crl").validate(cert)
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED
    assert "affiliationChanged" in (caught.value.detail or "")


def test_the_crl_is_cached_until_its_next_update(env: PkiEnv) -> None:
    validator = env.validator(**env.card_crls_only(), revocation="crl")
    before = env.server.requests_served
    first = validator.validate(env.issue())
    second = validator.validate(env.issue())  # another card, the same CRL
    assert env.server.requests_served == before + 1
    assert first.revocation is not None and not first.revocation.cached
    assert second.revocation is not None and second.revocation.cached
    assert first.revocation_method is RevocationSource.CRL
    assert first.revocation.location == env.pki.urls.crl

    next_update = first.revocation.next_update
    assert next_update is not None
    env.clock.now = next_update + timedelta(seconds=1)
    third = validator.validate(env.issue())
    assert env.server.requests_served == before + 2
    assert third.revocation is not None and not third.revocation.cached


def test_a_stale_crl_fails_closed_and_soft_fail_marks_it(env: PkiEnv) -> None:
    stale = _crl_file(
        env,
        "stale.crl",
        signed_crl(
            env, this_update=START - timedelta(days=2), next_update=START - timedelta(hours=1)
        ),
    )
    settings = {
        "revocation": "crl",
        "crl": {"files": [str(stale)], "use_distribution_points": False},
    }
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(**settings).validate(env.issue())
    assert caught.value.code is ErrorCode.REVOCATION_UNAVAILABLE
    assert "stale" in (caught.value.detail or "")

    result = env.validator(soft_fail=True, **settings).validate(env.issue())
    assert result.soft_fail_used and result.revocation is None
    assert result.soft_fail_reason is not None and "stale" in result.soft_fail_reason


def test_a_configured_crl_file_is_used_without_any_http(env: PkiEnv) -> None:
    cert, revoked = env.issue(), env.issue()
    path = _crl_file(env, "local.pem", signed_crl(env, revoked=[revoked.serial_number], pem=True))
    fetcher = RecordingFetcher()
    validator = env.validator(
        **env.card_crls_only(), http=fetcher, revocation="crl", crl={"files": [str(path)]}
    )
    result = validator.validate(cert)
    assert result.revocation is not None and result.revocation.location == str(path)
    with pytest.raises(CertificateRevokedError):
        validator.validate(revoked)
    assert fetcher.gets == []


def test_a_replaced_crl_file_is_reread(env: PkiEnv) -> None:
    cert = env.issue()
    path = _crl_file(env, "replaced.crl", signed_crl(env))
    validator = env.validator(revocation="crl", crl={"files": [str(path)]})
    validator.validate(cert)
    path.write_bytes(signed_crl(env, this_update=START, revoked=[cert.serial_number], pem=True))
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)


def test_a_crl_file_of_another_issuer_is_skipped(env: PkiEnv) -> None:
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another Issuing CA")])
    other_key = ec.generate_private_key(ec.SECP256R1())
    foreign = _crl_file(env, "foreign.crl", signed_crl(env, key=other_key, issuer_name=other_name))
    only_foreign = {"files": [str(foreign)], "use_distribution_points": False}
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(revocation="crl", crl=only_foreign).validate(env.issue())
    assert "no configured CRL file is from this issuer" in (caught.value.detail or "")

    both = {"files": [str(foreign)], "use_distribution_points": True}
    result = env.validator(revocation="crl", crl=both).validate(env.issue())
    assert result.revocation is not None and result.revocation.location == env.pki.urls.crl


def test_a_crl_file_from_a_namesake_ca_is_a_problem_and_the_dp_still_answers(
    env: PkiEnv,
) -> None:
    # Same issuer name, another key (a re-keyed or impostor CA): never used, and said so.
    namesake = init_pki(env.work / "crl-namesake-ca").paths.crl_der
    settings = {"files": [str(namesake)], "use_distribution_points": False}
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(revocation="crl", crl=settings).validate(env.issue())
    assert "signature does not verify" in (caught.value.detail or "")
    settings["use_distribution_points"] = True
    assert env.validator(revocation="crl", crl=settings).validate(env.issue()).revocation


def test_a_crl_signed_by_another_key_is_not_used(env: PkiEnv) -> None:
    forged = signed_crl(env, key=ec.generate_private_key(ec.SECP256R1()))
    fetcher = RecordingFetcher(on_get=lambda _url: forged)
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher, revocation="crl").validate(env.issue())
    assert "signature does not verify" in (caught.value.detail or "")


@pytest.mark.parametrize(
    "extension",
    [
        x509.DeltaCRLIndicator(1),
        x509.IssuingDistributionPoint(
            full_name=None,
            relative_name=None,
            only_contains_user_certs=False,
            only_contains_ca_certs=True,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        ),
    ],
)
def test_partial_crls_are_not_used(env: PkiEnv, extension: x509.ExtensionType) -> None:
    partial = signed_crl(env, extensions=[extension])
    fetcher = RecordingFetcher(on_get=lambda _url: partial)
    with pytest.raises(RevocationUnavailableError):
        env.validator(http=fetcher, revocation="crl").validate(env.issue())


def _partition(*urls: str) -> x509.IssuingDistributionPoint:
    """The issuingDistributionPoint of a CRL for the cards that name one of `urls`."""
    return x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url) for url in urls] or None,
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )


def test_a_crl_for_another_distribution_point_is_not_used(env: PkiEnv) -> None:
    # The issuing CA splits its cards over two CRLs (RFC 5280 §5.2.5, §6.3.3 (b)(2)(i)).
    part_a, part_b = f"{env.server.url}/part-a.crl", f"{env.server.url}/part-b.crl"
    card_a, card_b = env.craft(crl_urls=[part_a]), env.craft(crl_urls=[part_b])
    crl_a = signed_crl(env, extensions=[_partition(part_a)])
    crl_b = signed_crl(env, extensions=[_partition(part_b)], revoked=[card_b.serial_number])

    # The same CA's genuine, current CRL for part A, served at part B's distribution
    # point (by anyone on the plain-HTTP path), says nothing of part B's cards.
    substituted = RecordingFetcher(on_get=lambda _url: crl_a)
    validator = env.validator(**env.card_crls_only(), http=substituted, revocation="crl")
    with pytest.raises(RevocationUnavailableError) as caught:
        validator.trust(card_b)
    assert caught.value.code is ErrorCode.REVOCATION_UNAVAILABLE
    assert "not this certificate's" in (caught.value.detail or "")
    with pytest.raises(RevocationUnavailableError):
        validator.trust(card_b)  # nor once cached
    assert validator.trust(card_a).revocation is not None

    # A configured file of part A is skipped for part B's cards, like another issuer's
    # file: their own distribution point is asked, and its CRL refuses the card.
    path = _crl_file(env, "part-a.crl", crl_a)
    honest = RecordingFetcher(on_get=lambda url: {part_a: crl_a, part_b: crl_b}[url])
    validator = env.validator(
        **env.card_crls_only(), http=honest, revocation="crl", crl={"files": [str(path)]}
    )
    with pytest.raises(CertificateRevokedError):
        validator.trust(card_b)
    assert honest.gets == [part_b]
    result = validator.trust(card_a)  # the file covers part A's cards
    assert result.revocation is not None and result.revocation.location == str(path)
    assert honest.gets == [part_b]

    # Only with the file: nothing covers part B's cards, so no status (fail closed).
    alone = {"files": [str(path)], "use_distribution_points": False}
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(**env.card_crls_only(), http=honest, revocation="crl", crl=alone).trust(
            card_b
        )
    assert "does not cover" in (caught.value.detail or "")


def test_a_card_without_distribution_points_takes_only_a_crl_naming_none(env: PkiEnv) -> None:
    card = env.craft(crl_urls=[])
    partitioned = _crl_file(
        env, "partitioned.crl", signed_crl(env, extensions=[_partition(env.pki.urls.crl)])
    )
    settings = {"files": [str(partitioned)], "use_distribution_points": False}
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(revocation="crl", crl=settings).trust(card)
    assert "does not cover" in (caught.value.detail or "")

    for extensions in ([], [_partition()]):  # no IDP, or an IDP naming no point
        full = _crl_file(env, "full.crl", signed_crl(env, extensions=extensions))
        settings = {"files": [str(full)], "use_distribution_points": False}
        assert env.validator(revocation="crl", crl=settings).trust(card).revocation is not None


def test_an_unreachable_distribution_point_is_unavailable(env: PkiEnv) -> None:
    def down(url: str) -> bytes:
        raise HttpFetchError(f"GET {url}: connection refused")

    fetcher = RecordingFetcher(on_get=down)
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher, revocation="crl").validate(env.issue())
    assert "connection refused" in (caught.value.detail or "")


def test_a_cached_crl_serves_within_the_skew_after_next_update_then_fails_closed(
    env: PkiEnv,
) -> None:
    answers: list[bytes | None] = [signed_crl(env, next_update=START + timedelta(hours=1))]

    def serve(url: str) -> bytes:
        answer = answers.pop(0) if answers else None
        if answer is None:
            raise HttpFetchError(f"GET {url}: timed out")
        return answer

    validator = env.validator(
        **env.card_crls_only(), http=RecordingFetcher(on_get=serve), revocation="crl"
    )
    cert = env.issue()
    validator.validate(cert)
    env.clock.advance(timedelta(hours=1, minutes=2))  # past nextUpdate, inside the skew
    assert validator.validate(cert).revocation is not None
    env.clock.advance(timedelta(minutes=4))  # beyond it
    with pytest.raises(RevocationUnavailableError):
        validator.validate(cert)


def test_an_older_crl_never_replaces_a_newer_one(
    env: PkiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    cert = env.issue()
    newer = signed_crl(env, this_update=START, revoked=[cert.serial_number])
    older = signed_crl(env, this_update=START - timedelta(hours=1))
    answers = [newer, older]
    validator = env.validator(
        http=RecordingFetcher(on_get=lambda _url: answers.pop(0)),
        revocation="crl",
        crl={"refresh_seconds": 60},
    )
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)
    env.clock.advance(timedelta(minutes=2))
    with caplog.at_level(logging.WARNING, logger="careid_broker.pki"):
        assert validator.revocation.crl.refresh_due() == 1
    assert "older than the one cached" in caplog.text
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)


def test_refresh_fetches_due_crls_and_picks_up_new_revocations(env: PkiEnv) -> None:
    uuid = "555000000889"
    cert = env.issue(uuid=uuid)
    fetcher = RecordingFetcher()
    validator = env.validator(
        **env.card_crls_only(), http=fetcher, revocation="crl", crl={"refresh_seconds": 600}
    )
    validator.validate(cert)
    assert len(fetcher.gets) == 1
    assert validator.revocation.crl.refresh_due() == 0  # fetched just now

    env.pki.revoke(uuid=uuid, now=START)
    assert validator.validate(cert).revocation is not None  # the cached CRL, by design
    env.clock.advance(timedelta(minutes=10))
    assert validator.revocation.crl.refresh_due() == 1
    assert len(fetcher.gets) == 2
    with pytest.raises(CertificateRevokedError):
        validator.validate(cert)
    assert len(fetcher.gets) == 2  # the refreshed CRL answered from the cache


def test_the_background_refresher_runs_until_stopped(env: PkiEnv) -> None:
    fetched = threading.Event()
    fetcher = RecordingFetcher()

    def get(url: str) -> bytes:
        if fetcher.gets.count(url) > 1:
            fetched.set()
        return fetcher.inner.get(url, 2)

    fetcher.on_get = get
    validator = env.validator(http=fetcher, revocation="crl", crl={"refresh_seconds": 1})
    validator.validate(env.issue())
    env.clock.advance(timedelta(seconds=2))
    validator.start()
    try:
        assert fetched.wait(timeout=5), "the refresher did not fetch the due CRL"
    finally:
        validator.stop()
    assert not any(thread.name == "careid-crl-refresh" for thread in threading.enumerate())
