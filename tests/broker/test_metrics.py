"""/metrics in one process: every name, type and label set as before, and the metrics
added for the logout backlog and the directory connections."""

from __future__ import annotations

from datetime import timedelta

from broker_support import broker_of
from flask import Flask
from flask.testing import FlaskClient
from metrics_support import sample, samples, types

from careid_broker.directory import DirectoryConfig, LdapDirectory
from careid_broker.metrics import BrokerMetrics, Registry
from careid_devkit.slapd import Slapd
from support.clock import FakeClock

#: What dashboards and alerts were built on: never renamed, retyped or relabelled.
KEPT = {
    "careid_signins_total": ("counter", ("method", "result")),
    "careid_http_requests_total": ("counter", ("endpoint", "method", "status")),
    "careid_http_request_duration_seconds": ("histogram", ("endpoint", "method")),
    "careid_directory_errors_total": ("counter", ("operation",)),
    "careid_csrf_refusals_total": ("counter", ()),
    "careid_token_requests_total": ("counter", ("grant_type", "result")),
    "careid_logout_outbox_pending": ("gauge", ()),
    "careid_card_removals_total": ("counter", ()),
    "careid_card_lock_not_armed_total": ("counter", ()),
    "careid_card_registrations_total": ("counter", ()),
}
ADDED = {
    "careid_logout_outbox_oldest_age_seconds": ("gauge", ()),
    "careid_revocation_cache_lookups_total": ("counter", ("source", "result")),
    "careid_revocation_fetch_failures_total": ("counter", ("source",)),
    "careid_directory_connections_open": ("gauge", ()),
    "careid_directory_server_up": ("gauge", ("server",)),
    "careid_retention_purged_total": ("counter", ("kind",)),
    # The work each sign-in costs (the benchmarks print it per sign-in).
    "careid_directory_requests_total": ("counter", ("operation",)),
    "careid_store_transactions_total": ("counter", ("kind",)),
    "careid_store_statements_total": ("counter", ()),
}


def test_every_metric_keeps_its_name_type_and_labels(app: Flask, client: FlaskClient) -> None:
    registered = broker_of(app).metrics.registry.names()
    expected = KEPT | ADDED
    assert registered == {name: labels for name, (_, labels) in expected.items()}
    declared = types(client.get("/metrics").get_data(as_text=True))
    for name, (kind, _) in expected.items():
        assert declared.get(name) == kind, name
    # Nothing else: no per-process `_created` series, no process or platform metrics.
    assert set(declared) == set(expected)


def test_the_logout_backlog_is_read_from_the_store_when_scraped(
    app: Flask, client: FlaskClient, clock: FakeClock
) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "careid_logout_outbox_pending") == 0
    assert sample(text, "careid_logout_outbox_oldest_age_seconds") == 0
    outbox = broker_of(app).repos.outbox
    outbox.enqueue(sid="s1", sub="alex", client_ids=["rp", "other-rp"])
    clock.advance(timedelta(seconds=90))
    outbox.enqueue(sid="s2", sub="sam", client_ids=["rp"])
    clock.advance(timedelta(seconds=10))
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "careid_logout_outbox_pending") == 3
    assert sample(text, "careid_logout_outbox_oldest_age_seconds") == 100
    first = outbox.claim_due(10)
    for delivery in first:
        outbox.mark_delivered(delivery)
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "careid_logout_outbox_pending") == 0
    assert sample(text, "careid_logout_outbox_oldest_age_seconds") == 0


def test_the_directory_pool_reports_connections_and_servers(own_slapd: Slapd) -> None:
    metrics = BrokerMetrics(Registry())
    settings = own_slapd.directory_settings(connect_timeout=1.0, receive_timeout=1.0)
    directory = LdapDirectory(
        DirectoryConfig.from_mapping(settings), observer=metrics.directory_pool
    )
    assert directory.ping()
    text = metrics.render()
    assert sample(text, "careid_directory_server_up", server=own_slapd.url) == 1
    # Kept open, bound, for the next operation.
    assert sample(text, "careid_directory_connections_open") == 1
    assert directory.ping()
    assert sample(metrics.render(), "careid_directory_connections_open") == 1  # reused

    own_slapd.stop()
    assert not directory.ping()
    text = metrics.render()
    assert sample(text, "careid_directory_server_up", server=own_slapd.url) == 0
    assert sample(text, "careid_directory_connections_open") == 0  # the dead one closed

    own_slapd.start()
    assert directory.ping()
    assert sample(metrics.render(), "careid_directory_server_up", server=own_slapd.url) == 1


def test_made_up_methods_share_one_series(client: FlaskClient) -> None:
    for method in ("BREW", "XYZZYPLUGH", "PROPFIND"):
        client.open("/healthz", method=method)
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    methods = {
        dict(labels)["method"]
        for (name, labels) in samples(text)
        if name == "careid_http_requests_total"
    }
    assert methods == {"GET", "other"}
    other = sample(
        text, "careid_http_requests_total", endpoint="none", method="other", status="405"
    )
    assert other == 3
