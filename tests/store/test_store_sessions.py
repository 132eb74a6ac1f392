"""Sign-in sessions, their RPs, ending them, and the back-channel logout outbox."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from careid_broker.store import (
    CertificateRef,
    EndReason,
    LogoutOutbox,
    NewSession,
    Repositories,
    RetryPolicy,
    Settlement,
    Store,
    new_opaque_token,
)
from support.clock import FakeClock


def _session(repos: Repositories, mail: str = "alice@nhs.net", card: bool = True) -> NewSession:
    sub = repos.subjects.sub_for_account(mail=mail, dn=f"uid={mail}")
    return repos.sessions.create(
        sub=sub,
        account_mail=mail,
        acr="AAL3_SMARTCARD" if card else "AAL1_USERPASS",
        amr=["sc", "pin", "hwk"] if card else ["pwd"],
        auth_time=repos.store.now(),
        card_uuid="100000000001" if card else None,
        certificate=CertificateRef("CN=Test Card CA", "0a1b") if card else None,
        with_card_session=card,
    )


def test_a_card_session_is_found_by_its_card_session_id_only_hashed(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    created = _session(repos)
    assert created.card_session is not None
    found = repos.sessions.find_by_card_session(created.card_session)
    assert found == created.record
    assert found.active and found.amr == ("sc", "pin", "hwk")
    assert found.created_at == found.last_seen_at == clock.now
    with store.engine.connect() as conn:
        stored = repr(conn.execute(text("SELECT * FROM signin_sessions")).all())
    assert created.card_session not in stored
    assert repos.sessions.find_by_card_session("unknown") is None
    assert _session(repos, "bob@nhs.net", card=False).card_session is None


def test_touch_records_activity_until_the_session_ends(
    repos: Repositories, clock: FakeClock
) -> None:
    sid = _session(repos).record.sid
    clock.advance(timedelta(minutes=3))
    assert repos.sessions.touch(sid) is True
    record = repos.sessions.get(sid)
    assert record is not None and record.last_seen_at == clock.now
    repos.sessions.end_session(sid, EndReason.LOGOUT)
    assert repos.sessions.touch(sid) is False
    assert repos.sessions.touch("unknown") is False


def test_ending_a_session_names_its_rps_revokes_its_tokens_and_is_idempotent(
    repos: Repositories,
) -> None:
    record = _session(repos).record
    for client in ("webmail", "rostering", "webmail"):
        assert repos.sessions.add_relying_party(record.sid, client) is True
    assert repos.sessions.relying_parties(record.sid) == ("rostering", "webmail")
    access = new_opaque_token()
    repos.tokens.issue(
        client_id="webmail", sub=record.sub, scope="openid", access_token=access, sid=record.sid
    )

    ended = repos.sessions.end_session(record.sid, EndReason.CARD_REMOVED)
    assert ended is not None and ended.ended_now
    assert ended.reason == "card_removed"
    assert set(ended.relying_parties) == {"webmail", "rostering"}
    assert ended.tokens_revoked == 1
    assert repos.tokens.lookup_access_token(access) is None
    stored = repos.sessions.get(record.sid)
    assert stored is not None and not stored.active and stored.end_reason == "card_removed"

    again = repos.sessions.end_session(record.sid, EndReason.LOGOUT)
    assert again is not None and not again.ended_now
    assert again.relying_parties == () and again.reason == "card_removed"
    assert again.ended_at == ended.ended_at
    # No RP joins an ended session (the token endpoint then issues nothing).
    assert repos.sessions.add_relying_party(record.sid, "latecomer") is False
    assert "latecomer" not in repos.sessions.relying_parties(record.sid)
    assert repos.sessions.add_relying_party("unknown", "webmail") is False
    assert repos.sessions.end_session("unknown", EndReason.LOGOUT) is None


def test_a_card_session_is_found_by_the_certificate_it_was_opened_with(
    repos: Repositories,
) -> None:
    opened = _session(repos).record
    assert (opened.cert_issuer_dn, opened.cert_serial) == ("CN=Test Card CA", "0A1B")
    _session(repos, card=False)
    assert [s.sid for s in repos.sessions.opened_with("CN=Test Card CA", ["0a1b"])] == [opened.sid]
    assert repos.sessions.opened_with("CN=Another CA", ["0A1B"]) == []
    assert repos.sessions.opened_with("CN=Test Card CA", ["0A1C"]) == []
    repos.sessions.end_session(opened.sid, EndReason.CARD_REMOVED)
    [ended] = repos.sessions.opened_with("CN=Test Card CA", {"0A1B", "FF"})
    assert ended.sid == opened.sid and ended.end_reason == "card_removed"


def test_ending_all_sessions_of_an_account(repos: Repositories) -> None:
    first = _session(repos).record
    second = _session(repos, card=False).record
    other = _session(repos, "bob@nhs.net").record
    repos.sessions.end_session(first.sid, EndReason.LOGOUT)
    assert [s.sid for s in repos.sessions.active_for_account("ALICE@nhs.net")] == [second.sid]

    ended = repos.sessions.end_sessions_for_account("Alice@NHS.net", "registration_removed")
    assert [e.sid for e in ended] == [second.sid]
    assert repos.sessions.active_for_account("alice@nhs.net") == []
    still = repos.sessions.get(other.sid)
    assert still is not None and still.active


@pytest.mark.parametrize("by", ["card", "account", "sessions"])
def test_the_sign_ins_kept_after_a_card_removal_end_with_the_card_or_account(
    repos: Repositories, clock: FakeClock, by: str
) -> None:
    record = _session(repos).record
    untouched = _session(repos, "bob@nhs.net", card=False).record
    tokens = {
        (sid, client): new_opaque_token()
        for sid in (record.sid, untouched.sid)
        for client in ("webmail", "rostering")
    }
    for (sid, client), access in tokens.items():
        repos.sessions.add_relying_party(sid, client)
        repos.tokens.issue(
            client_id=client,
            sub=record.sub,
            scope="openid",
            access_token=access,
            refresh_token=new_opaque_token(),
            sid=sid,
        )
    for sid in (record.sid, untouched.sid):
        repos.sessions.end_session(
            sid, EndReason.CARD_REMOVED, keep_clients=frozenset({"rostering"})
        )
    assert repos.tokens.lookup_access_token(tokens[record.sid, "rostering"]) is not None
    clock.advance(timedelta(minutes=5))

    selector: dict[str, Any] = {
        "card": {"card_uuid": "100000000001"},
        "account": {"account_mail": "ALICE@nhs.net"},
        "sessions": {"sids": [record.sid]},
    }[by]
    [ended] = repos.sessions.end_kept_signins(EndReason.CARD_REVOKED, **selector)
    assert ended.sid == record.sid and ended.ended_now and ended.reason == "card_revoked"
    assert ended.relying_parties == ("rostering",) and ended.tokens_revoked == 2
    assert ended.ended_at == clock.now
    assert repos.tokens.lookup_access_token(tokens[record.sid, "rostering"]) is None
    # Bob's card and account are not named: his kept sign-in stays.
    assert repos.tokens.lookup_access_token(tokens[untouched.sid, "rostering"]) is not None
    assert repos.sessions.end_kept_signins(EndReason.CARD_REVOKED, **selector) == []
    with pytest.raises(ValueError, match="name a card, an account or sessions"):
        repos.sessions.end_kept_signins(EndReason.CARD_REVOKED)


def test_one_relying_partys_kept_sign_in_ends_alone(repos: Repositories, clock: FakeClock) -> None:
    ended_one = _session(repos).record
    live = _session(repos).record
    access = {}
    for sid in (ended_one.sid, live.sid):
        for client in ("webmail", "rostering"):
            repos.sessions.add_relying_party(sid, client)
            access[sid, client] = new_opaque_token()
            repos.tokens.issue(
                client_id=client,
                sub=ended_one.sub,
                scope="openid",
                access_token=access[sid, client],
                refresh_token=new_opaque_token(),
                sid=sid,
            )
    repos.sessions.end_session(
        ended_one.sid, EndReason.CARD_REMOVED, keep_clients=frozenset({"webmail", "rostering"})
    )
    # Only ended sessions: the live one's tokens are no kept sign-in.
    assert repos.sessions.kept_signins(ended_one.sub, "rostering") == [ended_one.sid]
    assert repos.sessions.kept_signins("another-sub", "rostering") == []

    [ended] = repos.sessions.end_kept_signins(
        EndReason.LOGOUT, sids=[ended_one.sid], client_id="rostering"
    )

    assert ended.relying_parties == ("rostering",) and ended.tokens_revoked == 2
    assert ended.reason == "logout" and ended.ended_at == clock.now
    assert repos.tokens.lookup_access_token(access[ended_one.sid, "rostering"]) is None
    assert repos.tokens.lookup_access_token(access[ended_one.sid, "webmail"]) is not None
    assert repos.tokens.lookup_access_token(access[live.sid, "rostering"]) is not None
    assert repos.sessions.kept_signins(ended_one.sub, "rostering") == []
    assert repos.sessions.kept_signins(ended_one.sub, "webmail") == [ended_one.sid]
    assert (
        repos.sessions.end_kept_signins(
            EndReason.LOGOUT, sids=[ended_one.sid, live.sid], client_id="rostering"
        )
        == []
    )


def test_ending_and_enqueueing_logout_commit_or_fail_together(
    repos: Repositories, store: Store
) -> None:
    record = _session(repos).record
    repos.sessions.add_relying_party(record.sid, "webmail")
    with pytest.raises(RuntimeError), store.transaction():
        ended = repos.sessions.end_session(record.sid, EndReason.CARD_REMOVED)
        assert ended is not None
        repos.outbox.enqueue(sid=ended.sid, sub=ended.sub, client_ids=ended.relying_parties)
        raise RuntimeError("crash before commit")
    still = repos.sessions.get(record.sid)
    assert still is not None and still.active
    assert repos.outbox.pending_count() == 0

    with store.transaction():
        ended = repos.sessions.end_session(record.sid, EndReason.CARD_REMOVED)
        assert ended is not None
        repos.outbox.enqueue(sid=ended.sid, sub=ended.sub, client_ids=ended.relying_parties)
    assert repos.outbox.pending_count() == 1


# -- outbox ------------------------------------------------------------------------------


def test_claimed_deliveries_are_leased_then_settled(repos: Repositories, clock: FakeClock) -> None:
    queued = repos.outbox.enqueue(sid="s1", sub="sub1", client_ids=["webmail", "rostering"])
    assert len({d.jti for d in queued}) == 2
    claimed = repos.outbox.claim_due(10, lease=timedelta(seconds=30))
    assert [d.client_id for d in claimed] == ["webmail", "rostering"]
    assert repos.outbox.claim_due(10) == []  # leased

    assert repos.outbox.mark_delivered(claimed[0]) is Settlement.DELIVERED
    clock.advance(timedelta(seconds=30))
    # The worker holding "rostering" stalled: its lease ran out, so it is due again, as a
    # new logout token (the RP may have taken the first one and refuse it as a replay).
    (again,) = repos.outbox.claim_due(10)
    assert again.client_id == "rostering" and again.jti != claimed[1].jti
    assert (again.sid, again.sub) == (claimed[1].sid, claimed[1].sub)
    # The stalled worker no longer holds it: whatever it reports is not recorded.
    assert repos.outbox.mark_failed(claimed[1], "timeout") is Settlement.CLAIM_LOST
    assert repos.outbox.mark_delivered(claimed[1]) is Settlement.CLAIM_LOST
    assert repos.outbox.claim_due(10) == []  # still the new claim's
    assert repos.outbox.mark_delivered(again) is Settlement.DELIVERED
    assert repos.outbox.mark_delivered(again) is Settlement.CLAIM_LOST
    assert repos.outbox.pending_count() == 0


def test_failed_deliveries_back_off_then_are_abandoned(store: Store, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=3, first_delay=timedelta(seconds=10))
    outbox = LogoutOutbox(store, policy=policy)
    (delivery,) = outbox.enqueue(sid="s1", sub="sub1", client_ids=["webmail"])
    (first,) = outbox.claim_due(1)
    assert outbox.mark_failed(first, "HTTP 503") is Settlement.RETRYING
    clock.advance(timedelta(seconds=9))
    assert outbox.claim_due(1) == []
    clock.advance(timedelta(seconds=1))
    (retry,) = outbox.claim_due(1)
    assert retry.attempts == 1
    assert outbox.mark_failed(retry, "timeout") is Settlement.RETRYING
    clock.advance(timedelta(seconds=19))
    assert outbox.claim_due(1) == []
    clock.advance(timedelta(seconds=1))
    (last,) = outbox.claim_due(1)
    assert outbox.mark_failed(last, "x" * 2000) is Settlement.ABANDONED  # third strike
    clock.advance(timedelta(days=1))
    assert outbox.claim_due(1) == []
    assert outbox.pending_count() == 0
    unknown = dataclasses.replace(delivery, id=12345)
    assert outbox.mark_failed(unknown, "unknown delivery") is Settlement.CLAIM_LOST


def test_retry_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(first_delay=timedelta(seconds=5), max_delay=timedelta(seconds=30))
    assert [policy.delay_after(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_two_instances_claim_disjoint_deliveries(
    repos: Repositories,
    store: Store,
    other_store: Store,
    concurrently: Callable[..., list[Any]],
) -> None:
    clients = [f"rp{i}" for i in range(24)]
    repos.outbox.enqueue(sid="s1", sub="sub1", client_ids=clients)
    instances = [LogoutOutbox(store), LogoutOutbox(other_store)]

    def drain(i: int) -> list[str]:
        mine: list[str] = []
        while batch := instances[i % 2].claim_due(2):
            mine += [d.client_id for d in batch]
        return mine

    claims = concurrently(6, drain)
    everything = [c for worker in claims for c in worker]
    assert sorted(everything) == sorted(clients)  # each exactly once
