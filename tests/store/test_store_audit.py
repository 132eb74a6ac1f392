"""The hash-chained audit log: one chain under concurrency, tampering detected."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from careid_broker.store import AuditLog, ChainHead, Outcome, Repositories, Store, create_store
from careid_broker.store.audit import GENESIS_HASH
from careid_protocol.errors import ErrorCode
from support.clock import FakeClock


def _fill(audit: AuditLog, clock: FakeClock, n: int = 5) -> None:
    for i in range(n):
        clock.advance(timedelta(seconds=1))
        audit.append(
            "signin.card" if i % 2 == 0 else "signin.password",
            Outcome.SUCCESS if i % 3 else Outcome.FAILURE,
            error_code=None if i % 3 else ErrorCode.WRONG_PIN,
            actor="alice@nhs.net",
            subject="Alice@NHS.net",
            organisation="RXX",
            client_address="192.0.2.10",
            relying_party="webmail",
            details={"attempt": i, "amr": ("sc", "pin")},
        )


def _sql(store: Store, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement))


def test_entries_chain_from_genesis(repos: Repositories, clock: FakeClock) -> None:
    first = repos.audit.append("registration.create", "success", subject=" Alice@NHS.net ")
    second = repos.audit.append("session.end", Outcome.SUCCESS, details={"reason": "logout"})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert first.subject == "alice@nhs.net" and first.at == clock.now
    assert repos.audit.head() == ChainHead(seq=2, hash=second.hash)


def test_entries_of_one_transaction_chain_onto_each_other(
    repos: Repositories, store: Store
) -> None:
    """The chain is locked and its head read once per transaction; each later entry of
    the same transaction chains onto the one before, and a savepoint rolled back takes
    its entries with it without the next entry chaining onto them."""
    repos.audit.append("before", "success")
    reads: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "FROM audit_log" in statement:
            reads.append(statement)

    event.listen(store.engine, "before_cursor_execute", counted)
    try:
        with store.transaction():
            first = repos.audit.append("signin.password", "success")
            second = repos.audit.append("oidc.authorize", "success")
            with pytest.raises(RuntimeError), store.transaction(savepoint=True):
                repos.audit.append("inside", "success")
                raise RuntimeError("rolled back to the savepoint")
            third = repos.audit.append("after", "success")
    finally:
        event.remove(store.engine, "before_cursor_execute", counted)
    assert (first.seq, second.seq, third.seq) == (2, 3, 4)
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    # Read once at the start, once after the savepoint; never for the second entry.
    assert len(reads) == 2
    assert repos.audit.verify_chain().ok
    assert [e.event for e in repos.audit.list_recent(limit=10)] == [
        "after",
        "oidc.authorize",
        "signin.password",
        "before",
    ]


def test_the_hash_is_sha256_of_the_canonical_json(repos: Repositories) -> None:
    entry = repos.audit.append(
        "admin.remove", "success", actor="admin@nhs.net", details={"z": 1, "a": ["é"]}
    )
    exported = entry.as_dict()
    fields = {k: v for k, v in exported.items() if k != "hash"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == entry.hash
    assert exported["at"].endswith("Z")


def test_secrets_are_refused_in_details(repos: Repositories) -> None:
    for details in ({"password": "x"}, {"outer": {"PIN": "1234"}}, {"list": [{"token": "t"}]}):
        with pytest.raises(ValueError, match="secrets"):
            repos.audit.append("signin.password", "failure", details=details)
    assert repos.audit.head() is None
    with pytest.raises(ValueError):
        repos.audit.append("signin.password", "maybe")


def test_text_that_utf8_cannot_encode_is_stored_replaced_not_a_crash(
    repos: Repositories,
) -> None:
    # A lone surrogate (a JSON \ud800 escape, a command line's undecodable byte) would
    # fail the hash's UTF-8 encoding; it is kept as U+FFFD, and the entry verifies.
    entry = repos.audit.append(
        "admin.registration.remove",
        "failure",
        actor="api:rx1\udcff",
        subject="x\ud800@nhs.net",
        details={"reason_text": "card \ud800 broken", "list": ["\udfff"], "k\ud800": 1},
    )
    assert entry.actor == "api:rx1\ufffd" and entry.subject == "x\ufffd@nhs.net"
    assert entry.details == {"reason_text": "card \ufffd broken", "list": ["\ufffd"], "k\ufffd": 1}
    [stored] = repos.audit.list_recent(limit=1)
    assert stored == entry
    assert repos.audit.verify_chain().ok


def test_text_longer_than_its_column_is_cut_not_a_database_error(
    repos: Repositories,
) -> None:
    # On PostgreSQL an over-long value is an error that would undo the audited action.
    entry = repos.audit.append(
        "e" * 100,
        "failure",
        error_code="c" * 100,
        actor="a\x00" + "a" * 400,
        subject="\u0130" * 300 + "@x.nhs.net",  # 610 characters once lower-cased
        organisation="O" * 40,
        client_address="2001:db8::" + "1" * 100,
        relying_party="r" * 300,
    )
    limits = {
        "event": 64,
        "error_code": 64,
        "actor": 320,
        "subject": 320,
        "organisation": 32,
        "client_address": 64,
        "relying_party": 255,
    }
    for name, limit in limits.items():
        value = getattr(entry, name)
        assert len(value) == limit and value.endswith("\u2026"), name
    assert entry.subject.startswith("i\u0307" * 159)
    # Nor can PostgreSQL keep a NUL in text (a NUL in a request is refused before this).
    assert entry.actor.startswith("a\ufffda")
    [stored] = repos.audit.list_recent(limit=1)
    assert stored == entry
    assert repos.audit.verify_chain().ok


def test_an_intact_chain_verifies(repos: Repositories, clock: FakeClock) -> None:
    assert repos.audit.verify_chain().ok  # empty
    _fill(repos.audit, clock)
    result = repos.audit.verify_chain()
    assert result.ok and result.checked == 5 and result.first_broken_seq is None
    assert result.head == repos.audit.head()


@pytest.mark.parametrize(
    ("statement", "seq"),
    [
        ("UPDATE audit_log SET subject = 'mallory@nhs.net' WHERE seq = 3", 3),
        ("UPDATE audit_log SET outcome = 'success' WHERE seq = 4", 4),  # was a failure
        ("UPDATE audit_log SET error_code = NULL WHERE seq = 1", 1),
        ("UPDATE audit_log SET hash = '0123456789abcdef' WHERE seq = 5", 5),
    ],
)
def test_a_changed_field_is_detected(
    repos: Repositories, store: Store, clock: FakeClock, statement: str, seq: int
) -> None:
    _fill(repos.audit, clock)
    _sql(store, statement)
    result = repos.audit.verify_chain()
    assert not result.ok and result.first_broken_seq == seq
    assert result.reason is not None and "hash" in result.reason


def test_a_changed_detail_is_detected(repos: Repositories, store: Store, clock: FakeClock) -> None:
    _fill(repos.audit, clock)
    _sql(store, """UPDATE audit_log SET details = '{"attempt": 99}' WHERE seq = 4""")
    assert repos.audit.verify_chain().first_broken_seq == 4


def _reported_broken_at_3(
    repos: Repositories, store: Store, clock: FakeClock, statement: str
) -> None:
    _fill(repos.audit, clock)
    _sql(store, statement)
    result = repos.audit.verify_chain()
    assert not result.ok and result.first_broken_seq == 3 and result.checked == 2
    assert result.reason is not None and "cannot be read" in result.reason


def test_a_garbled_entry_is_reported_broken_not_a_crash(
    repos: Repositories, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AuditLog, "BATCH", 2)  # the garbled entry in the second batch
    # A number JSON allows but the log never writes (json reads it as infinity).
    statement = """UPDATE audit_log SET details = '{"attempt": 1e999}' WHERE seq = 3"""
    _reported_broken_at_3(repos, store, clock, statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET details = 'not json' WHERE seq = 3",
        "UPDATE audit_log SET at = 'garbage' WHERE seq = 3",
        "UPDATE audit_log SET at = 12 WHERE seq = 3",
    ],
)
def test_a_value_only_sqlite_would_keep_is_reported_broken_not_a_crash(
    sqlite_template: Path,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    statement: str,
) -> None:
    """PostgreSQL's column types refuse these values; SQLite keeps whatever it is given."""
    path = tmp_path / "garbled.db"
    shutil.copyfile(sqlite_template, path)
    store = create_store(f"sqlite:///{path}", clock=clock)
    try:
        monkeypatch.setattr(AuditLog, "BATCH", 2)
        repos = Repositories.build(store, transaction_key=bytes(range(32)))
        _reported_broken_at_3(repos, store, clock, statement)
    finally:
        store.dispose()


