"""Login transactions and card challenges: hashed ids, expiry, single use under races."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from careid_broker.store import (
    MAX_TRANSACTION_ID_LENGTH,
    AuthorizationRequest,
    CardChallenges,
    ChallengeOutcome,
    LoginTransactions,
    Repositories,
    Store,
    TransactionStatus,
)
from careid_broker.store.base import sha256_hex
from careid_broker.store.challenges import new_challenge
from careid_broker.store.models import CardChallenge, LoginTransaction
from careid_broker.store.transactions import _AAD, TransactionSealer, _micros
from careid_protocol.errors import ErrorCode
from support.clock import FakeClock

#: Test material: the key the `repos` fixture seals login transactions with.
KEY = bytes(range(32))
REQUEST = AuthorizationRequest(
    client_id="webmail",
    redirect_uri="https://webmail.example/cb",
    scope="openid email",
    state="st-1",
    nonce="n-1",
    code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    code_challenge_method="S256",
    prompt="login",
    max_age=300,
    acr_values="AAL3_ANY",
    extras={"login_hint": "alice@nhs.net", "ui_locales": ["en-GB"]},
)


def test_a_pending_transaction_is_sealed_into_its_id_and_not_stored(
    repos: Repositories, store: Store, other_store: Store, clock: FakeClock
) -> None:
    created = repos.transactions.create(REQUEST)
    transaction_id = created.transaction_id
    record = repos.transactions.get(transaction_id)
    assert record is not None and record == created.record
    assert record.request == REQUEST
    assert record.status is TransactionStatus.PENDING
    assert record.expires_at == clock.now + timedelta(minutes=15)
    assert _rows(store) == []  # /authorize writes nothing
    # Sealed, not merely encoded: none of the request shows through, in the id
    # or in the bytes it spells. Only values long enough that a random id cannot
    # hold them by chance are looked for (a short one such as the nonce "n-1"
    # turns up in about one random id in a few hundred).
    spelled = transaction_id.removeprefix("t1.")
    sealed = base64.urlsafe_b64decode(spelled + "=" * (-len(spelled) % 4))
    for value in ("alice@nhs.net", "https://webmail.example/cb", REQUEST.code_challenge):
        assert value not in transaction_id
        assert value.encode() not in sealed
    # Another instance with the same key opens it; one with another key does not.
    assert LoginTransactions(other_store, key=KEY).get(transaction_id) == record
    assert LoginTransactions(other_store, key=bytes(32)).get(transaction_id) is None


def test_a_changed_or_made_up_id_opens_nothing(repos: Repositories) -> None:
    transaction_id = repos.transactions.create(REQUEST).transaction_id
    flipped = "A" if transaction_id[40] != "A" else "B"
    for bad in (
        transaction_id[:40] + flipped + transaction_id[41:],  # one character changed
        transaction_id[:-4],  # cut short
        transaction_id + "A",
        "t1." + transaction_id[3:].upper(),
        "not-a-transaction",
        "t1.",
        "t1.!!!!",
        "t1." + "é" * 40,
        "t1." + "A" * (MAX_TRANSACTION_ID_LENGTH + 1),
        # Other spellings of the same bytes: each would be a transaction of its own.
        transaction_id + ".",
        transaction_id + "==",
        transaction_id[:20] + "!" + transaction_id[20:],
        # '+' and '/' for '-' and '_' (the same id, in the rare case it has neither).
        "t1." + base64.b64encode(_sealed_bytes(transaction_id)).decode().rstrip("=")
        if {"-", "_"} & set(transaction_id)
        else "",
    ):
        assert repos.transactions.get(bad) is None
        assert repos.transactions.complete(bad) is None
        assert repos.transactions.expire(bad) is False
        assert repos.challenges.issue(bad) is None


def test_a_broker_local_step_is_a_stored_row_every_instance_reads(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    # AUP and registration steps keep their ids in the cookie: a random id, a row.
    steps = LoginTransactions(store, key=KEY, sealed=False)
    step = steps.create(REQUEST)
    assert len(step.transaction_id) == 43 and not step.transaction_id.startswith("t1.")
    (row,) = _rows(store)
    assert row.status == "pending" and row.id_hash == sha256_hex(step.transaction_id)
    # The relying parties' instance (sealing) reads it and issues its challenges.
    assert repos.transactions.get(step.transaction_id) == step.record
    assert repos.challenges.issue(step.transaction_id) is not None
    done = repos.transactions.complete(step.transaction_id)
    assert done is not None and done.status is TransactionStatus.COMPLETED
    assert steps.complete(step.transaction_id) is None  # once
    assert repos.challenges.issue(step.transaction_id) is None
    late = steps.create(REQUEST)
    clock.advance(timedelta(minutes=15))
    assert steps.get(late.transaction_id).status is TransactionStatus.EXPIRED
    assert steps.complete(late.transaction_id) is None
    cancelled = steps.create(REQUEST)
    assert steps.expire(cancelled.transaction_id) and not steps.expire(cancelled.transaction_id)
    assert steps.get(cancelled.transaction_id).status is TransactionStatus.EXPIRED


def test_an_id_token_hint_is_sealed_with_the_request_and_older_ids_still_open(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    hinted = replace(REQUEST, id_token_hint_sub="kim-sub")
    created = repos.transactions.create(hinted)
    assert repos.transactions.get(created.transaction_id).request == hinted
    completed = repos.transactions.complete(created.transaction_id)
    assert completed is not None and completed.request == hinted
    # An id sealed by the release before (no "h" in it) opens as a request without one.
    body = {
        "c": REQUEST.client_id, "r": REQUEST.redirect_uri, "s": REQUEST.scope,
        "st": REQUEST.state, "n": REQUEST.nonce, "cc": REQUEST.code_challenge,
        "cm": REQUEST.code_challenge_method, "p": REQUEST.prompt, "m": REQUEST.max_age,
        "a": REQUEST.acr_values, "x": dict(REQUEST.extras),
        "t": _micros(clock.now), "e": _micros(clock.now + timedelta(minutes=15)),
    }  # fmt: skip
    salt = bytes(16)
    plain = json.dumps(body).encode()
    sealed = salt + TransactionSealer._aead(KEY, salt).encrypt(bytes(12), plain, _AAD)
    older = "t1." + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    record = repos.transactions.get(older)
    assert record is not None and record.request == REQUEST
    assert record.request.id_token_hint_sub is None
    # A stored step has no place for one: refused rather than dropped.
    with pytest.raises(ValueError, match="id_token_hint"):
        LoginTransactions(store, key=KEY, sealed=False).create(hinted)


def _sealed_bytes(transaction_id: str) -> bytes:
    text = transaction_id[3:]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_only_a_hash_of_the_id_is_kept_when_it_completes(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    created = repos.transactions.create(REQUEST)
    clock.advance(timedelta(seconds=30))
    assert repos.transactions.complete(created.transaction_id) is not None
    (row,) = _rows(store)
    assert row.id_hash == sha256_hex(created.transaction_id)
    assert created.transaction_id not in repr(row.__dict__)
    assert (row.client_id, row.state, row.nonce, row.extras) == (
        "webmail",
        "st-1",
        "n-1",
        {
            "login_hint": "alice@nhs.net",
            "ui_locales": ["en-GB"],
        },
    )
    assert row.created_at == created.record.created_at
    assert row.completed_at == clock.now and row.status == "completed"


def _rows(store: Store) -> list[LoginTransaction]:
    with store.session() as session:
        return list(session.scalars(select(LoginTransaction)).all())


def test_a_transaction_completes_once_and_not_after_expiry(
    repos: Repositories, clock: FakeClock
) -> None:
    first = repos.transactions.create(REQUEST)
    done = repos.transactions.complete(first.transaction_id)
    assert done is not None and done.status is TransactionStatus.COMPLETED
    assert done.completed_at == clock.now
    assert repos.transactions.complete(first.transaction_id) is None

    late = repos.transactions.create(REQUEST)
    clock.advance(timedelta(minutes=15))
    record = repos.transactions.get(late.transaction_id)
    assert record is not None and record.status is TransactionStatus.EXPIRED
    assert repos.transactions.complete(late.transaction_id) is None


def test_expire_ends_a_pending_transaction(repos: Repositories) -> None:
    created = repos.transactions.create(REQUEST)
    assert repos.transactions.expire(created.transaction_id) is True
    assert repos.transactions.expire(created.transaction_id) is False
    record = repos.transactions.get(created.transaction_id)
    assert record is not None and record.status is TransactionStatus.EXPIRED
    assert repos.challenges.issue(created.transaction_id) is None


def test_purge_removes_transactions_recorded_long_ago(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    old = repos.transactions.create(REQUEST)
    assert repos.transactions.complete(old.transaction_id) is not None
    clock.advance(timedelta(days=2))
    fresh = repos.transactions.create(REQUEST)
    assert repos.transactions.expire(fresh.transaction_id)
    assert repos.transactions.purge() == 1
    assert [row.id_hash for row in _rows(store)] == [sha256_hex(fresh.transaction_id)]


def test_challenges_are_43_char_base64url_from_the_csprng(
    repos: Repositories, clock: FakeClock
) -> None:
    tx = repos.transactions.create(REQUEST)
    issued = repos.challenges.issue(tx.transaction_id)
    assert issued is not None
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", issued.challenge)
    assert issued.expires_at == clock.now + timedelta(minutes=5)
    assert len({new_challenge() for _ in range(100)}) == 100


def test_no_challenge_for_an_unknown_or_finished_transaction(repos: Repositories) -> None:
    assert repos.challenges.issue("unknown") is None
    tx = repos.transactions.create(REQUEST)
    repos.transactions.complete(tx.transaction_id)
    assert repos.challenges.issue(tx.transaction_id) is None


def test_consume_outcomes(repos: Repositories, clock: FakeClock) -> None:
    tx = repos.transactions.create(REQUEST)
    other = repos.transactions.create(REQUEST)
    consume = repos.challenges.consume

    ok = repos.challenges.issue(tx.transaction_id)
    assert ok is not None
    assert consume(ok.challenge, tx.transaction_id) is ChallengeOutcome.OK
    assert consume(ok.challenge, tx.transaction_id) is ChallengeOutcome.USED

    assert consume(new_challenge(), tx.transaction_id) is ChallengeOutcome.UNKNOWN
    assert consume("short", tx.transaction_id) is ChallengeOutcome.UNKNOWN
    assert consume("A" * 42 + "\ud800", tx.transaction_id) is ChallengeOutcome.UNKNOWN

    # Presented from another browser window: refused AND burned.
    stray = repos.challenges.issue(tx.transaction_id)
    assert stray is not None
    assert consume(stray.challenge, other.transaction_id) is ChallengeOutcome.WRONG_TRANSACTION
    assert consume(stray.challenge, tx.transaction_id) is ChallengeOutcome.USED

    stale = repos.challenges.issue(tx.transaction_id)
    assert stale is not None
    clock.advance(timedelta(minutes=5))
    assert consume(stale.challenge, tx.transaction_id) is ChallengeOutcome.EXPIRED


def test_consume_honours_an_explicit_time(repos: Repositories, clock: FakeClock) -> None:
    tx = repos.transactions.create(REQUEST)
    issued = repos.challenges.issue(tx.transaction_id)
    assert issued is not None
    later = clock.now + timedelta(minutes=5, seconds=1)
    outcome = repos.challenges.consume(issued.challenge, tx.transaction_id, now=later)
    assert outcome is ChallengeOutcome.EXPIRED


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (ChallengeOutcome.OK, None),
        (ChallengeOutcome.UNKNOWN, ErrorCode.CHALLENGE_UNKNOWN),
        (ChallengeOutcome.EXPIRED, ErrorCode.CHALLENGE_EXPIRED),
        (ChallengeOutcome.USED, ErrorCode.CHALLENGE_USED),
        (ChallengeOutcome.WRONG_TRANSACTION, ErrorCode.CHALLENGE_WRONG_TRANSACTION),
    ],
)
def test_each_refusal_maps_to_its_stable_code(
    outcome: ChallengeOutcome, code: ErrorCode | None
) -> None:
    assert outcome.error_code is code


def test_one_challenge_from_many_threads_and_two_instances_succeeds_once(
    repos: Repositories,
    store: Store,
    other_store: Store,
    concurrently: Callable[..., list[Any]],
) -> None:
    instances = [
        CardChallenges(s, transactions=LoginTransactions(s, key=KEY)) for s in (store, other_store)
    ]
    for _ in range(3):  # a few rounds: a lucky interleaving should not hide a race
        tx = repos.transactions.create(REQUEST)
        issued = repos.challenges.issue(tx.transaction_id)
        assert issued is not None
        challenge, transaction_id = issued.challenge, tx.transaction_id
        outcomes = concurrently(
            8,
            lambda i, c=challenge, t=transaction_id: instances[i % 2].consume(c, t),
        )
        assert outcomes.count(ChallengeOutcome.OK) == 1
        assert set(outcomes) == {ChallengeOutcome.OK, ChallengeOutcome.USED}


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError, match="(?i)foreign key"), store.transaction() as session:
        session.execute(
            text(
                "INSERT INTO signin_sessions (sid, sub, account_mail, acr, amr, auth_time,"
                " created_at, last_seen_at) VALUES (:s, :u, :m, :a, :j, :n, :n, :n)"
            ),
            {
                "s": "s" * 43,
                "u": "no-such-subject",
                "m": "a@nhs.net",
                "a": "AAL1_USERPASS",
                "j": "[]",
                "n": "2025-01-01 00:00:00",
            },
        )


def test_challenges_are_kept_only_as_their_sha256(repos: Repositories, store: Store) -> None:
    tx = repos.transactions.create(REQUEST)
    issued = repos.challenges.issue(tx.transaction_id)
    assert issued is not None
    with store.session() as session:
        (row,) = session.scalars(select(CardChallenge)).all()
    assert row.challenge_hash == sha256_hex(issued.challenge)
    assert issued.challenge not in repr(row.__dict__)
    assert repos.challenges.consume(issued.challenge, tx.transaction_id).value == "ok"
