"""Retention: each kind of working state is purged after its retention and not before,
in bounded batches, by any number of instances at once; the audit log, registrations,
subjects, role choices and signing keys are never touched."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from store_helpers import START

from careid_broker.store import (
    AuditRecord,
    AuthorizationRequest,
    CodeGrant,
    EndReason,
    LinkMode,
    NewRegistration,
    OcspAnswerTable,
    PurgeKind,
    Repositories,
    ResponderStateTable,
    Retention,
    RetentionPolicy,
    RetentionWorker,
    Settlement,
    Store,
)
from careid_broker.store._sql import RETENTION_LOCK
from careid_broker.store.base import Base
from careid_broker.store.models import (
    AuditEntry,
    AuthorizationCode,
    CardChallenge,
    Heartbeat,
    LoginTransaction,
    LogoutDelivery,
    OAuthToken,
    OcspAnswer,
    OcspResponderState,
    Registration,
    RoleChoice,
    SessionRelyingParty,
    SigningKey,
    SigninSession,
    Subject,
    ThrottleCounter,
    UsedJti,
)
from support.clock import FakeClock

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
CLIENT = "webmail"


class Batches:
    """A RetentionObserver recording every batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def purged(self, kind: str, count: int) -> None:
        with self._lock:
            self.seen.append((kind, count))


def count(store: Store, model: type[Base]) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def retention_of(repos: Repositories, **policy: object) -> Retention:
    return Retention(
        repos.store,
        audit=repos.audit,
        policy=RetentionPolicy(**policy),  # type: ignore[arg-type]
        session_lifetime=timedelta(hours=8),
    )


def purge_entries(repos: Repositories) -> list[AuditRecord]:
    return repos.audit.list_recent(event_prefix="retention.purge", limit=1000)


def request() -> AuthorizationRequest:
    return AuthorizationRequest(client_id=CLIENT, redirect_uri="https://rp/cb", scope="openid")


def new_session(repos: Repositories, mail: str = "alex@nhs.net") -> str:
    sub = repos.subjects.sub_for_account(mail=mail, dn=f"uid={mail},dc=example")
    return repos.sessions.create(
        sub=sub, account_mail=mail, acr="aal3", amr=["sc"], auth_time=repos.store.now()
    ).record.sid


def grant(sid: str, sub: str = "s") -> CodeGrant:
    return CodeGrant(
        client_id=CLIENT,
        redirect_uri="https://rp/cb",
        scope="openid",
        sid=sid,
        sub=sub,
        auth_time=START,
        acr="aal3",
        amr=("sc",),
        claims={"name": "Alex"},
    )


# Each seeder makes one row of a kind at the clock's time and returns when that row's
# retention ends: it must survive a pass just before, and go in a pass just after.
Seeder = Callable[[Repositories], datetime]


def seed_jti(repos: Repositories) -> datetime:
    expires = repos.store.now() + timedelta(minutes=5)
    assert repos.jtis.use_once(scope="client", jti="j1", expires_at=expires)
    return expires + DAY


def seed_challenge(repos: Repositories) -> datetime:
    tx = repos.transactions.create(request())
    issued = repos.challenges.issue(tx.transaction_id)
    assert issued is not None
    return issued.expires_at + DAY


def seed_transaction(repos: Repositories) -> datetime:
    # Only a transaction that has changed state is stored: this one completed.
    created = repos.transactions.create(request())
    assert repos.transactions.complete(created.transaction_id) is not None
    return created.record.expires_at + DAY


def seed_token(repos: Repositories) -> datetime:
    issued = repos.tokens.issue(client_id=CLIENT, sub="s", scope="openid", access_token="a1")
    return issued.access_expires_at + 7 * DAY


def seed_code(repos: Repositories) -> datetime:
    return repos.codes.issue(grant(new_session(repos))).expires_at + DAY


def seed_delivery(repos: Repositories) -> datetime:
    (delivery,) = repos.outbox.enqueue(sid="gone", sub="s", client_ids=[CLIENT])
    repos.outbox.mark_delivered(delivery)
    return repos.store.now() + 7 * DAY