def test_a_deleted_entry_is_detected(repos: Repositories, store: Store, clock: FakeClock) -> None:
    _fill(repos.audit, clock)
    _sql(store, "DELETE FROM audit_log WHERE seq = 2")
    result = repos.audit.verify_chain()
    assert not result.ok and result.first_broken_seq == 2
    assert result.reason is not None and "missing" in result.reason


def test_a_deleted_first_entry_is_detected(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    _fill(repos.audit, clock)
    _sql(store, "DELETE FROM audit_log WHERE seq = 1")
    assert repos.audit.verify_chain().first_broken_seq == 1


def test_reordered_entries_are_detected(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    _fill(repos.audit, clock)
    _sql(store, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    _sql(store, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    _sql(store, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    result = repos.audit.verify_chain()
    assert not result.ok and result.first_broken_seq == 2


def test_an_anchor_catches_truncation_and_a_recomputed_rewrite(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    _fill(repos.audit, clock)
    anchor = repos.audit.head()
    assert anchor is not None
    assert repos.audit.verify_chain(anchor=anchor).ok

    # Dropping the newest entry leaves a chain that is internally consistent...
    _sql(store, "DELETE FROM audit_log WHERE seq = 5")
    assert repos.audit.verify_chain().ok
    # ...but not with the head recorded elsewhere.
    truncated = repos.audit.verify_chain(anchor=anchor)
    assert not truncated.ok and truncated.first_broken_seq == 5

    # A forger who rewrites an entry and recomputes the chain after it:
    clock.advance(timedelta(seconds=1))
    _fill(repos.audit, clock, n=1)  # a new seq 5 with a different hash
    assert repos.audit.verify_chain().ok
    rewritten = repos.audit.verify_chain(anchor=anchor)
    assert not rewritten.ok and rewritten.first_broken_seq == 5


def test_export_lists_everything_or_from_a_time(
    repos: Repositories, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AuditLog, "BATCH", 2)  # exercise the keyset paging
    _fill(repos.audit, clock)
    everything = list(repos.audit.export())
    assert [e["seq"] for e in everything] == [1, 2, 3, 4, 5]
    assert everything[0]["details"] == {"attempt": 0, "amr": ["sc", "pin"]}
    cutoff = clock.now - timedelta(seconds=1)
    assert [e["seq"] for e in repos.audit.export(since=cutoff)] == [4, 5]
    assert json.loads(json.dumps(everything)) == everything


def test_trails_for_the_admin_console(repos: Repositories, clock: FakeClock) -> None:
    _fill(repos.audit, clock)
    repos.audit.append("registration.create", "success", subject="100000000001")
    repos.audit.append("signin.card", "success", subject="bob@nhs.net", organisation="RYY")

    trail = repos.audit.list_for_subject(["alice@NHS.net", "100000000001"])
    assert [e.seq for e in trail] == [6, 5, 4, 3, 2, 1]
    signins = repos.audit.list_for_subject(["alice@nhs.net"], event_prefix="signin.", limit=2)
    assert [e.seq for e in signins] == [5, 4]
    older = repos.audit.list_for_subject(["alice@nhs.net"], event_prefix="signin.", before_seq=4)
    assert [e.seq for e in older] == [3, 2, 1]
    assert repos.audit.list_for_subject(["a%"]) == []

    scoped = repos.audit.list_recent(organisations=["RYY"])
    assert [e.subject for e in scoped] == ["bob@nhs.net"]
    assert len(repos.audit.list_recent()) == 7
    assert repos.audit.list_recent(event_prefix="signin.card")[0].seq == 7
    with pytest.raises(ValueError):
        repos.audit.list_recent(limit=0)


def test_concurrent_appends_from_two_instances_form_one_chain(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    logs = [AuditLog(store), AuditLog(other_store)]

    def append_many(i: int) -> None:
        for n in range(10):
            logs[i % 2].append("signin.card", "success", details={"worker": i, "n": n})

    concurrently(6, append_many)
    result = logs[1].verify_chain()
    assert result.ok and result.checked == 60
    assert result.head is not None and result.head.seq == 60
