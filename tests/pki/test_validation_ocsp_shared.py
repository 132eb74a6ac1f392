"""OCSP responder back-off shared through the store: every worker and every instance
agrees at once that a responder is down, and at once that it is back.

Two validators stand for two broker workers (or instances): each has its own process
state, and they share only the database, on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pki_validation_support import PkiEnv, next_uuid
from sqlalchemy import select
from test_validation_ocsp_backoff import BACKOFF, Responder, _validator

from careid_broker.errors import CertificateRevokedError
from careid_broker.pki import CertificateValidator, RevocationSource
from careid_broker.pki.sharing import RevocationSharing
from careid_broker.store import OcspAnswerTable, ResponderStateTable, Store, create_store
from careid_broker.store.models import OcspAnswer


@pytest.fixture
def shared(env: PkiEnv, store_url: str) -> Iterator[Store]:
    store = create_store(store_url, clock=env.clock)
    yield store
    store.dispose()


def _worker(env: PkiEnv, responder: Responder, store: Store, **ocsp: Any) -> CertificateValidator:
    sharing = RevocationSharing(
        responders=ResponderStateTable(store), answers=OcspAnswerTable(store)
    )
    return _validator(env, responder, sharing=sharing, ocsp=ocsp)


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


def test_a_good_answer_one_worker_fetched_serves_the_others(env: PkiEnv, shared: Store) -> None:
    responder = Responder(down=False)
    first, second = _worker(env, responder, shared), _worker(env, responder, shared)
    cert = env.issue()
    assert first.validate(cert).revocation_method is RevocationSource.OCSP
    assert responder.asked == 1
    served = second.validate(cert)  # another worker: no second question to the responder
    assert served.revocation is not None and served.revocation.cached
    assert responder.asked == 1


def test_a_revoked_card_is_refused_everywhere_within_the_good_answer_limit(
    env: PkiEnv, shared: Store
) -> None:
    responder = Responder(down=False)
    workers = [_worker(env, responder, shared, max_good_age_seconds=60) for _ in range(2)]
    uuid = next_uuid()
    cert = env.issue(uuid=uuid)
    workers[0].validate(cert)
    env.pki.revoke(uuid=uuid, now=env.clock.now)
    env.clock.advance(timedelta(seconds=60))
    for worker in workers:
        with pytest.raises(CertificateRevokedError):
            worker.validate(cert)
    assert responder.asked == 2  # the second worker used the first one's "revoked"


def test_a_tampered_shared_answer_is_not_trusted(env: PkiEnv, shared: Store) -> None:
    responder = Responder(down=False)
    worker = _worker(env, responder, shared)
    cert = env.issue()
    worker.validate(cert)
    table = OcspAnswerTable(shared)
    ((key, kept),) = [(k, table.get(k, env.clock.now)) for k in _keys(shared)]
    assert kept is not None
    forged = bytearray(kept.der)
    forged[-5] ^= 0xFF  # inside the signature
    table.put(
        key, der=bytes(forged), location=kept.location, expires=env.clock.now + timedelta(minutes=1)
    )
    assert worker.validate(cert).revocation is not None  # asked the responder again
    assert responder.asked == 2


def _keys(store: Store) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(OcspAnswer.cert_key)))