def seed_abandoned_delivery(repos: Repositories) -> datetime:
    clock = repos.store.clock
    assert isinstance(clock, FakeClock)
    (delivery,) = repos.outbox.enqueue(sid="gone", sub="s", client_ids=[CLIENT])
    retrying = True
    while retrying:  # each attempt when it falls due, as the worker makes them
        (claimed,) = repos.outbox.claim_due(1)
        retrying = repos.outbox.mark_failed(claimed, "HTTP 500") is Settlement.RETRYING
        with repos.store.session() as session:
            row = session.get(LogoutDelivery, delivery.id)
            assert row is not None
            clock.now = max(clock.now, row.next_attempt_at)
    return repos.store.now() + 7 * DAY


def seed_ended_session(repos: Repositories) -> datetime:
    sid = new_session(repos)
    repos.sessions.add_relying_party(sid, CLIENT)
    ended = repos.sessions.end_session(sid, EndReason.LOGOUT)
    assert ended is not None
    return ended.ended_at + 30 * DAY


def seed_unended_session(repos: Repositories) -> datetime:
    new_session(repos)
    return repos.store.now() + timedelta(hours=8) + 30 * DAY


def seed_throttle(repos: Repositories) -> datetime:
    repos.throttle.record_failure("addr:192.0.2.1")
    return repos.store.now() + DAY


def seed_blocking_throttle(repos: Repositories) -> datetime:
    state = None
    for _ in range(12):  # 7 past the free failures: blocked for 32 minutes
        state = repos.throttle.record_failure("account:x")
    assert state is not None and state.blocked_until is not None
    return state.blocked_until + DAY


def seed_heartbeat(repos: Repositories) -> datetime:
    assert repos.store.prove_writable("host-a")
    return repos.store.now() + 7 * DAY


def seed_ocsp_answer(repos: Repositories) -> datetime:
    expires = repos.store.now() + timedelta(hours=4)
    OcspAnswerTable(repos.store).put(
        "ca:1f", der=b"\x30\x00", location="http://ocsp", expires=expires
    )
    return expires + DAY


def seed_ocsp_responder(repos: Repositories) -> datetime:
    until = repos.store.now() + timedelta(minutes=10)
    ResponderStateTable(repos.store).mark_failed("http://ocsp", repos.store.now(), until, "down")
    return until + DAY


KINDS: list[tuple[Seeder, type[Base]]] = [
    (seed_jti, UsedJti),
    (seed_challenge, CardChallenge),
    (seed_transaction, LoginTransaction),
    (seed_token, OAuthToken),
    (seed_code, AuthorizationCode),
    (seed_delivery, LogoutDelivery),
    (seed_abandoned_delivery, LogoutDelivery),
    (seed_ended_session, SigninSession),
    (seed_unended_session, SigninSession),
    (seed_throttle, ThrottleCounter),
    (seed_blocking_throttle, ThrottleCounter),
    (seed_heartbeat, Heartbeat),
    (seed_ocsp_answer, OcspAnswer),
    (seed_ocsp_responder, OcspResponderState),
]


@pytest.mark.parametrize(("seed", "model"), KINDS, ids=[s.__name__[5:] for s, _ in KINDS])
def test_each_kind_is_kept_until_its_retention_ends_then_purged(
    repos: Repositories, clock: FakeClock, seed: Seeder, model: type[Base]
) -> None:
    retention = retention_of(repos)
    due = seed(repos)
    assert count(repos.store, model) == 1

    clock.now = due - SECOND
    retention.run_pass()
    assert count(repos.store, model) == 1

    clock.now = due + SECOND
    report = retention.run_pass()
    assert count(repos.store, model) == 0
    assert report.complete
    assert report.counts.get(str(model.__tablename__), 0) == 1


def test_an_ended_sessions_relying_parties_go_with_it(
    repos: Repositories, clock: FakeClock
) -> None:
    due = seed_ended_session(repos)
    assert count(repos.store, SessionRelyingParty) == 1
    clock.now = due + SECOND
    retention_of(repos).run_pass()
    assert count(repos.store, SessionRelyingParty) == 0


