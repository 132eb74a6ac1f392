"""The issuing CA's own revocation: each CA certificate below the trust anchor is checked
on its issuer's CRL after the card's status, whatever the card's revocation mode.

The development issuing CA names the root CA's CRL (served by the devkit's PKI server)
as its distribution point; tests that revoke it make a PKI of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from pki_validation_support import START, PkiEnv, RecordingFetcher, served_pki, signed_crl

from careid_broker.errors import CertificateRevokedError, RevocationUnavailableError
from careid_broker.pki import CertificateValidator, HttpFetchError, RevocationSource
from careid_broker.pki.sharing import RevocationSharing
from careid_broker.store import SharedCrlTable, Store, create_store
from careid_protocol.errors import ErrorCode

MODES = ("ocsp", "crl", "ocsp-then-crl")


@pytest.fixture
def own(tmp_path: Path) -> Iterator[PkiEnv]:
    """A PKI of this test's own, served: its issuing CA may be revoked."""
    with served_pki(tmp_path) as env:
        yield env


def _names_ca(detail: str | None, env: PkiEnv) -> bool:
    issuing = env.pki.issuing_certificate
    text = detail or ""
    return issuing.subject.rfc4514_string() in text and f"{issuing.serial_number:X}" in text


def _serving(url: str, body: bytes) -> RecordingFetcher:
    """Real HTTP, but `body` for `url`."""
    fetcher = RecordingFetcher()
    fetcher.on_get = lambda asked: body if asked == url else fetcher.inner.get(asked, 2)
    return fetcher


def _arl() -> x509.IssuingDistributionPoint:
    """An authority revocation list's issuingDistributionPoint: CA certificates only."""
    return x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=True,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_revoked_issuing_ca_refuses_a_good_card_in_every_mode(own: PkiEnv, mode: str) -> None:
    card = own.issue()
    assert own.validator(revocation=mode).trust(card).revocation is not None
    own.pki.revoke_issuing_ca(reason="cACompromise", now=START)
    with pytest.raises(CertificateRevokedError) as caught:
        own.validator(revocation=mode).trust(card)
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED
    assert _names_ca(caught.value.detail, own), caught.value.detail
    assert "cACompromise" in (caught.value.detail or "")
    # A definite "revoked" is never softened.
    with pytest.raises(CertificateRevokedError):
        own.validator(revocation=mode, soft_fail=True).trust(card)


def test_the_card_is_checked_first(own: PkiEnv) -> None:
    uuid = "555000000990"
    card = own.issue(uuid=uuid)
    own.pki.revoke(uuid=uuid, now=START)
    own.pki.revoke_issuing_ca(now=START)
    with pytest.raises(CertificateRevokedError) as caught:
        own.validator(revocation="crl").trust(card)
    assert not _names_ca(caught.value.detail, own)  # the card's own entry answered


def test_the_root_crl_is_fetched_once_and_cached(env: PkiEnv) -> None:
    fetcher = RecordingFetcher()
    validator = env.validator(http=fetcher, revocation="ocsp")
    first = validator.trust(env.issue())
    validator.trust(env.issue())
    assert fetcher.gets == [env.pki.urls.root_crl]
    # The card's status is what the result records: OCSP answered for the card.
    assert first.revocation_method is RevocationSource.OCSP and not first.soft_fail_used


@pytest.mark.parametrize("mode", MODES)
def test_an_unreachable_root_crl_is_unavailable_and_soft_fail_says_so(
    env: PkiEnv, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    root_crl = env.pki.urls.root_crl

    def root_down(url: str) -> bytes:
        if url == root_crl:
            raise HttpFetchError(f"GET {url}: connection refused")
        return fetcher.inner.get(url, 2)

    fetcher = RecordingFetcher(on_get=root_down)
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher, revocation=mode).trust(env.issue())
    assert caught.value.code is ErrorCode.REVOCATION_UNAVAILABLE
    assert _names_ca(caught.value.detail, env) and "connection refused" in str(caught.value)

    with caplog.at_level(logging.WARNING, logger="careid_broker.pki"):
        result = env.validator(http=fetcher, revocation=mode, soft_fail=True).trust(env.issue())
    assert result.soft_fail_used
    assert result.revocation is not None  # the card itself was cleared
    assert _names_ca(result.soft_fail_reason, env), result.soft_fail_reason
    assert "SOFT-FAIL" in caplog.text


def test_a_stale_root_crl_fails_closed(env: PkiEnv) -> None:
    stale = signed_crl(
        env,
        root=True,
        this_update=START - timedelta(days=2),
        next_update=START - timedelta(hours=1),
    )
    fetcher = _serving(env.pki.urls.root_crl, stale)
    with pytest.raises(RevocationUnavailableError) as caught:
        env.validator(http=fetcher, revocation="ocsp").trust(env.issue())
    assert "stale" in (caught.value.detail or "") and _names_ca(caught.value.detail, env)


