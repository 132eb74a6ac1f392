"""OCSP responder back-off shared through the store: every worker and every instance
agrees at once that a responder is down, and at once that it is back.

Two validators stand for two broker workers (or instances): each has its own process
state, and they share only the database, on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from pki_validation_support import PkiEnv
from test_validation_ocsp_backoff import BACKOFF, Responder, _validator

from careid_broker.pki import CertificateValidator, RevocationSource
from careid_broker.store import ResponderStateTable, Store, create_store


@pytest.fixture
def shared(env: PkiEnv, store_url: str) -> Iterator[Store]:
    store = create_store(store_url, clock=env.clock)
    yield store
    store.dispose()


def _worker(env: PkiEnv, responder: Responder, store: Store) -> CertificateValidator:
    return _validator(env, responder, responder_states=ResponderStateTable(store))


def test_a_responder_one_worker_found_down_is_skipped_by_the_others_at_once(
    env: PkiEnv, shared: Store
) -> None:
    responder = Responder(down=True)
    first, second = _worker(env, responder, shared), _worker(env, responder, shared)
    assert first.validate(env.issue()).revocation_method is RevocationSource.CRL
    assert responder.asked == 1
    # The other worker never found it down itself, yet does not wait on it.
    assert second.validate(env.issue()).revocation_method is RevocationSource.CRL
    assert responder.asked == 1
    assert set(second.revocation.ocsp.backoff.backed_off(env.clock.now)) == set(
        first.revocation.ocsp.backoff.backed_off(env.clock.now)
    )


def test_when_the_back_off_runs_out_one_worker_probes_and_the_others_keep_skipping(
    env: PkiEnv, shared: Store
) -> None:
    responder = Responder(down=True)
    first, second = _worker(env, responder, shared), _worker(env, responder, shared)
    first.validate(env.issue())
    env.clock.advance(timedelta(seconds=BACKOFF))
    first.validate(env.issue())  # the probe: still down
    assert responder.asked == 2
    second.validate(env.issue())  # within the new period: skipped
    assert responder.asked == 2


def test_a_responder_back_for_one_worker_is_asked_by_all_at_once(
    env: PkiEnv, shared: Store
) -> None:
    responder = Responder(down=True)
    first, second = _worker(env, responder, shared), _worker(env, responder, shared)
    second.validate(env.issue())  # the second worker finds it down
    responder.down = False
    env.clock.advance(timedelta(seconds=BACKOFF))
    assert first.validate(env.issue()).revocation_method is RevocationSource.OCSP
    asked = responder.asked
    # Before, the second worker kept skipping until its own back-off ran out, and
    # sign-ins failed on and off; now it asks at once.
    assert second.validate(env.issue()).revocation_method is RevocationSource.OCSP
    assert responder.asked == asked + 1
    assert second.revocation.ocsp.backoff.backed_off(env.clock.now) == {}
