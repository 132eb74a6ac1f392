"""`[retention]` settings, and the broker running the purge in each process with them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from broker_support import REPO, AppFactory, broker_of
from sqlalchemy import select

from careid_broker.config import BrokerConfig, BrokerConfigError, RetentionSettings, load_config
from careid_broker.store import RetentionPolicy
from careid_broker.store.models import UsedJti
from support.clock import FakeClock


def config_with(
    settings: dict[str, dict[str, Any]],
    tmp_path: Path,
    env: dict[str, str] | None = None,
    **retention: Any,
) -> BrokerConfig:
    merged = {**settings, "retention": retention}
    return BrokerConfig.from_mapping(merged, base_dir=tmp_path, env=env or {})


def test_the_defaults_are_the_documented_ones(
    broker_settings: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    settings = config_with(broker_settings, tmp_path).retention
    assert settings.enabled
    assert settings.interval == timedelta(minutes=10)
    assert settings.policy == RetentionPolicy()
    assert settings.policy.ended_sessions == timedelta(days=30)
    assert settings.policy.expired_tokens == timedelta(days=7)
    assert settings.policy.expired_codes == timedelta(days=1)
    assert settings.policy.batch_size == 500


def test_the_shipped_file_documents_the_defaults() -> None:
    assert load_config(REPO / "config" / "broker.toml", env={}).retention == RetentionSettings()


def test_settings_from_the_file_and_the_environment(
    broker_settings: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    settings = config_with(
        broker_settings,
        tmp_path,
        env={"CAREID_RETENTION_BATCH_SIZE": "100", "CAREID_RETENTION_ENABLED": "false"},
        interval_seconds=300,
        ended_sessions_days=90,
        expired_tokens_days=0,
        throttle_counters_days=2,
    ).retention
    assert not settings.enabled
    assert settings.interval == timedelta(minutes=5)
    assert settings.policy.batch_size == 100
    assert settings.policy.ended_sessions == timedelta(days=90)
    assert settings.policy.expired_tokens == timedelta(0)
    assert settings.policy.throttle_counters == timedelta(days=2)


def test_every_bad_setting_is_named(
    broker_settings: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(BrokerConfigError) as caught:
        config_with(
            broker_settings,
            tmp_path,
            throttle_counters_days=0,
            batch_size=1,
            interval_seconds=5,
            audit_days=30,
        )
    named = {p.split(":")[0] for p in caught.value.problems}
    assert {
        "retention.throttle_counters_days",  # shorter than a throttle window
        "retention.batch_size",
        "retention.interval_seconds",
        "retention.audit_days",  # the audit log is never purged: no such setting
    } <= named


def test_each_process_runs_the_purge_unless_turned_off(app_factory: AppFactory) -> None:
    running = broker_of(app_factory(broker={"dev_disable_workers": False}))
    assert running.retention is not None and running.retention.running

    assert broker_of(app_factory()).retention is None  # dev_disable_workers, the test default
    off = app_factory(broker={"dev_disable_workers": False}, retention={"enabled": False})
    assert broker_of(off).retention is None

    running.stop()
    assert not running.retention.running


def test_the_broker_purges_with_its_settings_and_counts_it(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    broker = broker_of(
        app_factory(broker={"dev_disable_workers": False}, retention={"used_jtis_days": 2})
    )
    assert broker.retention is not None
    repos = broker.repos
    repos.jtis.use_once(scope="c", jti="j", expires_at=clock.now)
    retention = broker.retention.retention
    assert retention.policy.used_jtis == timedelta(days=2)

    clock.advance(timedelta(days=1))
    retention.run_pass()
    assert broker.metrics.retention.rows.value(kind="used_jtis") == 0

    clock.advance(timedelta(days=1, seconds=1))
    retention.run_pass()
    with repos.store.session() as session:
        assert session.scalars(select(UsedJti)).all() == []
    assert broker.metrics.retention.rows.value(kind="used_jtis") == 1
    assert 'careid_retention_purged_total{kind="used_jtis"} 1.0' in broker.metrics.render()
    (entry,) = repos.audit.list_recent(event_prefix="retention.purge")
    assert entry.details == {"purged": {"used_jtis": 1}, "complete": True}