def test_a_ca_naming_no_distribution_point_is_not_checked_and_said_once(
    env: PkiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    old_path, old_ca = env.issuing_ca_without_crl_point()
    # The root has revoked it, on a CRL that nothing names.
    root_crl = env.work / "root-revoking-the-old-ca.crl"
    root_crl.write_bytes(signed_crl(env, root=True, revoked=[old_ca.serial_number]))
    fetcher = RecordingFetcher()
    validator = env.validator(http=fetcher, revocation="ocsp", intermediates=[str(old_path)])
    with caplog.at_level(logging.WARNING, logger="careid_broker.pki"):
        first = validator.trust(env.issue())
        second = validator.trust(env.issue())
    assert first.chain[1] == old_ca
    assert not first.soft_fail_used and not second.soft_fail_used
    assert env.pki.urls.root_crl not in fetcher.gets
    warned = [r for r in caplog.records if "not checked" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert f"{old_ca.serial_number:X}" in warned[0].getMessage()

    # The root's CRL configured as a file is its issuer's CRL: checked, and refused.
    files = {"files": [str(root_crl)]}
    validator = env.validator(revocation="ocsp", intermediates=[str(old_path)], crl=files)
    with pytest.raises(CertificateRevokedError) as caught:
        validator.trust(env.issue())
    assert f"{old_ca.serial_number:X}" in (caught.value.detail or "")


def test_only_the_issuers_crl_files_count_for_a_ca(env: PkiEnv) -> None:
    # The issuing CA's own CRL as a configured file is another issuer's for the CA
    # certificate: it neither clears it nor makes it "unavailable".
    old_path, _ = env.issuing_ca_without_crl_point()
    files = {"files": [str(env.pki.paths.crl_der)]}
    validator = env.validator(revocation="crl", intermediates=[str(old_path)], crl=files)
    result = validator.trust(env.issue())
    assert result.revocation is not None and not result.soft_fail_used


def test_distribution_points_off_leave_the_ca_to_configured_files(own: PkiEnv) -> None:
    own.pki.revoke_issuing_ca(now=START)
    off = {"use_distribution_points": False}
    fetcher = RecordingFetcher()
    assert own.validator(http=fetcher, revocation="ocsp", crl=off).trust(own.issue())
    assert own.pki.urls.root_crl not in fetcher.gets
    with_file = {"use_distribution_points": False, "files": [str(own.pki.paths.root_crl_der)]}
    with pytest.raises(CertificateRevokedError):
        own.validator(revocation="ocsp", crl=with_file).trust(own.issue())


def test_an_arl_answers_for_the_ca(env: PkiEnv) -> None:
    issuing = env.pki.issuing_certificate
    for revoked, refused in (((), False), ((issuing.serial_number,), True)):
        arl = signed_crl(env, root=True, revoked=revoked, extensions=[_arl()])
        fetcher = _serving(env.pki.urls.root_crl, arl)
        validator = env.validator(http=fetcher, revocation="ocsp")
        if refused:
            with pytest.raises(CertificateRevokedError):
                validator.trust(env.issue())
        else:
            assert not validator.trust(env.issue()).soft_fail_used


def test_an_arl_cannot_clear_a_card(env: PkiEnv) -> None:
    # The issuing CA's CRL marked onlyContainsCACerts (an ARL) lists no card: it says
    # nothing of a card's status, wherever it is served or configured.
    arl = signed_crl(env, extensions=[_arl()])
    path = env.work / "issuing-arl.crl"
    path.write_bytes(arl)
    fetcher = _serving(env.pki.urls.crl, arl)
    for validator in (
        env.validator(http=fetcher, revocation="crl"),
        env.validator(
            revocation="crl", crl={"files": [str(path)], "use_distribution_points": False}
        ),
    ):
        with pytest.raises(RevocationUnavailableError) as caught:
            validator.trust(env.issue())
        assert "CA certificates only" in (caught.value.detail or "")


@pytest.fixture
def shared(own: PkiEnv, store_url: str) -> Iterator[Store]:
    store = create_store(store_url, clock=own.clock)
    yield store
    store.dispose()


def _worker(env: PkiEnv, store: Store, fetcher: RecordingFetcher) -> CertificateValidator:
    sharing = RevocationSharing(crls=SharedCrlTable(store))
    return env.validator(
        http=fetcher, sharing=sharing, revocation="ocsp", crl={"refresh_seconds": 3600}
    )


def test_a_ca_revocation_one_worker_fetched_is_used_by_the_others_at_once(
    own: PkiEnv, shared: Store
) -> None:
    first_http, second_http = RecordingFetcher(), RecordingFetcher()
    first, second = _worker(own, shared, first_http), _worker(own, shared, second_http)
    first.trust(own.issue())
    second.trust(own.issue())  # each holds the root's CRL from before, good for a day

    own.clock.advance(timedelta(minutes=1))
    own.pki.revoke_issuing_ca(now=own.clock.now)
    assert first.revocation.crl.refresh_all() == 1  # an administrator's "refresh now"
    with pytest.raises(CertificateRevokedError):
        first.trust(own.issue())
    with pytest.raises(CertificateRevokedError) as caught:
        second.trust(own.issue())
    assert _names_ca(caught.value.detail, own)
    assert second_http.gets.count(own.pki.urls.root_crl) == 1  # nothing fetched again