def test_live_rows_are_untouched(repos: Repositories, clock: FakeClock) -> None:
    # Old rows of every kind, then live ones made now.
    for seed, _ in KINDS:
        seed(repos)
    clock.advance(60 * DAY)
    sid = new_session(repos, "live@nhs.net")
    repos.sessions.add_relying_party(sid, CLIENT)
    code = repos.codes.issue(grant(sid))
    repos.tokens.issue(
        client_id=CLIENT,
        sub="s",
        scope="openid",
        access_token="live-a",
        refresh_token="live-r",
        sid=sid,
        code_id=code.code_id,
    )
    tx = repos.transactions.create(request())
    assert repos.challenges.issue(tx.transaction_id) is not None
    assert repos.transactions.expire(repos.transactions.create(request()).transaction_id)
    repos.jtis.use_once(scope="client", jti="live", expires_at=clock.now + timedelta(minutes=5))
    repos.throttle.record_failure("addr:198.51.100.1")
    repos.outbox.enqueue(sid="pending", sub="s", client_ids=[CLIENT])
    assert repos.store.prove_writable("host-live")
    live = {
        model: count(repos.store, model)
        for model in (
            SigninSession,
            SessionRelyingParty,
            AuthorizationCode,
            OAuthToken,
            LoginTransaction,
            CardChallenge,
            UsedJti,
            ThrottleCounter,
            LogoutDelivery,
            Heartbeat,
        )
    }

    report = retention_of(repos).run_pass()

    assert report.total > 0
    after = {model: count(repos.store, model) for model in live}
    assert after == {
        SigninSession: 1,
        SessionRelyingParty: 1,
        AuthorizationCode: 1,
        OAuthToken: 2,
        LoginTransaction: 1,
        CardChallenge: 1,
        UsedJti: 1,
        ThrottleCounter: 1,
        LogoutDelivery: 1,
        Heartbeat: 1,
    }
    info = repos.tokens.lookup_access_token("live-a")
    assert info is not None and info.claims == {"name": "Alex"}  # its code is kept


def test_audit_registrations_subjects_role_choices_and_keys_are_never_purged(
    repos: Repositories, clock: FakeClock
) -> None:
    sid = new_session(repos)
    assert repos.sessions.select_role(sid, "555123456789")
    repos.registrations.create(
        NewRegistration(
            card_uuid="555000000001",
            account_mail="alex@nhs.net",
            account_dn="uid=alex,dc=example",
            org_code="RX1",
            link_mode=LinkMode.UUID,
            cert_issuer_dn="CN=Test CA",
            cert_serial="1f",
            cert_fingerprint="ab" * 32,
            how="test",
        )
    )
    repos.keys.ensure_keys()
    repos.keys.rotate()
    repos.audit.append("signin.card", "success", subject="alex@nhs.net")
    for seed, _ in KINDS:
        seed(repos)
    kept = {
        m: count(repos.store, m)
        for m in (AuditEntry, Registration, Subject, RoleChoice, SigningKey)
    }
    assert all(kept.values())

    retention = retention_of(repos)
    for _ in range(4):  # years on
        clock.advance(400 * DAY)
        retention.run_pass()

    for model, before in kept.items():
        after = count(repos.store, model)
        if model is AuditEntry:
            assert after > before  # the purges' own entries, added
        else:
            assert after == before
    assert repos.audit.verify_chain().ok


