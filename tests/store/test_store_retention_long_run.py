"""A long run: weeks of sign-ins with the purge running now and then. Every table of
working state levels off under a bound set by its retention, while the audit log only
grows and its chain stays whole."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from careid_broker.store import (
    AuthorizationRequest,
    ChallengeOutcome,
    CodeGrant,
    EndReason,
    OcspAnswerTable,
    Outcome,
    PurgeReport,
    RedeemOutcome,
    Repositories,
    ResponderStateTable,
    Retention,
    RetentionPolicy,
    RotateOutcome,
)
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
    SessionRelyingParty,
    SigninSession,
    Subject,
    ThrottleCounter,
    UsedJti,
)
from support.clock import FakeClock

DAY = timedelta(days=1)
STEP = timedelta(hours=3)
STEPS_PER_DAY = 8
DAYS = 14
PURGE_EVERY = 4  # steps: twice a day
CLIENTS = ("webmail", "records")

POLICY = RetentionPolicy(
    ended_sessions=timedelta(days=3),
    expired_tokens=timedelta(days=2),
    expired_codes=DAY,
    expired_challenges=DAY,
    login_transactions=DAY,
    used_jtis=DAY,
    throttle_counters=DAY,
    logout_deliveries=timedelta(days=2),
    heartbeats=timedelta(days=2),
    ocsp_state=DAY,
    batch_size=40,
)

# Rows each step makes at most, and how long (in days, rounded up, purge interval
# included) a row can live before a pass removes it: lifetime + retention + half a day.
PER_STEP_AND_DAYS: dict[type[Base], tuple[float, float]] = {
    LoginTransaction: (1, 1 + 1),
    CardChallenge: (1 / 2, 1 + 1),  # card sign-ins: every other step
    # A code stays while its tokens do (refresh tokens live 8 hours).
    AuthorizationCode: (2, 1 / 3 + 2 + 1),
    OAuthToken: (6, 1 / 3 + 2 + 1),
    SigninSession: (1, 1 / 3 + 3 + 1),
    SessionRelyingParty: (2, 1 / 3 + 3 + 1),
    LogoutDelivery: (2, 2 + 1),
    UsedJti: (1, 1 + 1),
    ThrottleCounter: (1 / 2, 1 + 1),  # password sign-ins: every other step
    Heartbeat: (1 / STEPS_PER_DAY, 2 + 2),
    OcspAnswer: (1, 1 / 6 + 1 + 1),
    OcspResponderState: (1, 1 + 1),
}


def count(repos: Repositories, model: type[Base]) -> int:
    with repos.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def sign_in(repos: Repositories, n: int, *, ended: bool, card: bool) -> None:
    """One sign-in to both relying parties, as the services would drive the store."""
    now = repos.store.now()
    mail = f"user{n % 40}@nhs.net"
    tx = repos.transactions.create(
        AuthorizationRequest(client_id=CLIENTS[0], redirect_uri="https://rp/cb", scope="openid")
    )
    if card:
        issued = repos.challenges.issue(tx.transaction_id)
        assert issued is not None
        assert repos.challenges.consume(issued.challenge, tx.transaction_id) is ChallengeOutcome.OK
    else:  # someone mistyped their password first, from a new address
        repos.throttle.record_failure(f"addr:10.0.{n // 250}.{n % 250}")
    assert repos.transactions.complete(tx.transaction_id) is not None
    sub = repos.subjects.sub_for_account(mail=mail, dn=f"uid={mail}")
    sid = repos.sessions.create(
        sub=sub, account_mail=mail, acr="aal3", amr=["sc"], auth_time=now, with_card_session=card
    ).record.sid
    for client in CLIENTS:
        code = repos.codes.issue(
            CodeGrant(
                client_id=client,
                redirect_uri="https://rp/cb",
                scope="openid",
                sid=sid,
                sub=sub,
                auth_time=now,
                acr="aal3",
                amr=("sc",),
                claims={"email": mail},
            )
        )
        redeemed = repos.codes.redeem(code.code, client_id=client)
        assert redeemed.outcome is RedeemOutcome.OK
        assert repos.sessions.add_relying_party(sid, client)
        repos.tokens.issue(
            client_id=client,
            sub=sub,
            scope="openid",
            access_token=f"a-{n}-{client}",
            refresh_token=f"r-{n}-{client}",
            sid=sid,
            code_id=code.code_id,
        )
    rotated = repos.tokens.rotate_refresh_token(
        f"r-{n}-{CLIENTS[0]}",
        client_id=CLIENTS[0],
        new_access_token=f"a2-{n}",
        new_refresh_token=f"r2-{n}",
    )
    assert rotated.outcome is RotateOutcome.OK
    assert repos.jtis.use_once(scope=CLIENTS[1], jti=f"assertion-{n}", expires_at=now + STEP)
    repos.audit.append("signin.card" if card else "signin.password", Outcome.SUCCESS, subject=mail)
    if ended:
        result = repos.sessions.end_session(sid, EndReason.LOGOUT)
        assert result is not None
        for delivery in repos.outbox.enqueue(sid=sid, sub=sub, client_ids=result.relying_parties):
            repos.outbox.mark_delivered(delivery)


def test_tables_stay_bounded_over_weeks_of_sign_ins(repos: Repositories, clock: FakeClock) -> None:
    retention = Retention(
        repos.store, audit=repos.audit, policy=POLICY, session_lifetime=timedelta(hours=8)
    )
    answers = OcspAnswerTable(repos.store)
    responders = ResponderStateTable(repos.store)
    bounds = {
        model: int(per_step * STEPS_PER_DAY * days) + 1
        for model, (per_step, days) in PER_STEP_AND_DAYS.items()
    }
    peak: Counter[str] = Counter()
    made = 0
    audit_sizes: list[int] = []
    reports: list[PurgeReport] = []

    for step in range(DAYS * STEPS_PER_DAY):
        now = clock.now
        # Card and password sign-ins by turns; most people sign out, but every fourth
        # card user just closes the browser.
        card = step % 2 == 0
        sign_in(repos, made, ended=not card or step % 8 != 6, card=card)
        made += 1
        if step % STEPS_PER_DAY == 0:  # a broker host replaced each day
            assert repos.store.prove_writable(f"host-{step // STEPS_PER_DAY}")
        answers.put(
            f"ca:{step:x}", der=b"\x30\x00", location="http://ocsp", expires=now + 4 * STEP / 3
        )
        responders.mark_failed(f"http://ocsp-{step}", now, now + timedelta(minutes=5), "timeout")
        if step % PURGE_EVERY == PURGE_EVERY - 1:
            # The tables are at their fullest just before a pass.
            for model, bound in bounds.items():
                rows = count(repos, model)
                peak[model.__tablename__] = max(peak[model.__tablename__], rows)
                day = step // STEPS_PER_DAY
                assert rows <= bound, f"{model.__tablename__}: {rows} rows > {bound} on day {day}"
            reports.append(retention.run_pass())
            audit_sizes.append(count(repos, AuditEntry))
        clock.advance(STEP)

    # Without the purge the tables would hold everything made in the run.
    assert made == DAYS * STEPS_PER_DAY
    assert count(repos, SigninSession) < made / 3
    assert count(repos, OAuthToken) < 6 * made / 3
    # The audit log only grows: every sign-in, and each purge that deleted something.
    assert audit_sizes == sorted(audit_sizes)
    purges = repos.audit.list_recent(event_prefix="retention.purge", limit=1000)
    assert len(purges) == sum(1 for report in reports if report.total)
    assert len(purges) >= len(reports) - 3  # all but the first day's passes deleted rows
    assert all(report.complete for report in reports)
    assert count(repos, AuditEntry) == made + len(purges)
    assert repos.audit.verify_chain().ok
    # People are kept, whatever happened to their sessions.
    assert count(repos, Subject) == 40
    # The bound was reached, not just never approached: the purge is what holds it.
    assert all(peak[m.__tablename__] > bounds[m] / 3 for m in bounds if m is not Heartbeat)
