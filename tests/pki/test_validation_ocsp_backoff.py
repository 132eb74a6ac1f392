"""Back-off for a failed OCSP responder: skip it for a while, then probe it once again.

The responder is "down" by a fetcher that refuses OCSP POSTs (and counts them) while CRL
GETs still reach the devkit's real server; one test uses a real silent port.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pki_validation_support import PkiEnv, RecordingFetcher, next_uuid, silent_port

from careid_broker.errors import (
    CertificateRevokedError,
    PkiConfigError,
    RevocationUnavailableError,
)
from careid_broker.pki import CertificateValidator, HttpFetchError, PkiConfig, RevocationSource
from careid_broker.pki.sharing import PROCESS_ONLY, RevocationSharing
from careid_protocol.errors import ErrorCode

BACKOFF = 30
LOGGER = "careid_broker.pki"


class Responder:
    """Switches the OCSP responder between down (refused, or another answer) and up."""

    def __init__(self, down: bool = True) -> None:
        self.down = down
        self.body: bytes | None = None
        """When set, given as the responder's answer instead of asking it."""
        self.fetcher = RecordingFetcher(on_post=self._post)

    def _post(self, url: str, body: bytes) -> bytes:
        if self.body is not None:
            return self.body
        if self.down:
            raise HttpFetchError(f"{url}: connection refused (test)")
        return self.fetcher.inner.post(url, body, "application/ocsp-request", 2)

    @property
    def asked(self) -> int:
        return len(self.fetcher.posts)