def test_an_ended_session_is_kept_while_a_token_or_a_delivery_names_it(
    repos: Repositories, clock: FakeClock
) -> None:
    sid = new_session(repos)
    repos.sessions.add_relying_party(sid, CLIENT)
    code = repos.codes.issue(grant(sid))
    repos.tokens.issue(
        client_id=CLIENT, sub="s", scope="openid", access_token="a", sid=sid, code_id=code.code_id
    )
    ended = repos.sessions.end_session(sid, EndReason.LOGOUT)
    assert ended is not None
    (delivery,) = repos.outbox.enqueue(sid=sid, sub="s", client_ids=[CLIENT])
    retention = retention_of(repos, expired_tokens=40 * DAY, logout_deliveries=50 * DAY)

    clock.advance(31 * DAY)  # past the session's 30 days, not the token's 40
    retention.run_pass()
    assert repos.sessions.get(sid) is not None
    assert count(repos.store, AuthorizationCode) == 1  # its token still reads its claims

    clock.advance(10 * DAY)  # token and code gone; the delivery is still pending
    retention.run_pass()
    assert count(repos.store, OAuthToken) == 0
    assert count(repos.store, AuthorizationCode) == 0
    assert repos.sessions.get(sid) is not None

    repos.outbox.mark_delivered(delivery)
    clock.advance(51 * DAY)
    retention.run_pass()
    assert count(repos.store, LogoutDelivery) == 0
    assert repos.sessions.get(sid) is None


def test_a_rotated_refresh_chain_is_purged_whole_in_one_pass(
    repos: Repositories, clock: FakeClock
) -> None:
    repos.tokens.issue(
        client_id=CLIENT, sub="s", scope="openid", access_token="a0", refresh_token="r0"
    )
    for i in range(1, 6):
        clock.advance(timedelta(minutes=5))
        result = repos.tokens.rotate_refresh_token(
            f"r{i - 1}", client_id=CLIENT, new_access_token=f"a{i}", new_refresh_token=f"r{i}"
        )
        assert result.issued is not None
    assert count(repos.store, OAuthToken) == 12

    clock.advance(9 * DAY)
    report = retention_of(repos).run_pass()

    assert report.counts == {"oauth_tokens": 12}
    assert count(repos.store, OAuthToken) == 0


def test_batches_are_bounded_and_one_audit_entry_counts_the_pass(
    repos: Repositories, clock: FakeClock
) -> None:
    expires = clock.now + timedelta(minutes=1)
    with repos.store.transaction() as session:
        session.add_all(UsedJti(key=f"{i:064x}", expires_at=expires) for i in range(1234))
        session.add_all(
            ThrottleCounter(
                key=f"addr:{i}", failures=1, window_started_at=clock.now, last_failure_at=clock.now
            )
            for i in range(250)
        )
    batches = Batches()
    retention = Retention(
        repos.store, audit=repos.audit, policy=RetentionPolicy(batch_size=100), observer=batches
    )
    clock.advance(2 * DAY)

    report = retention.run_pass()

    assert report.counts == {"used_jtis": 1234, "throttle_counters": 250}
    assert batches.seen and all(n <= 100 for _, n in batches.seen)
    assert sum(n for kind, n in batches.seen if kind == "used_jtis") == 1234
    assert len([n for kind, n in batches.seen if kind == "used_jtis"]) == 13
    entries = purge_entries(repos)
    assert len(entries) == 1
    assert entries[0].details == {
        "purged": {"used_jtis": 1234, "throttle_counters": 250},
        "complete": True,
    }
    assert str(entries[0].outcome) == "success"


def test_a_pass_that_purges_nothing_writes_no_audit_entry(
    repos: Repositories, clock: FakeClock
) -> None:
    seed_token(repos)  # not yet due
    report = retention_of(repos).run_pass()
    assert report.total == 0 and report.complete and not report.skipped
    assert repos.audit.head() is None


def test_a_stopped_pass_audits_what_it_deleted(repos: Repositories, clock: FakeClock) -> None:
    with repos.store.transaction() as session:
        session.add_all(UsedJti(key=f"{i:064x}", expires_at=clock.now) for i in range(30))
    clock.advance(2 * DAY)
    retention = retention_of(repos, batch_size=10)

    report = retention.run_pass(between_batches=lambda: True)

    assert report.counts == {"used_jtis": 10} and not report.complete
    (entry,) = purge_entries(repos)
    assert entry.details == {"purged": {"used_jtis": 10}, "complete": False}


