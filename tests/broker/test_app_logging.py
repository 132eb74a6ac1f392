"""JSON log lines carry a request id and never a password, cookie, token or code."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from broker_support import (
    DEMO_PASSWORD,
    cookie_value,
    login_form,
    password_login,
    rp_transaction,
)
from flask import Flask
from flask.testing import FlaskClient
from gunicorn.config import Config  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]
from oidc_support import ALEX, Browser, make_oidc_app

from careid_broker.config import LogFormat, LoggingSettings
from careid_broker.logging_setup import (
    REDACTED,
    JsonFormatter,
    configure_logging,
    formatter_for,
    gunicorn_logconfig,
)
from careid_broker.server import BrokerLogger, gunicorn_options
from careid_broker.web.context import broker_of


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged (DEBUG and up) during the test, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_a_sign_in_logs_json_with_request_ids_and_no_secrets(
    app: Flask, client: FlaskClient, log_lines: io.StringIO
) -> None:
    tx = rp_transaction(app, client)
    csrf = login_form(client, tx)
    password_login(client, "alex.morgan@nhs.net", "Wrong-Password-9", tx=tx)
    response = password_login(client, "alex.morgan@nhs.net", tx=tx)
    assert response.status_code == 303 and "code=" in response.headers["Location"]
    client.get("/nowhere")  # an error page too

    text = log_lines.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    request_lines = [line for line in lines if line["logger"] == "careid_broker.access"]
    assert len(request_lines) >= 6
    for line in request_lines:
        assert len(line["request_id"]) >= 8
        assert {"time", "level", "message", "method", "path", "status"} <= set(line)
        assert "?" not in line["path"]  # query strings carry transaction ids
    audit_lines = [line for line in lines if line["message"].startswith("audit ")]
    assert audit_lines and all("request_id" in line for line in audit_lines)

    secrets = {
        "password": DEMO_PASSWORD,
        "wrong password": "Wrong-Password-9",
        "sign-in cookie": cookie_value(client, "careid-signin"),
        "browser cookie": cookie_value(client, "careid-browser"),
        "csrf token": csrf,
        "transaction id": tx,
        "authorization code": parse_qs(urlsplit(response.headers["Location"]).query)["code"][0],
    }
    for name, value in secrets.items():
        assert value and value not in text, f"the {name} appears in the log"


def test_a_request_id_from_the_proxy_is_kept_and_returned(
    client: FlaskClient, log_lines: io.StringIO
) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "proxy-abc-12345678"})
    assert response.headers["X-Request-ID"] == "proxy-abc-12345678"
    assert '"request_id": "proxy-abc-12345678"' in log_lines.getvalue()
    hostile = client.get("/healthz", headers={"X-Request-ID": 'bad"} {id}'})
    assert hostile.headers["X-Request-ID"] != 'bad"} {id}'


def test_extra_fields_named_like_secrets_are_blanked() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    record.password = "hunter2"
    record.refresh_token = "rt"
    record.code = "auth-code"
    record.error_code = "invalid_credentials"
    line = json.loads(JsonFormatter().format(record))
    assert line["password"] == line["refresh_token"] == line["code"] == REDACTED
    assert line["error_code"] == "invalid_credentials"


def test_text_format_is_available_for_a_terminal() -> None:
    formatter = formatter_for(LoggingSettings(level="INFO", format=LogFormat.TEXT))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert formatter.format(record).endswith("INFO t [-] hello there")


def test_gunicorn_builds_no_access_line_of_its_own(app: Flask) -> None:
    # The broker writes its own access line (path only). gunicorn's would carry query
    # strings, and gunicorn builds its fields for every request whenever a logging
    # config is given, even one that drops the line: its access log is switched off.
    cfg = Config()
    for key, value in gunicorn_options(broker_of(app).config).items():
        cfg.set(key, value)
    logger = cfg.logger_class(cfg)
    assert isinstance(logger, BrokerLogger) and not logger.access_log_enabled

    def atoms(*_args: object) -> dict[str, str]:
        raise AssertionError("gunicorn built an access line")

    logger.atoms = atoms
    logger.access(None, None, {}, None)
    assert Logger(cfg).access_log_enabled  # what the stock logger would have done


def test_the_access_line_names_the_route_not_the_address_typed(
    client: FlaskClient, log_lines: io.StringIO
) -> None:
    # Unauthenticated, each is refused; the mail address and the Care Identity UUID in
    # the path are personal data all the same.
    client.get("/admin/users/alex.morgan@nhs.example")
    client.get("/api/v1/registrations/555000000001")
    client.get("/nowhere/jo.bloggs@nhs.example/555000000002")
    text = log_lines.getvalue()
    for personal in ("alex.morgan", "555000000001", "jo.bloggs", "555000000002"):
        assert personal not in text
    access = [
        json.loads(line)
        for line in text.splitlines()
        if json.loads(line)["logger"] == "careid_broker.access"
    ]
    assert [line["path"] for line in access] == [
        "/admin/users/<mail>",
        "/api/v1/registrations/<card_uuid>",
        "<unmatched>",
    ]
    assert access[0]["message"] == f"GET /admin/users/<mail> {access[0]['status']}"


@pytest.mark.parametrize("how", ["configure_logging", "gunicorn"])
def test_at_debug_no_issued_token_is_logged(
    app_factory: Callable[..., Flask],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    """`level = "DEBUG"` is what an operator turns on to follow a sign-in: the tokens
    issued (authlib logs each one it issues at DEBUG) must not be in it."""
    oidc_app = make_oidc_app(app_factory, tmp_path)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    saved_levels = {name: logging.getLogger(name).level for name in ("authlib", "werkzeug")}
    settings = LoggingSettings(level="DEBUG", format=LogFormat.JSON)
    try:
        if how == "gunicorn":
            logging.config.dictConfig(gunicorn_logconfig(settings))
        else:
            configure_logging(settings)
        browser = Browser(oidc_app.test_client())
        tokens = browser.redeem(browser.signed_in_code(ALEX)).get_json()
        refreshed = browser.token(
            {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        ).get_json()
        assert logging.getLogger("careid_broker.oidc").isEnabledFor(logging.DEBUG)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
    logged = capsys.readouterr().err
    assert '"logger": "careid_broker.access"' in logged  # the log was captured
    issued = [(name, value) for name, value in tokens.items() if name.endswith("_token")]
    issued += [(name, value) for name, value in refreshed.items() if name.endswith("_token")]
    assert {name for name, _ in issued} >= {"access_token", "refresh_token", "id_token"}
    for name, value in issued:
        assert value not in logged, f"an issued {name} is in the log"