def _validator(
    env: PkiEnv,
    responder: Responder,
    *,
    sharing: RevocationSharing = PROCESS_ONLY,
    **overrides: Any,
) -> CertificateValidator:
    overrides.setdefault("revocation", "ocsp-then-crl")
    overrides["ocsp"] = {"failure_backoff_seconds": BACKOFF, **overrides.get("ocsp", {})}
    return env.validator(http=responder.fetcher, sharing=sharing, **overrides)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_a_down_responder_is_skipped_then_probed_and_recovers(
    env: PkiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    responder = Responder(down=True)
    validator = _validator(env, responder)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        first = validator.validate(env.issue())
    assert first.revocation_method is RevocationSource.CRL
    assert responder.asked == 1
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "skipping it for 30s" in warnings[0]

    # Within the back-off: straight to the CRL, the responder is not contacted.
    caplog.clear()
    crl_fetches = len(responder.fetcher.gets)
    env.clock.advance(timedelta(seconds=BACKOFF - 1))
    second = validator.validate(env.issue())
    assert second.revocation_method is RevocationSource.CRL and not second.soft_fail_used
    assert responder.asked == 1
    assert len(responder.fetcher.gets) == crl_fetches  # the CRL came from its cache
    assert not _messages(caplog, logging.WARNING)  # one warning per back-off, not per tap

    # Period over, still down: one probe, then skipped for another period.
    env.clock.advance(timedelta(seconds=1))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert validator.validate(env.issue()).revocation_method is RevocationSource.CRL
    assert responder.asked == 2
    assert any("still failing" in m for m in _messages(caplog, logging.WARNING))
    env.clock.advance(timedelta(seconds=BACKOFF - 1))
    validator.validate(env.issue())
    assert responder.asked == 2

    # Back up: the next probe gets an OCSP answer and the back-off is cleared.
    caplog.clear()
    responder.down = False
    env.clock.advance(timedelta(seconds=1))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        recovered = validator.validate(env.issue())
    assert recovered.revocation_method is RevocationSource.OCSP
    assert responder.asked == 3
    assert any("answers again" in m for m in _messages(caplog, logging.INFO))
    assert validator.revocation.ocsp.backoff.backed_off(env.clock.now) == {}
    assert validator.validate(env.issue()).revocation_method is RevocationSource.OCSP
    assert responder.asked == 4


def test_after_one_timeout_the_next_sign_in_does_not_wait(env: PkiEnv) -> None:
    with silent_port() as url:
        fetcher = RecordingFetcher()
        validator = env.validator(
            http=fetcher,
            revocation="ocsp-then-crl",
            ocsp={"responder_url": url, "timeout_seconds": 0.5},
        )
        started = time.monotonic()
        assert validator.validate(env.issue()).revocation_method is RevocationSource.CRL
        waited = time.monotonic() - started
        started = time.monotonic()
        assert validator.validate(env.issue()).revocation_method is RevocationSource.CRL
        skipped = time.monotonic() - started
    assert len(fetcher.posts) == 1
    assert waited >= 0.5  # the first sign-in paid the timeout...
    assert skipped < waited  # ...the second did not (it never asked)


def test_pure_ocsp_mode_fails_closed_without_asking(env: PkiEnv) -> None:
    responder = Responder(down=True)
    validator = _validator(env, responder, revocation="ocsp")
    with pytest.raises(RevocationUnavailableError) as first:
        validator.validate(env.issue())
    assert "unreachable" in (first.value.detail or "")
    with pytest.raises(RevocationUnavailableError) as second:
        validator.validate(env.issue())
    assert second.value.code is ErrorCode.REVOCATION_UNAVAILABLE
    assert "not asked" in (second.value.detail or "")
    assert "connection refused" in (second.value.detail or "")
    assert responder.asked == 1

    # With soft-fail a skipped responder is still no status: marked, never "good".
    soft = _validator(env, responder, revocation="ocsp", soft_fail=True)
    assert soft.validate(env.issue()).soft_fail_used
    outcome = soft.validate(env.issue())
    assert outcome.soft_fail_used and outcome.revocation is None
    assert outcome.soft_fail_reason and "not asked" in outcome.soft_fail_reason
    assert responder.asked == 2


def test_an_answer_cached_before_the_outage_is_still_used(env: PkiEnv) -> None:
    responder = Responder(down=False)
    validator = _validator(env, responder, revocation="ocsp")
    good = env.issue()
    uuid = next_uuid()
    revoked = env.issue(uuid=uuid)
    env.pki.revoke(uuid=uuid, now=env.clock.now)
    validator.validate(good)
    with pytest.raises(CertificateRevokedError):
        validator.validate(revoked)
    responder.down = True
    with pytest.raises(RevocationUnavailableError):
        validator.validate(env.issue())
    assert validator.revocation.ocsp.backoff.backed_off(env.clock.now)

    asked = responder.asked
    cached = validator.validate(good).revocation
    assert cached is not None and cached.source is RevocationSource.OCSP and cached.cached
    with pytest.raises(CertificateRevokedError):
        validator.validate(revoked)
    assert responder.asked == asked


def test_definite_answers_never_start_a_back_off(env: PkiEnv) -> None:
    responder = Responder(down=False)
    validator = _validator(env, responder, revocation="ocsp", ocsp={"cache_max_entries": 0})
    uuid = next_uuid()
    revoked = env.issue(uuid=uuid)
    env.pki.revoke(uuid=uuid, now=env.clock.now)
    unknown = env.issue(issuer_key=env.pki.issuing_key)  # never recorded by the CA
    good = env.issue()
    for _ in range(2):
        with pytest.raises(CertificateRevokedError):
            validator.validate(revoked)
        with pytest.raises(CertificateRevokedError) as caught:
            validator.validate(unknown)
        assert "unknown" in (caught.value.detail or "")
        assert validator.validate(good).revocation_method is RevocationSource.OCSP
    assert responder.asked == 6  # every one asked: nothing was skipped
    assert validator.revocation.ocsp.backoff.backed_off(env.clock.now) == {}


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


@pytest.mark.parametrize(
    ("body", "backs_off"),
    [
        (b"<html>502 Bad Gateway</html>", True),
        (_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER), True),
        (_unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR), True),
        # About the request, not the responder's health: asked again next time.
        (_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), False),
    ],
    ids=["not-ocsp", "tryLater", "internalError", "unauthorized"],
)
def test_unusable_answers_back_off_but_refusals_of_the_request_do_not(
    env: PkiEnv, body: bytes, backs_off: bool
) -> None:
    responder = Responder(down=False)
    responder.body = body
    validator = _validator(env, responder)
    for _ in range(2):
        assert validator.validate(env.issue()).revocation_method is RevocationSource.CRL
    assert responder.asked == (1 if backs_off else 2)