def test_one_pass_at_a_time_in_a_process(repos: Repositories, clock: FakeClock) -> None:
    with repos.store.transaction() as session:
        session.add_all(UsedJti(key=f"{i:064x}", expires_at=clock.now) for i in range(20))
    clock.advance(2 * DAY)
    retention = retention_of(repos, batch_size=5)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> bool:
        inside.set()
        release.wait(10)
        return False

    first = threading.Thread(target=lambda: retention.run_pass(between_batches=hold))
    first.start()
    try:
        assert inside.wait(10)
        second = retention.run_pass()
        assert second.skipped and second.total == 0
    finally:
        release.set()
        first.join(10)
    assert count(repos.store, UsedJti) == 0


def test_the_policy_refuses_a_throttle_retention_shorter_than_a_window() -> None:
    with pytest.raises(ValueError, match="throttle"):
        RetentionPolicy(throttle_counters=timedelta(hours=1))
    with pytest.raises(ValueError, match="negative"):
        RetentionPolicy(expired_tokens=-DAY)
    with pytest.raises(ValueError, match="batch_size"):
        RetentionPolicy(batch_size=0)


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_an_instance_skips_the_pass_while_another_holds_the_lock(
    repos: Repositories, other_store: Store, clock: FakeClock
) -> None:
    seed_jti(repos)
    clock.advance(2 * DAY)
    with other_store.transaction() as session:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RETENTION_LOCK})
        report = retention_of(repos).run_pass()
        assert report.skipped and report.total == 0
    assert count(repos.store, UsedJti) == 1
    assert retention_of(repos).run_pass().counts == {"used_jtis": 1}


def test_two_instances_purging_at_once_delete_each_row_once(
    repos: Repositories,
    other_store: Store,
    clock: FakeClock,
    concurrently: Callable[[int, Callable[[int], object]], list[object]],
) -> None:
    expires = clock.now
    with repos.store.transaction() as session:
        session.add_all(UsedJti(key=f"{i:064x}", expires_at=expires) for i in range(2000))
    for i in range(300):
        repos.tokens.issue(client_id=CLIENT, sub="s", scope="openid", access_token=f"t{i}")
    clock.advance(10 * DAY)
    instances = [
        Retention(
            store, audit=Repositories.build(store).audit, policy=RetentionPolicy(batch_size=50)
        )
        for store in (repos.store, other_store)
    ]

    def run(i: int) -> dict[str, int]:
        done: dict[str, int] = {}
        # Each instance keeps trying until it has nothing left: a pass the other held
        # the lock for is skipped (or ended early), never waited on.
        for _ in range(200):
            report = instances[i].run_pass()
            for kind, n in report.counts.items():
                done[kind] = done.get(kind, 0) + n
            if report.complete and report.total == 0:
                break
        return done

    results = concurrently(2, run)

    totals: dict[str, int] = {}
    for result in results:
        assert isinstance(result, dict)
        for kind, n in result.items():
            totals[kind] = totals.get(kind, 0) + n
    assert totals == {"used_jtis": 2000, "oauth_tokens": 300}
    assert count(repos.store, UsedJti) == 0 and count(repos.store, OAuthToken) == 0
    assert repos.audit.verify_chain().ok


def test_the_worker_purges_in_the_background_and_stops(
    repos: Repositories, clock: FakeClock
) -> None:
    seed_jti(repos)
    clock.advance(2 * DAY)
    worker = RetentionWorker(
        retention_of(repos), interval=timedelta(milliseconds=20), pause=timedelta(0)
    )
    worker.ensure_running()
    worker.ensure_running()  # no second thread
    try:
        for _ in range(500):
            if count(repos.store, UsedJti) == 0:
                break
            threading.Event().wait(0.01)
        assert count(repos.store, UsedJti) == 0
        assert worker.running
    finally:
        worker.stop()
    assert not worker.running


def test_purge_kinds_name_real_tables() -> None:
    tables = set(Base.metadata.tables)
    assert {kind.value for kind in PurgeKind} <= tables
    never = {"audit_log", "registrations", "subjects", "role_choices", "signing_keys"}
    assert not never & {kind.value for kind in PurgeKind}
