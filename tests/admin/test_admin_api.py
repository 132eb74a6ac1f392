"""The registrations API: tokens, scopes, organisations, pagination, removal, OpenAPI."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_support import (
    ALEX,
    KIM,
    OTHER_ORG_SECRET,
    READER_SECRET,
    UUIDS,
    WRITER_SECRET,
    api_settings,
    api_token,
    bearer,
    register,
    sign_in,
)
from broker_support import broker_of
from flask import Flask
from flask.testing import FlaskClient
from oidc_support import Browser, TestRelyingParty, basic, write_test_clients
from openapi_check import response_schema, schema_errors
from werkzeug.test import TestResponse

from careid_broker.config import BrokerConfig, BrokerConfigError
from careid_broker.errors import DirectoryUnavailableError
from careid_broker.store import EndedSession, EndReason
from support.clock import FakeClock


@pytest.fixture
def api(admin_app: Flask) -> FlaskClient:
    return admin_app.test_client()


def _conforms(api: FlaskClient, response: TestResponse, path: str, method: str) -> Any:
    document = api.get("/api/v1/openapi.json").get_json()
    body = response.get_json()
    schema = response_schema(document, path, method, response.status_code)
    assert schema_errors(body, schema, document) == []
    return body


def _error(response: TestResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == code and body["message"].endswith(".")


# Tokens.


def test_the_token_endpoint_issues_client_credentials_tokens(
    admin_app: Flask, api: FlaskClient
) -> None:
    ok = api.post(
        "/api/v1/token",
        data={"grant_type": "client_credentials"},
        headers=basic("rx1-writer", WRITER_SECRET),
    )
    body = _conforms(api, ok, "/api/v1/token", "post")
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["scope"] == "registrations:read registrations:write"
    assert ok.headers["Cache-Control"] == "no-store"
    # client_secret_post works too, and a narrower scope may be asked for.
    narrow = api.post(
        "/api/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "rx1-writer",
            "client_secret": WRITER_SECRET,
            "scope": "registrations:read",
        },
    )
    assert narrow.status_code == 200 and narrow.get_json()["scope"] == "registrations:read"
    wrong = api.post(
        "/api/v1/token",
        data={"grant_type": "client_credentials"},
        headers=basic("rx1-writer", "nope" * 8),
    )
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"
    _conforms(api, wrong, "/api/v1/token", "post")
    more = api.post(
        "/api/v1/token",
        data={"grant_type": "client_credentials", "scope": "registrations:write"},
        headers=basic("rx1-reader", READER_SECRET),
    )
    assert more.status_code == 400 and more.get_json()["error"] == "invalid_scope"
    code_grant = api.post(
        "/api/v1/token",
        data={"grant_type": "authorization_code", "code": "x"},
        headers=basic("rx1-reader", READER_SECRET),
    )
    assert (
        code_grant.status_code == 400 and code_grant.get_json()["error"] == "unsupported_grant_type"
    )
    # Only the token's digest is stored; issuing and refusing are audited, never the secret.
    entries = broker_of(admin_app).repos.audit.list_recent(event_prefix="api.token", limit=10)
    assert [e.outcome.value for e in reversed(entries)] == [
        "success",
        "success",
        "failure",
        "failure",
        "failure",
    ]
    assert all(WRITER_SECRET not in str(e.details) for e in entries)


def _token_entries(app: Flask) -> list[Any]:
    return list(reversed(broker_of(app).repos.audit.list_recent(event_prefix="api.token")))


def test_basic_credentials_that_are_not_utf8_are_invalid_client(
    admin_app: Flask, api: FlaskClient
) -> None:
    raw = base64.b64encode(b"\xff\xfe:\xfd").decode()
    response = api.post(
        "/api/v1/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {raw}"},
    )
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    _conforms(api, response, "/api/v1/token", "post")
    [entry] = _token_entries(admin_app)
    assert entry.outcome.value == "failure" and entry.actor is None
    assert entry.details["reason"] == "invalid_client"


def test_the_token_is_audited_under_the_client_that_authenticated(
    admin_app: Flask, api: FlaskClient
) -> None:
    # Basic credentials are form-encoded (RFC 6749 §2.3.1): rx1%2Dwriter is rx1-writer.
    raw = base64.b64encode(f"rx1%2Dwriter:{WRITER_SECRET}".encode()).decode()
    encoded = api.post(
        "/api/v1/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {raw}"},
    )
    assert encoded.status_code == 200
    [entry] = _token_entries(admin_app)
    assert entry.outcome.value == "success" and entry.actor == "api:rx1-writer"
    assert entry.details["client_id"] == "rx1-writer"
    assert entry.details["scope"] == "registrations:read registrations:write"


def test_credentials_sent_two_ways_are_refused_and_audited(
    admin_app: Flask, api: FlaskClient
) -> None:
    # RFC 6749 §2.3: one authentication method per request. A wrong Basic secret must
    # not fall through to another client's secret in the form.
    both = api.post(
        "/api/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "rx1-writer",
            "client_secret": WRITER_SECRET,
        },
        headers=basic("rx1-reader", "wrong-secret"),
    )
    assert both.status_code == 400 and both.get_json()["error"] == "invalid_request"
    _conforms(api, both, "/api/v1/token", "post")
    [entry] = _token_entries(admin_app)
    assert entry.outcome.value == "failure" and entry.actor is None
    assert entry.details["reason"] == "invalid_request"
    assert entry.details["client_id_claimed"] == "rx1-reader"
    assert "client_id" not in entry.details
    # Naming the client in the form beside Basic credentials is one method, still fine.
    named = api.post(
        "/api/v1/token",
        data={"grant_type": "client_credentials", "client_id": "rx1-reader"},
        headers=basic("rx1-reader", READER_SECRET),
    )
    assert named.status_code == 200
    assert _token_entries(admin_app)[-1].actor == "api:rx1-reader"
    # A leftover bearer header authenticates no client: the form's credentials are the
    # one method.
    leftover = api.post(
        "/api/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "rx1-reader",
            "client_secret": READER_SECRET,
        },
        headers=bearer("left-over"),
    )
    assert leftover.status_code == 200
    assert _token_entries(admin_app)[-1].actor == "api:rx1-reader"


def test_no_token_is_401_with_a_bearer_challenge(api: FlaskClient) -> None:
    response = api.get("/api/v1/registrations")
    _error(response, 401, "api_token_missing")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="careid-broker-api"'
    _conforms(api, response, "/api/v1/registrations", "get")
    bad = api.get("/api/v1/registrations", headers=bearer("not-a-token"))
    _error(bad, 401, "api_token_invalid")
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    basic_auth = api.get("/api/v1/registrations", headers=basic("rx1-reader", READER_SECRET))
    _error(basic_auth, 401, "api_token_invalid")


def test_tokens_expire_and_relying_party_tokens_are_not_api_tokens(
    admin_app: Flask, api: FlaskClient, clock: FakeClock
) -> None:
    token = api_token(api, "rx1-reader", READER_SECRET)
    assert api.get("/api/v1/registrations", headers=bearer(token)).status_code == 200
    # The API token is no good at the OP's userinfo (no openid scope) …
    assert api.get("/userinfo", headers=bearer(token)).status_code in (401, 403)
    # … and an RP's access token is no good here.
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    rp = Browser(alex)
    rp_token = rp.redeem(rp.signed_in_code()).get_json()["access_token"]
    _error(api.get("/api/v1/registrations", headers=bearer(rp_token)), 401, "api_token_invalid")
    clock.advance(timedelta(seconds=601))
    _error(api.get("/api/v1/registrations", headers=bearer(token)), 401, "api_token_invalid")


def test_a_token_without_the_scope_is_403(admin_app: Flask, api: FlaskClient) -> None:
    register(admin_app, ALEX)
    token = api_token(api, "rx1-reader", READER_SECRET)
    response = api.post(
        f"/api/v1/registrations/{UUIDS[ALEX]}/remove",
        json={"reason": "lost_card"},
        headers=bearer(token),
    )
    _error(response, 403, "api_scope_insufficient")
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="registrations:write"' in challenge
    _conforms(api, response, "/api/v1/registrations/{card_uuid}/remove", "post")
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None


# Organisations.


def test_another_organisations_registrations_are_404(admin_app: Flask, api: FlaskClient) -> None:
    register(admin_app, ALEX)
    register(admin_app, KIM)
    token = api_token(api, "rx1-writer", WRITER_SECRET)
    kim = api.get(f"/api/v1/registrations/{UUIDS[KIM]}", headers=bearer(token))
    _error(kim, 404, "registration_not_found")
    _conforms(api, kim, "/api/v1/registrations/{card_uuid}", "get")
    unknown = api.get("/api/v1/registrations/999999999999", headers=bearer(token))
    assert unknown.status_code == 404 and unknown.get_json()["error"] == kim.get_json()["error"]
    removal = api.post(
        f"/api/v1/registrations/{UUIDS[KIM]}/remove",
        json={"reason": "lost_card"},
        headers=bearer(token),
    )
    _error(removal, 404, "registration_not_found")
    _error(
        api.get("/api/v1/registrations?org=Y00001", headers=bearer(token)),
        404,
        "registration_not_found",
    )
    listed = api.get("/api/v1/registrations", headers=bearer(token)).get_json()
    assert [r["account_mail"] for r in listed["items"]] == [ALEX] and listed["total"] == 1
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[KIM]) is not None
    # Y00001's own client sees kim, and not alex.
    other = api_token(api, "y1-writer", OTHER_ORG_SECRET)
    theirs = api.get("/api/v1/registrations", headers=bearer(other)).get_json()
    assert [r["account_mail"] for r in theirs["items"]] == [KIM]
    _error(
        api.get(f"/api/v1/registrations/{UUIDS[ALEX]}", headers=bearer(other)),
        404,
        "registration_not_found",
    )


def test_listing_pages_through_every_registration_once(admin_app: Flask, api: FlaskClient) -> None:
    mails = [f"person{n}@nhs.net" for n in range(7)]
    for n, mail in enumerate(mails):
        register(admin_app, mail, uuid=f"5551000000{n:02d}", org="RX1")
    register(admin_app, KIM)
    token = api_token(api, "rx1-reader", READER_SECRET)
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        response = api.get(f"/api/v1/registrations?limit=3&offset={offset}", headers=bearer(token))
        body = _conforms(api, response, "/api/v1/registrations", "get")
        assert body["total"] == 7 and body["limit"] == 3 and len(body["items"]) <= 3
        seen.extend(item["account_mail"] for item in body["items"])
        offset = body["next_offset"]
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(mails)
    # Filters: one UUID, part of an address, one organisation of the client's.
    one = api.get("/api/v1/registrations?uuid=555100000003", headers=bearer(token)).get_json()
    assert [r["account_mail"] for r in one["items"]] == ["person3@nhs.net"]
    part = api.get("/api/v1/registrations?q=PERSON6", headers=bearer(token)).get_json()
    assert part["total"] == 1
    assert api.get("/api/v1/registrations?org=rx1", headers=bearer(token)).get_json()["total"] == 7
    # Superscript and full-width digits are digits to str.isdigit(), not to the API.
    for bad in (
        *("limit=0", "limit=201", "offset=-1", "limit=abc", "org=R%20X"),
        *("limit=%C2%B2", "offset=%C2%B9", "limit=%EF%BC%93"),
    ):
        response = api.get(f"/api/v1/registrations?{bad}", headers=bearer(token))
        _error(response, 400, "api_request_invalid")
        _conforms(api, response, "/api/v1/registrations", "get")


# Removal.


def test_removal_by_api_ends_sessions_and_tells_relying_parties(
    admin_app: Flask,
    api: FlaskClient,
    test_rp: TestRelyingParty,
    session_ended: list[EndedSession],
) -> None:
    register(admin_app, ALEX)
    alex = admin_app.test_client()
    sign_in(alex, ALEX)
    rp = Browser(alex)
    assert rp.redeem(rp.signed_in_code()).status_code == 200
    token = api_token(api, "rx1-writer", WRITER_SECRET)
    path = f"/api/v1/registrations/{UUIDS[ALEX]}/remove"
    refusals: list[tuple[Any, str]] = [
        ({}, "api_request_invalid"),
        ({"reason": 5}, "api_request_invalid"),
        ({"reason": "lost_card", "extra": 1}, "api_request_invalid"),
        (["lost_card"], "api_request_invalid"),
        ({"reason": "other"}, "admin_reason_required"),
        ({"reason": "because"}, "admin_reason_required"),
    ]
    for body, code in refusals:
        _error(api.post(path, json=body, headers=bearer(token)), 400, code)
    _error(
        api.post(path, data="reason=lost_card", headers=bearer(token)), 400, "api_request_invalid"
    )
    assert not session_ended
    response = api.post(path, json={"reason": "left_organisation"}, headers=bearer(token))
    body = _conforms(api, response, "/api/v1/registrations/{card_uuid}/remove", "post")
    assert body["removed"]["card_uuid"] == UUIDS[ALEX] and body["reason"] == "left_organisation"
    assert body["reason_text"] is None
    assert body["sessions_ended"] == 1 and body["relying_parties_notified"] == ["rp"]
    assert [e.reason for e in session_ended] == [EndReason.REGISTRATION_REMOVED]
    assert broker_of(admin_app).oidc.backchannel.deliver_due().delivered == 1
    assert len(test_rp.wait_for(1)) == 1
    entry = broker_of(admin_app).repos.audit.list_recent(
        event_prefix="admin.registration.remove", limit=1
    )[0]
    assert entry.actor == "api:rx1-writer" and entry.subject == ALEX
    assert entry.details["via"] == "api" and entry.details["reason"] == "left_organisation"
    # Gone now: a second removal finds nothing; alex may register again.
    _error(
        api.post(path, json={"reason": "lost_card"}, headers=bearer(token)),
        404,
        "registration_not_found",
    )
    register(admin_app, ALEX)


def test_a_reason_with_a_lone_surrogate_is_refused_not_a_crash(
    admin_app: Flask, api: FlaskClient
) -> None:
    register(admin_app, ALEX)
    token = api_token(api, "rx1-writer", WRITER_SECRET)
    body = b'{"reason": "other", "reason_text": "card \\ud800 broken"}'
    response = api.post(
        f"/api/v1/registrations/{UUIDS[ALEX]}/remove",
        data=body,
        content_type="application/json",
        headers=bearer(token),
    )
    _error(response, 400, "admin_reason_required")
    _conforms(api, response, "/api/v1/registrations/{card_uuid}/remove", "post")
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    assert broker_of(admin_app).repos.audit.verify_chain().ok


def test_refusals_are_audited_one_entry_each(admin_app: Flask, api: FlaskClient) -> None:
    register(admin_app, ALEX)
    audit = broker_of(admin_app).repos.audit
    reader = api_token(api, "rx1-reader", READER_SECRET)
    writer = api_token(api, "rx1-writer", WRITER_SECRET)
    path = f"/api/v1/registrations/{UUIDS[ALEX]}/remove"
    surrogate = b'{"reason": "other", "reason_text": "card \\ud800 broken"}'
    cases: list[tuple[dict[str, Any], int, str, str, str | None]] = [
        ({"json": {"reason": "lost_card"}, "headers": bearer(reader)},
         403, "api_scope_insufficient", "admin.denied", "api:rx1-reader"),
        ({"json": {"reason": "lost_card"}, "headers": bearer("made-up-token")},
         401, "api_token_invalid", "admin.denied", None),
        ({"json": {"reason": "lost_card"}},
         401, "api_token_missing", "admin.denied", None),
        ({"json": {"reason": "lost-card"}, "headers": bearer(writer)},
         400, "admin_reason_required", "admin.registration.remove", "api:rx1-writer"),
        ({"data": surrogate, "content_type": "application/json", "headers": bearer(writer)},
         400, "admin_reason_required", "admin.registration.remove", "api:rx1-writer"),
        ({"json": {"reason": 5}, "headers": bearer(writer)},
         400, "api_request_invalid", "admin.registration.remove", "api:rx1-writer"),
    ]  # fmt: skip
    for request, status, code, event, actor in cases:
        before = audit.head()
        assert before is not None
        _error(api.post(path, **request), status, code)
        [entry] = audit.list_recent(limit=1)
        assert entry.seq == before.seq + 1, code  # one entry a refusal, no more
        assert (entry.event, entry.outcome.value, entry.error_code) == (event, "failure", code)
        assert entry.actor == actor and entry.details["via"] == "api"
    assert broker_of(admin_app).repos.registrations.by_uuid(UUIDS[ALEX]) is not None
    # A refused token on a read is recorded the same way, with the path it was sent to.
    api.get("/api/v1/registrations", headers=bearer("made-up-token"))
    [entry] = audit.list_recent(limit=1)
    assert entry.event == "admin.denied" and entry.details["path"] == "/api/v1/registrations"
    # An authenticated client's other refusals: a listing it asked for wrongly, and an
    # address too long to be a UUID (answered as any unknown one).
    too_long = "5" * 65
    reads: list[tuple[str, str, int, str, str]] = [
        ("get", "/api/v1/registrations?limit=0", 400, "api_request_invalid",
         "admin.registrations.list"),
        ("get", "/api/v1/registrations?org=RX1%20X", 400, "api_request_invalid",
         "admin.registrations.list"),
        ("get", f"/api/v1/registrations/{too_long}", 404, "registration_not_found",
         "admin.registration.view"),
        ("post", f"/api/v1/registrations/{too_long}/check-revocation", 404,
         "registration_not_found", "admin.registration.view"),
    ]  # fmt: skip
    for method, url, status, code, event in reads:
        token = reader if method == "get" else writer
        before = audit.head()
        assert before is not None
        _error(getattr(api, method)(url, headers=bearer(token)), status, code)
        [entry] = audit.list_recent(limit=1)
        assert entry.seq == before.seq + 1, url
        assert (entry.event, entry.outcome.value, entry.error_code) == (event, "failure", code)
        assert entry.details["via"] == "api", url
    before = audit.head()
    assert before is not None
    response = api.post(f"/api/v1/registrations/{too_long}/remove", json={"reason": "lost_card"},
                        headers=bearer(writer))  # fmt: skip
    _error(response, 404, "registration_not_found")
    [entry] = audit.list_recent(limit=1)
    assert entry.seq == before.seq + 1
    assert (entry.event, entry.error_code) == (
        "admin.registration.remove",
        "registration_not_found",
    )


# The OpenAPI document is kept true.


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_api_route_is_in_the_openapi_document_and_nothing_else(
    admin_app: Flask, api: FlaskClient
) -> None:
    document = api.get("/api/v1/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    routes: dict[str, set[str]] = {}
    for rule in admin_app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
            routes.setdefault(_flask_path(rule.rule), set()).update(methods)
    documented = {path: set(ops) for path, ops in document["paths"].items()}
    assert routes == documented
    token_url = document["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert token_url["tokenUrl"] == "http://localhost:5000/api/v1/token"
    scopes = set(token_url["scopes"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for requirement in operation.get("security", document["security"]):
                assert set(requirement.get("oauth2", [])) <= scopes, (path, method)
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None:
                    # Every $ref resolves (schema_errors fails on a dangling one).
                    schema_errors({}, schema, document)
                assert status.isdigit(), (path, method, status)


def test_a_directory_that_is_down_is_503_not_a_guess(admin_app: Flask, api: FlaskClient) -> None:
    register(admin_app, KIM)
    switch = broker_of(admin_app).directory
    real = switch.real

    class Down:
        current_aup_version = real.current_aup_version

        def find_account(self, mail: str) -> None:
            raise DirectoryUnavailableError(detail="test: directory stopped")

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    token = api_token(api, "rx1-reader", READER_SECRET)
    switch.use(Down())
    # Kim's registration is Y00001's; whether kim now works at RX1 needs the directory.
    response = api.get(f"/api/v1/registrations/{UUIDS[KIM]}", headers=bearer(token))
    _error(response, 503, "directory_unavailable")
    assert response.headers["Retry-After"] == "30"
    _conforms(api, response, "/api/v1/registrations/{card_uuid}", "get")


def test_an_api_client_may_not_take_a_relying_partys_id(
    broker_settings: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    clients = write_test_clients(tmp_path / "clients.toml")
    api_section = api_settings()
    api_section["clients"]["rp"] = api_section["clients"].pop("rx1-reader")
    settings = {**broker_settings, "oidc": {"clients_file": str(clients)}, "api": api_section}
    with pytest.raises(BrokerConfigError) as caught:
        BrokerConfig.from_mapping(settings, base_dir=tmp_path, env={})
    assert caught.value.problems == (
        "api.clients.rp: is also a relying party's client id in the clients file",
    )
    # Environment overrides reach [admin] and [api] like every other section.
    api_section["clients"]["rx1-reader"] = api_section["clients"].pop("rp")
    config = BrokerConfig.from_mapping(
        settings,
        base_dir=tmp_path,
        env={"CAREID_ADMIN_RIGHTS_CACHE_SECONDS": "60", "CAREID_API_TOKEN_LIFETIME_SECONDS": "120"},
    )
    assert config.admin.rights_cache == timedelta(seconds=60)
    assert config.api.token_lifetime == timedelta(seconds=120)
    assert set(config.api.clients) == {"rx1-reader", "rx1-writer", "y1-writer"}


def test_a_card_check_is_scoped_and_answers_in_the_documented_shape(
    admin_app: Flask, api: FlaskClient
) -> None:
    # This app has no [pki]: the answer says so, in the documented shape. (The checks
    # themselves, good and revoked, are tested with a real PKI in tests/card.)
    register(admin_app, ALEX)
    register(admin_app, KIM)
    reader = api_token(api, "rx1-reader", READER_SECRET)
    path = f"/api/v1/registrations/{UUIDS[ALEX]}/check-revocation"
    _error(api.post(path, headers=bearer(reader)), 403, "api_scope_insufficient")
    writer = api_token(api, "rx1-writer", WRITER_SECRET)
    response = api.post(path, headers=bearer(writer))
    body = _conforms(api, response, "/api/v1/registrations/{card_uuid}/check-revocation", "post")
    assert body == {
        "card_uuid": UUIDS[ALEX],
        "result": "not_configured",
        "code": None,
        "sessions_ended": 0,
    }
    kim = api.post(f"/api/v1/registrations/{UUIDS[KIM]}/check-revocation", headers=bearer(writer))
    _error(kim, 404, "registration_not_found")
    entry = broker_of(admin_app).repos.audit.list_recent(event_prefix="admin.revocation", limit=1)[
        0
    ]
    assert entry.actor == "api:rx1-writer" and entry.details["result"] == "not_configured"
