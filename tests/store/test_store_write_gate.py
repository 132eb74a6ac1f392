"""SQLite's writers queue at the store's write gate: threads and worker processes take
turns without sleeping in SQLite's busy handler, and a gate held too long fails closed."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from careid_broker.store import StoreUnavailableError, create_store
from careid_broker.store.engine import WriteGate


def test_threads_of_one_process_write_in_turn_and_lose_nothing(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'gate.db'}")
    with store.transaction() as session:
        session.execute(text("CREATE TABLE hits (n INTEGER)"))
    inside = 0
    most_inside = 0
    lock = threading.Lock()

    def writer() -> None:
        nonlocal inside, most_inside
        for _ in range(50):
            with store.transaction() as session:
                with lock:
                    inside += 1
                    most_inside = max(most_inside, inside)
                session.execute(text("INSERT INTO hits VALUES (1)"))
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.session() as session:
        assert session.execute(text("SELECT count(*) FROM hits")).scalar_one() == 300
    assert most_inside == 1  # one write transaction at a time


def _write_many(path: str, count: int) -> None:
    store = create_store(f"sqlite:///{path}")
    for _ in range(count):
        with store.transaction() as session:
            session.execute(text("INSERT INTO hits VALUES (1)"))
    store.dispose()


def test_processes_take_turns_through_the_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "gate.db"
    store = create_store(f"sqlite:///{path}")
    with store.transaction() as session:
        session.execute(text("CREATE TABLE hits (n INTEGER)"))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(path), 100)) for _ in range(3)]
    for worker in workers:
        worker.start()
    _write_many(str(path), 100)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    with store.session() as session:
        assert session.execute(text("SELECT count(*) FROM hits")).scalar_one() == 400
    assert (tmp_path / "gate.db.write-lock").exists()


def test_a_gate_held_past_the_busy_timeout_makes_the_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "gate.db"
    holder = WriteGate(str(path) + ".write-lock", timeout=timedelta(seconds=5))
    waiter = create_store(f"sqlite:///{path}", busy_timeout=timedelta(milliseconds=300))
    with holder.held():  # another process's gate on the same file
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as refused:
            with waiter.transaction() as session:
                session.execute(text("SELECT 1"))
        assert 0.25 <= time.monotonic() - started < 2.0
    assert "write gate" in (refused.value.detail or "")
    # Released: the next write goes through at once.
    with waiter.transaction() as session:
        session.execute(text("SELECT 1"))


def test_after_a_fork_the_child_uses_its_own_lock_and_descriptor(tmp_path: Path) -> None:
    gate = WriteGate(str(tmp_path / "x.write-lock"), timeout=timedelta(milliseconds=300))
    with gate.held():
        pass
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child() -> None:
        # The parent holds the gate at the fork: its thread lock is taken in the child's
        # copy, and an inherited descriptor would share the parent's flock and let the
        # child in. The child must start afresh and wait on the file (timing out here).
        own = WriteGate(str(tmp_path / "x.write-lock"), timeout=timedelta(milliseconds=200))
        try:
            with own.held():
                queue.put("entered")
        except StoreUnavailableError:
            queue.put("waited")
        try:
            with gate.held():
                queue.put("entered")
        except StoreUnavailableError:
            queue.put("waited")

    with gate.held():
        process = context.Process(target=child)
        process.start()
        results = [queue.get(timeout=20), queue.get(timeout=20)]
        process.join(timeout=20)
    assert results == ["waited", "waited"]
    # And once the parent lets go, a child gets in (the thread lock was not stuck).
    context.Process(target=_enter, args=(gate, queue)).start()
    assert queue.get(timeout=20) == "entered"


def _enter(gate: WriteGate, queue: Any) -> None:
    with gate.held():
        queue.put("entered")
