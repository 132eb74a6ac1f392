"""What revocation checking tells the broker's metrics: cache hits, misses, failed fetches."""

from __future__ import annotations

import pytest
from pki_validation_support import PkiEnv, RecordingFetcher, closed_port_url

from careid_broker.errors import RevocationUnavailableError
from careid_broker.metrics import BrokerMetrics, Registry
from careid_broker.pki.http import HttpFetchError
from careid_broker.pki.sharing import RevocationSharing


def _refuse(url: str) -> bytes:
    raise HttpFetchError(f"{url}: connection refused")


def test_ocsp_cache_hits_misses_and_failed_requests_are_counted(env: PkiEnv) -> None:
    metrics = BrokerMetrics(Registry())
    lookups = metrics.revocation.cache_lookups
    failures = metrics.revocation.fetch_failures
    sharing = RevocationSharing(observer=metrics.revocation)
    cert = env.issue()
    validator = env.validator(sharing=sharing)
    validator.validate(cert)
    validator.validate(cert)
    assert lookups.value(source="ocsp", result="miss") == 1
    assert lookups.value(source="ocsp", result="hit") == 1
    assert failures.value(source="ocsp") == 0

    down = env.validator(sharing=sharing, ocsp={"responder_url": closed_port_url()})
    with pytest.raises(RevocationUnavailableError):
        down.validate(env.issue())
    assert lookups.value(source="ocsp", result="miss") == 2
    assert failures.value(source="ocsp") == 1
    text = metrics.render()
    assert 'careid_revocation_fetch_failures_total{source="ocsp"} 1.0' in text


def test_crl_cache_hits_misses_and_failed_fetches_are_counted(env: PkiEnv) -> None:
    metrics = BrokerMetrics(Registry())
    lookups = metrics.revocation.cache_lookups
    failures = metrics.revocation.fetch_failures
    sharing = RevocationSharing(observer=metrics.revocation)
    validator = env.validator(**env.card_crls_only(), revocation="crl", sharing=sharing)
    validator.validate(env.issue())
    validator.validate(env.issue())  # another card, the same CRL
    assert lookups.value(source="crl", result="miss") == 1
    assert lookups.value(source="crl", result="hit") == 1
    assert failures.value(source="crl") == 0

    unreachable = env.validator(
        **env.card_crls_only(),
        revocation="crl",
        sharing=sharing,
        http=RecordingFetcher(on_get=_refuse),
    )
    with pytest.raises(RevocationUnavailableError):
        unreachable.validate(env.issue())
    assert lookups.value(source="crl", result="miss") == 2
    assert failures.value(source="crl") == 1
    assert lookups.value(source="ocsp", result="miss") == 0
