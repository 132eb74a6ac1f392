"""The webmail's parts on their own: session store, jti cache, claims, config, command."""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from webmail_fake_op import FakeOP
from webmail_support import make_config, session_state, sign_in

from careid_devkit.codes import DevkitCode
from careid_devkit.webmail import WebmailConfig, create_webmail_app
from careid_devkit.webmail.commands import build_config, make_webmail_server, register
from careid_devkit.webmail.config import CLIENT_SECRET_ENV, DEMO_CLIENT_SECRET
from careid_devkit.webmail.errors import SignInError, WebmailError
from careid_devkit.webmail.identity import acr_in_words, user_from_claims
from careid_devkit.webmail.logout_token import JtiCache
from careid_devkit.webmail.sessions import SessionState, SessionStore, SignedInUser
from support.clock import FakeClock

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _user(sub: str = "sub-1", op_sid: str | None = "op-sid-1") -> SignedInUser:
    return user_from_claims({"sub": sub, "sid": op_sid, "name": "A"}, id_token="t", now=T0)


def _store(clock: FakeClock, **kw: int) -> SessionStore:
    return SessionStore(
        clock=clock,
        idle_timeout=timedelta(minutes=30),
        absolute_timeout=timedelta(hours=10),
        max_sessions=kw.get("max_sessions", 100),
    )


def test_sessions_expire_when_idle_and_at_the_absolute_limit() -> None:
    clock = FakeClock(T0)
    store = _store(clock)
    sid = store.create()
    store.sign_in(sid, _user())
    clock.now += timedelta(minutes=29)
    assert store.state(sid) is SessionState.SIGNED_IN
    assert store.load(sid) == {}  # touches: idle time starts again
    clock.now += timedelta(minutes=29)
    assert store.user(sid) is not None
    assert store.load(sid, touch=False) == {}  # a passive look does not keep it alive
    clock.now += timedelta(minutes=2)
    assert store.state(sid) is SessionState.SIGNED_OUT
    assert len(store) == 0

    busy = store.create()
    for _ in range(25):
        clock.now += timedelta(minutes=25)
        store.load(busy)
    assert store.load(busy) is None  # past 10 hours however busy


def test_rotation_moves_the_session_and_kills_the_old_id() -> None:
    store = _store(FakeClock(T0))
    old = store.create()
    store.save(old, {"k": "v"})
    new = store.rotate(old)
    assert new != old
    assert store.load(old) is None
    assert store.load(new) == {"k": "v"}
    assert store.rotate("never-existed") not in (old, new)


def test_store_stays_bounded() -> None:
    clock = FakeClock(T0)
    store = _store(clock, max_sessions=3)
    first = store.create()
    for _ in range(5):
        clock.now += timedelta(seconds=1)
        store.create()
    assert len(store) == 3
    assert store.load(first) is None  # the least recently used made way


def test_op_logout_matches_sid_and_sub() -> None:
    store = _store(FakeClock(T0))
    a, b, c = store.create(), store.create(), store.create()
    store.sign_in(a, _user("sub-1", "op-1"))
    store.sign_in(b, _user("sub-1", "op-2"))
    store.sign_in(c, _user("sub-2", "op-3"))
    assert store.end_for_op_session(op_sid="op-1", sub="sub-2") == 0  # sid of another sub
    assert store.end_for_op_session(op_sid=None, sub=None) == 0
    assert store.end_for_op_session(op_sid="op-1", sub=None) == 1
    assert [store.state(s) for s in (a, b, c)] == [
        SessionState.ENDED,
        SessionState.SIGNED_IN,
        SessionState.SIGNED_IN,
    ]
    assert store.end_for_op_session(op_sid=None, sub="sub-1") == 1
    assert store.state(b) is SessionState.ENDED
    assert store.sign_out(c) is not None
    assert store.state(c) is SessionState.SIGNED_OUT


