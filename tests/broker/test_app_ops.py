"""/healthz, /readyz (store and directory, recovering by itself), /metrics."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_fixtures import fresh_pg_database
from broker_support import (
    DEMO_PASSWORD,
    AppFactory,
    broker_of,
    cookie_value,
    error_code_of,
    password_login,
)
from flask import Flask
from flask.testing import FlaskClient
from metrics_support import sample
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from careid_broker.metrics import BrokerMetrics, Registry
from careid_broker.store import upgrade
from careid_devkit.slapd import Slapd


def test_healthz_answers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_checks_the_store_and_the_directory(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"store": "ok", "directory": "ok", "signing_key": "ok"},
    }


def test_directory_down_refuses_sign_in_and_fails_readyz_then_recovers(
    app_factory: AppFactory, own_slapd: Slapd
) -> None:
    app = app_factory(directory_slapd=own_slapd)
    client = app.test_client()
    own_slapd.stop()

    response = password_login(client, "alex.morgan@nhs.net")
    assert response.status_code == 503
    assert error_code_of(response) == "directory_unavailable"
    assert "Try again shortly" in response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "30"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["directory"] == "directory_unavailable"
    metrics = broker_of(app).metrics
    assert metrics.directory_errors.value(operation="authenticate") == 1
    assert metrics.directory_errors.value(operation="ping") == 1
    entry = broker_of(app).repos.audit.list_recent(limit=1)[0]
    assert entry.error_code == "directory_unavailable"

    own_slapd.start()  # back, on the same port: no restart of the broker
    assert client.get("/readyz").status_code == 200
    assert password_login(client, "alex.morgan@nhs.net").status_code == 303


def test_readyz_fails_on_a_database_without_the_schema(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    app = app_factory(database={"url": f"sqlite:///{tmp_path / 'never-migrated.db'}"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["store"] == "schema_not_current"


def test_readyz_fails_when_the_database_does_not_answer(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "broker.db"
    app = app_factory(database={"url": f"sqlite:///{missing}"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["store"] == "store_unavailable"
    assert response.get_json()["checks"]["signing_key"] == "not_checked"
    # Sign-in fails closed with the store's own message.
    signin = app.test_client().get("/login")
    assert signin.status_code == 200  # the page itself needs no database
    refused = password_login(app.test_client(), "nobody@nhs.net", "x")
    assert refused.status_code == 503 and error_code_of(refused) == "store_unavailable"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own (root may mount one; skip where it may not)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full; the file, to remove to make room again."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_readyz_fails_while_the_database_disk_is_full_then_recovers(
    app_factory: AppFactory, small_disk: Path
) -> None:
    url = f"sqlite:///{small_disk / 'broker.db'}"
    upgrade(url)
    app = app_factory(database={"url": url})
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    filler = _fill(small_disk)
    # Reads still work (the schema check passes); the write a sign-in needs does not.
    full = client.get("/readyz")
    assert full.status_code == 503
    assert full.get_json()["checks"]["store"] == "not_writable"
    refused = password_login(client, "alex.morgan@nhs.net")
    assert refused.status_code == 503 and error_code_of(refused) == "store_unavailable"
    filler.unlink()
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def read_only_pg_url(pg_server: URL) -> Iterator[str]:
    """A migrated PostgreSQL database that answers reads and refuses every write, as a
    standby after a failover does, or a primary its operator made read-only."""
    with fresh_pg_database(pg_server, "careid_readonly") as url:
        upgrade(url)
        admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(
                    text(f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on')
                )
        finally:
            admin.dispose()
        yield url.render_as_string(hide_password=False)


@pytest.mark.postgres
def test_readyz_fails_on_a_postgresql_that_answers_reads_only(
    app_factory: AppFactory, read_only_pg_url: str
) -> None:
    # A replica, or a primary put read-only by its operator: reads work, writes do not.
    app = app_factory(database={"url": read_only_pg_url})
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["store"] == "not_writable"
    finally:
        broker_of(app).store.dispose()


@pytest.mark.postgres
def test_a_postgresql_that_refuses_writes_refuses_sign_in_as_store_unavailable(
    app_factory: AppFactory, read_only_pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server refuses the sign-in's writes with SQLSTATE 25006 (read_only_sql_transaction),
    # which psycopg raises as an InternalError: still the store being unavailable for now,
    # answered with a time to come back, never an unexpected error.
    app = app_factory(database={"url": read_only_pg_url})
    try:
        client = app.test_client()
        refused = password_login(client, "alex.morgan@nhs.net")
        assert refused.status_code == 503 and error_code_of(refused) == "store_unavailable"
        assert refused.headers["Retry-After"] == "30"
        assert cookie_value(client, "careid-signin") is None
        assert "unexpected error" not in caplog.text
    finally:
        broker_of(app).store.dispose()


def test_metrics_count_sign_ins_by_result_and_time_requests(
    app: Flask, client: FlaskClient
) -> None:
    password_login(client, "alex.morgan@nhs.net")
    password_login(client, "nobody@nhs.net", DEMO_PASSWORD)
    password_login(client, "sam.patel@nhs.net")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert sample(text, "careid_signins_total", method="password", result="success") == 1
    assert (
        sample(text, "careid_signins_total", method="password", result="invalid_credentials") == 1
    )
    assert sample(text, "careid_signins_total", method="password", result="aup_not_accepted") == 1
    posts = sample(
        text, "careid_http_request_duration_seconds_count", endpoint="login.submit", method="POST"
    )
    assert posts == 3
    inf = sample(
        text,
        "careid_http_request_duration_seconds_bucket",
        endpoint="login.submit",
        method="POST",
        le="+Inf",
    )
    assert inf == 3
    assert "# TYPE careid_http_request_duration_seconds histogram" in text
    assert sample(text, "careid_logout_outbox_pending") == 0


def test_metrics_are_refused_outside_the_allowed_networks(app: Flask) -> None:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "203.0.113.5"
    response = client.get("/metrics")
    assert response.status_code == 403
    assert error_code_of(response) == "ops_endpoint_forbidden"


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Real-IP", "203.0.113.5"),
        ("Forwarded", "for=203.0.113.5;proto=https"),
    ],
)
def test_metrics_through_an_untrusted_proxy_are_refused(
    app: Flask, header: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # trusted_proxies = 0 (the default) and a proxy on the same host: the peer is
    # 127.0.0.1, an allowed network, but the client behind the proxy could be anyone.
    client = app.test_client()
    assert client.get("/metrics").status_code == 200
    with caplog.at_level("WARNING", logger="careid_broker.web.ops"):
        response = client.get("/metrics", headers=[header])
    assert response.status_code == 403
    assert error_code_of(response) == "ops_endpoint_forbidden"
    (line,) = [r.getMessage() for r in caplog.records if "refused /metrics" in r.getMessage()]
    assert header[0] in line and "trusted_proxies" in line
    assert "203.0.113.5" not in line


def test_metrics_behind_a_trusted_proxy_judge_the_forwarded_client(
    app_factory: AppFactory,
) -> None:
    client = app_factory(broker={"trusted_proxies": 1}).test_client()
    scraper = client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert scraper.status_code == 200
    outsider = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
    assert outsider.status_code == 403
    assert error_code_of(outsider) == "ops_endpoint_forbidden"


def test_the_exposition_escapes_and_each_name_has_one_shape() -> None:
    registry = Registry()
    counter = registry.counter("x_total", "Things.\nSecond line", ("kind",))
    counter.inc(kind='a"b\\c')
    counter.inc(2, kind="plain")
    histogram = registry.histogram("y_seconds", "Time.", buckets=(0.1, 1.0))
    histogram.observe(0.5)
    histogram.observe(0.05)
    text = registry.render()
    assert "# HELP x_total Things.\\nSecond line" in text
    assert 'x_total{kind="a\\"b\\\\c"} 1.0' in text
    assert sample(text, "x_total", kind='a"b\\c') == 1
    assert sample(text, "x_total", kind="plain") == 2
    assert counter.value(kind="plain") == 2
    assert sample(text, "y_seconds_bucket", le="0.1") == 1
    assert sample(text, "y_seconds_bucket", le="1.0") == 2
    assert sample(text, "y_seconds_bucket", le="+Inf") == 2
    assert sample(text, "y_seconds_sum") == 0.55 and histogram.count() == 2
    # The same name returns the same metric; another shape is a mistake.
    assert registry.counter("x_total", "Things.", ("kind",)) is counter
    with pytest.raises(ValueError, match="another shape"):
        registry.counter("x_total", "Things.", ("other",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(other="x")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(kind="plain", other="x")  # after "plain" was counted, still checked
    two = registry.counter("z_total", "Pairs.", ("a", "b"))
    two.inc(a="1", b="2")
    two.inc(b="2", a="1")  # the same series, whichever order the labels come in
    two.inc(a="2", b="1")  # the same values the other way round: another series
    assert two.value(a="1", b="2") == 2 and two.value(a="2", b="1") == 1
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, kind="plain")


def test_the_op_has_a_token_counter_to_use() -> None:
    metrics = BrokerMetrics()
    metrics.tokens.inc(grant_type="authorization_code", result="success")
    assert 'grant_type="authorization_code",result="success"} 1' in metrics.render()
