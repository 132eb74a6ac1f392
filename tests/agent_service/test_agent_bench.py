"""`bench/agent_latency.py` still runs and reports what it promises (a few runs only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from agent_service_support import CardSlot

from careid_devkit.card_profile import KeyAlgorithm

pytestmark = pytest.mark.pcsc

BENCH = Path(__file__).resolve().parents[2] / "bench" / "agent_latency.py"


def test_the_latency_benchmark_reports_its_split_and_target(slot: CardSlot) -> None:
    slot.remove()  # the benchmark brings its own card to reader 00 01
    spec = importlib.util.spec_from_file_location("agent_latency", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(5, KeyAlgorithm.P256)
    assert result["runs"] == 5 and result["apdus_per_signin"] == 3.0
    for part in ("total_ms", "card_io_ms", "pcsc_session_ms", "agent_own_ms"):
        assert set(result[part]) == {"median", "p95", "min", "max"}
        assert 0 <= result[part]["min"] <= result[part]["median"] <= result[part]["max"]
    assert result["target"] == {"agent_own_ms_p95_below": 5.0}
    assert result["total_ms"]["median"] >= result["card_io_ms"]["median"]
