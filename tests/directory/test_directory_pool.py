"""The server pool's order: strategy, and failed servers resting at the back."""

from __future__ import annotations

import pytest

from careid_broker.directory import PoolStrategy
from careid_broker.directory.pool import ServerPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _order(pool: ServerPool[str]) -> list[str]:
    return [server for _, server in pool.order()]


def test_first_always_starts_at_the_first() -> None:
    pool = ServerPool(
        ["a", "b", "c"], strategy=PoolStrategy.FIRST, retry_after=30, monotonic=Clock()
    )
    assert _order(pool) == _order(pool) == ["a", "b", "c"]


def test_round_robin_rotates() -> None:
    pool = ServerPool(
        ["a", "b", "c"], strategy=PoolStrategy.ROUND_ROBIN, retry_after=30, monotonic=Clock()
    )
    assert [_order(pool)[0] for _ in range(4)] == ["a", "b", "c", "a"]
    assert _order(pool) == ["b", "c", "a"]


def test_a_failed_server_rests_at_the_back_then_returns() -> None:
    clock = Clock()
    pool = ServerPool(["a", "b", "c"], strategy=PoolStrategy.FIRST, retry_after=30, monotonic=clock)
    pool.mark_failed(0)
    assert _order(pool) == ["b", "c", "a"]  # still tried, last
    clock.now += 29
    assert _order(pool) == ["b", "c", "a"]
    clock.now += 2
    assert _order(pool) == ["a", "b", "c"]


def test_success_ends_the_rest_at_once() -> None:
    pool = ServerPool(["a", "b"], strategy=PoolStrategy.FIRST, retry_after=30, monotonic=Clock())
    pool.mark_failed(0)
    pool.mark_ok(0)
    assert _order(pool) == ["a", "b"]


def test_all_failed_keeps_every_server_in_order() -> None:
    pool = ServerPool(["a", "b"], strategy=PoolStrategy.FIRST, retry_after=30, monotonic=Clock())
    pool.mark_failed(0)
    pool.mark_failed(1)
    assert _order(pool) == ["a", "b"]


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError):
        ServerPool([], strategy=PoolStrategy.FIRST, retry_after=1, monotonic=Clock())