def test_jti_cache_refuses_a_replay_until_the_entry_expires() -> None:
    clock = FakeClock(T0)
    cache = JtiCache(clock=clock, max_entries=2)
    until = T0 + timedelta(minutes=6)
    assert cache.first_use("iss", "j1", keep_until=until)
    assert not cache.first_use("iss", "j1", keep_until=until)
    assert cache.first_use("other-iss", "j1", keep_until=until)
    assert cache.first_use("iss", "j2", keep_until=until)  # full: the oldest goes
    clock.now = until + timedelta(seconds=1)
    assert cache.first_use("iss", "j2", keep_until=until + timedelta(minutes=6))


def test_claims_become_a_user() -> None:
    claims = {
        "sub": "s",
        "sid": "op",
        "given_name": "Sam",
        "family_name": "Patel",
        "acr": "AAL1_USERPASS",
        "amr": ["pwd"],
        "nhsid_nrbac_roles": [
            {"role_code": "R1", "role_name": "Nurse", "org_code": "RX1", "person_roleid": "9"},
            "not a role",
        ],
        "selected_roleid": "9",
    }
    user = user_from_claims(claims, id_token="secret-token", now=T0)
    assert user.name == "Sam Patel"
    assert user.selected_roleid == "9"
    assert user_from_claims({"sub": "s"}, id_token="t", now=T0).selected_roleid is None
    assert user.amr == ("pwd",)
    assert [r.role_name for r in user.roles] == ["Nurse"]
    assert "secret-token" not in repr(user)
    with pytest.raises(SignInError):
        user_from_claims({"name": "no sub"}, id_token="t", now=T0)
    assert acr_in_words("AAL3_SMARTCARD") == "Smartcard (AAL3)"
    assert acr_in_words("AAL1_USERPASS") == "Password (AAL1)"
    assert acr_in_words("urn:x") == "Other (urn:x)"


@pytest.mark.parametrize(
    "bad",
    [
        {"issuer": "ftp://op"},
        {"issuer": "http://op/"},
        {"base_url": "http://localhost:5001/?x=1"},
        {"client_secret": ""},
        {"scopes": ("profile",)},
    ],
)
def test_config_refuses_unusable_values(bad: dict[str, object]) -> None:
    settings: dict[str, object] = {"client_secret": "s", **bad}
    with pytest.raises(WebmailError) as caught:
        WebmailConfig(**settings)  # type: ignore[arg-type]
    assert caught.value.code is DevkitCode.DEVKIT_INVALID_ARGUMENT


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["webmail", *argv])


def test_command_line_and_environment_build_the_config() -> None:
    config, demo = build_config(_parse([]), environ={})
    assert demo is True
    assert config.client_secret == DEMO_CLIENT_SECRET
    assert config.issuer == "http://localhost:5000"
    assert config.redirect_uri == "http://localhost:5001/callback"
    assert config.post_logout_redirect_uri == "http://localhost:5001/"

    config, demo = build_config(
        _parse(["--port", "5101", "--issuer", "https://broker.test/", "--client-id", "mail"]),
        environ={CLIENT_SECRET_ENV: "from-env"},
    )
    assert (demo, config.client_secret, config.client_id) == (False, "from-env", "mail")
    assert config.issuer == "https://broker.test"
    assert config.base_url == "http://localhost:5101"

    config, demo = build_config(
        _parse(["--client-secret", "from-flag"]), environ={CLIENT_SECRET_ENV: "from-env"}
    )
    assert config.client_secret == "from-flag"
    assert _parse([]).func.__name__ == "run_webmail"


def test_served_over_http_the_log_never_shows_a_query(
    op: FakeOP, caplog: pytest.LogCaptureFixture
) -> None:
    """Real HTTP end to end for the back-channel: the OP posts as the broker does."""
    app = create_webmail_app(make_config(op))
    browser = app.test_client()
    sign_in(browser)
    server = make_webmail_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            posted = requests.post(
                f"{base}/backchannel-logout", data={"logout_token": op.logout_token()}, timeout=5
            )
            assert posted.status_code == 200
            assert posted.headers["Cache-Control"] == "no-store"
            callback = requests.get(f"{base}/callback?code=SECRETCODE&state=s", timeout=5)
            assert callback.status_code == 400
    finally:
        server.shutdown()
        server.server_close()
    assert session_state(browser) == "ended"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "/backchannel-logout" in logged
    assert "SECRETCODE" not in logged
    assert "logout_token" not in logged