def test_a_rejected_answer_about_one_card_does_not_back_off(env: PkiEnv) -> None:
    """The responder answered (with a stale, misdirected or forged answer about this one
    card): it is up, and one odd card must not switch OCSP off for everyone."""
    responder = Responder(down=True)
    validator = _validator(env, responder, revocation="ocsp")
    with pytest.raises(RevocationUnavailableError):
        validator.validate(env.issue())
    env.clock.advance(timedelta(seconds=BACKOFF))
    # The probe gets a well-formed answer about another certificate: rejected, but the
    # responder is evidently up, so the back-off is cleared.
    other = env.issue()
    inner = RecordingFetcher()
    other_request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(other, env.pki.issuing_certificate, hashes.SHA1())  # noqa: S303
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    responder.body = inner.post(env.pki.urls.ocsp, other_request, "application/ocsp-request", 2)
    with pytest.raises(RevocationUnavailableError) as caught:
        validator.validate(env.issue())
    assert "no answer for serial" in (caught.value.detail or "")
    assert validator.revocation.ocsp.backoff.backed_off(env.clock.now) == {}
    responder.body = None
    responder.down = False
    assert validator.validate(env.issue()).revocation_method is RevocationSource.OCSP
    assert responder.asked == 3


def test_zero_disables_the_back_off(env: PkiEnv) -> None:
    responder = Responder(down=True)
    validator = env.validator(
        http=responder.fetcher, revocation="ocsp-then-crl", ocsp={"failure_backoff_seconds": 0}
    )
    for _ in range(3):
        assert validator.validate(env.issue()).revocation_method is RevocationSource.CRL
    assert responder.asked == 3


def test_only_one_request_probes_while_others_go_straight_to_the_crl(env: PkiEnv) -> None:
    probing = threading.Event()
    release = threading.Event()
    posts: list[str] = []

    def stall_then_fail(url: str, _body: bytes) -> bytes:
        posts.append(url)
        if len(posts) > 1:
            probing.set()
            release.wait(5)
        raise HttpFetchError(f"{url}: timed out (test)")

    fetcher = RecordingFetcher(on_post=stall_then_fail)
    validator = env.validator(
        http=fetcher, revocation="ocsp-then-crl", ocsp={"failure_backoff_seconds": BACKOFF}
    )
    validator.validate(env.issue())  # the first failure starts the back-off
    env.clock.advance(timedelta(seconds=BACKOFF))
    cards = [env.issue() for _ in range(5)]
    results: dict[int, RevocationSource | None] = {}
    errors: list[BaseException] = []

    def sign_in(index: int) -> None:
        try:
            results[index] = validator.validate(cards[index]).revocation_method
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    probe = threading.Thread(target=sign_in, args=(0,))
    probe.start()
    try:
        assert probing.wait(5), "the probe never reached the responder"
        others = [threading.Thread(target=sign_in, args=(i,)) for i in range(1, 5)]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join(10)
        # Four sign-ins finished while the probe was still waiting on the responder.
        assert sorted(results) == [1, 2, 3, 4]
        assert set(results.values()) == {RevocationSource.CRL}
    finally:
        release.set()
        probe.join(10)
    assert not errors
    assert results[0] is RevocationSource.CRL
    assert len(posts) == 2


def test_the_setting_is_read_and_checked(env: PkiEnv) -> None:
    default = PkiConfig.from_mapping({"trust_anchors": "root-ca.pem"}, base_dir=env.directory)
    assert default.ocsp.failure_backoff == timedelta(seconds=30)
    for seconds in (0, 120, 3600):
        config = env.config(ocsp={"failure_backoff_seconds": seconds})
        assert config.ocsp.failure_backoff == timedelta(seconds=seconds)
    for bad, problem in [
        (-1, "must be between 0 and 3600"),
        (3601, "must be between 0 and 3600"),
        ("30", "must be a whole number"),
        (1.5, "must be a whole number"),
        (True, "must be a whole number"),
    ]:
        with pytest.raises(PkiConfigError) as caught:
            env.config(ocsp={"failure_backoff_seconds": bad})
        assert caught.value.problems == (f"pki.ocsp.failure_backoff_seconds: {problem}",)
