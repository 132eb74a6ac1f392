"""The least an OpenID Provider on the broker's stack does for `drive.py`'s flow: a yardstick.

Not the broker and not a product: a Flask app under the same gunicorn settings that
answers the peer bench's five requests (authorize → login page → password POST →
token → userinfo) with every check the driver makes passing, and nothing else — no
directory, no audit trail, no throttle, no sessions, no CSRF, no templates. What it
measures is the ceiling the stack itself puts on the broker's rate on this machine:
`bench/peer_compare.py --floor` runs it beside node-oidc-provider and the broker, with
the same driver, so the broker's own work per flow can be told apart from Flask's,
Werkzeug's and gunicorn's.

Two modes (`FLOOR_MODE`):

- `stateless`: the pending request, the code and the access token are HMAC-sealed
  values the app hands out and checks; nothing is stored (gunicorn's workers share no
  memory, so this is the only storage-free way the flow works across them).
- `sqlite`: they are rows in a SQLite file in WAL mode with `synchronous=FULL`, as the
  broker keeps its own: three write transactions per flow (authorize; the login that
  uses the request up and stores the code; the token request that uses the code up and
  stores the token), each committed before the answer, and two reads.

Settings from the environment: FLOOR_ISSUER, FLOOR_KEY (a PEM P-256 key), FLOOR_SECRET,
FLOOR_MODE, FLOOR_DB. The client is the peer bench's (`bench` / `bench-secret`,
redirect `http://127.0.0.1:9/cb`), the user `bench` / `bench`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import ECKey

if __name__ == "__main__":  # a gunicorn app (`peer_compare.py --floor` serves it), not a command
    print(__doc__)
    raise SystemExit(0)

ISSUER = os.environ["FLOOR_ISSUER"]
MODE = os.environ.get("FLOOR_MODE", "stateless")
DATABASE = os.environ.get("FLOOR_DB", "")
SECRET = os.environ["FLOOR_SECRET"].encode()
KEY = ECKey.import_key(open(os.environ["FLOOR_KEY"]).read())  # noqa: SIM115, PTH123
CLIENT, CLIENT_SECRET, REDIRECT = "bench", "bench-secret", "http://127.0.0.1:9/cb"
BASIC = "Basic " + base64.b64encode(f"{CLIENT}:{CLIENT_SECRET}".encode()).decode()
TTL_SECONDS = 300

app = Flask(__name__)
_local = threading.local()


def create_schema(path: str) -> None:
    """The SQLite file the `sqlite` mode keeps its rows in."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)")


def _db() -> sqlite3.Connection:
    connection: sqlite3.Connection | None = getattr(_local, "connection", None)
    if connection is None:
        connection = sqlite3.connect(DATABASE, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=15000")
        _local.connection = connection
    return connection


def _seal(value: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return body + "." + hmac.new(SECRET, body.encode(), "sha256").hexdigest()


def _unseal(token: str) -> dict[str, Any] | None:
    body, _, mac = token.rpartition(".")
    if not hmac.compare_digest(mac, hmac.new(SECRET, body.encode(), "sha256").hexdigest()):
        return None
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return value if value.get("exp", 0) > time.time() else None


def _new(kind: str, value: dict[str, Any]) -> str:
    """A handle for `value`: sealed, or a random key to its stored row."""
    value = {**value, "exp": time.time() + TTL_SECONDS}
    if MODE == "stateless":
        return _seal(value)
    handle = secrets.token_urlsafe(24)
    connection = _db()
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO kv VALUES (?, ?)", (f"{kind}:{handle}", json.dumps(value)))
    connection.execute("COMMIT")
    return handle


def _read(kind: str, handle: str) -> dict[str, Any] | None:
    if MODE == "stateless":
        return _unseal(handle)
    row = _db().execute("SELECT v FROM kv WHERE k = ?", (f"{kind}:{handle}",)).fetchone()
    value: dict[str, Any] | None = json.loads(row[0]) if row else None
    return value if value and value["exp"] > time.time() else None


def _use_up(kind: str, handle: str, then: tuple[str, dict[str, Any]]) -> tuple[Any, str] | None:
    """Use a handle up and make the next one in the same transaction."""
    if MODE == "stateless":
        value = _unseal(handle)
        return (value, _new(*then)) if value else None
    connection = _db()
    connection.execute("BEGIN IMMEDIATE")
    try:
        row = connection.execute(
            "DELETE FROM kv WHERE k = ? RETURNING v", (f"{kind}:{handle}",)
        ).fetchone()
        value = json.loads(row[0]) if row else None
        if not value or value["exp"] <= time.time():
            connection.execute("ROLLBACK")
            return None
        fresh = secrets.token_urlsafe(24)
        stored = {**then[1], "exp": time.time() + TTL_SECONDS}
        connection.execute(
            "INSERT INTO kv VALUES (?, ?)", (f"{then[0]}:{fresh}", json.dumps(stored))
        )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return value, fresh


@app.get("/.well-known/openid-configuration")
def discovery() -> Response:
    return jsonify(
        issuer=ISSUER,
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        userinfo_endpoint=f"{ISSUER}/userinfo",
        jwks_uri=f"{ISSUER}/jwks",
        authorization_response_iss_parameter_supported=True,
    )


@app.get("/jwks")
def jwks() -> Response:
    public = {**KEY.as_dict(private=False), "kid": "floor", "use": "sig", "alg": "ES256"}
    return jsonify(keys=[public])


@app.get("/authorize")
def authorize() -> Any:
    args = request.args
    if (
        args.get("client_id") != CLIENT
        or args.get("redirect_uri") != REDIRECT
        or args.get("response_type") != "code"
        or args.get("code_challenge_method") != "S256"
        or not args.get("code_challenge")
    ):
        return Response("invalid authorization request", 400)
    keep = ("state", "nonce", "code_challenge", "scope")
    tx = _new("tx", {name: args.get(name) for name in keep})
    return redirect(f"/login?tx={tx}", 303)


@app.get("/login")
def login_page() -> Response:
    tx = request.args.get("tx", "")
    if _read("tx", tx) is None:
        return Response("sign-in expired", 400)
    form = (
        '<!doctype html><form method="post" action="/login">'
        f'<input type="hidden" name="tx" value="{tx}"><input name="username">'
        '<input type="password" name="password"><button>Sign in</button></form>'
    )
    return Response(form, content_type="text/html; charset=utf-8")


@app.post("/login")
def login() -> Any:
    form = request.form
    if form.get("username") != "bench" or not hmac.compare_digest(
        form.get("password", ""), "bench"
    ):
        return Response('<form method="post"><input type="password" name="password"></form>', 401)
    pending = _read("tx", form.get("tx", ""))
    if pending is None:
        return Response("sign-in expired", 400)
    used = _use_up("tx", form.get("tx", ""), ("code", pending))
    if used is None:
        return Response("sign-in expired", 400)
    request_values, code = used
    state = request_values.get("state") or ""
    return redirect(f"{REDIRECT}?code={code}&state={state}&iss={ISSUER}", 303)


@app.post("/token")
def token() -> Any:
    if not hmac.compare_digest(request.headers.get("Authorization", ""), BASIC):
        return jsonify(error="invalid_client"), 401
    form = request.form
    if form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != REDIRECT:
        return jsonify(error="invalid_request"), 400
    used = _use_up("code", form.get("code", ""), ("at", {"sub": "bench"}))
    if used is None:
        return jsonify(error="invalid_grant"), 400
    granted, access_token = used
    verifier = form.get("code_verifier", "").encode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
    if not hmac.compare_digest(challenge, granted.get("code_challenge") or ""):
        return jsonify(error="invalid_grant"), 400
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench", "aud": CLIENT, "iat": now, "exp": now + 300}
    id_token = jwt.encode(
        {"alg": "ES256", "kid": "floor"}, {**claims, "nonce": granted["nonce"]}, KEY
    )
    return jsonify(
        access_token=access_token, token_type="Bearer", id_token=id_token, expires_in=300
    )


@app.get("/userinfo")
def userinfo() -> Any:
    header = request.headers.get("Authorization", "")
    found = _read("at", header[7:]) if header.startswith("Bearer ") else None
    if found is None:
        return jsonify(error="invalid_token"), 401
    return jsonify(sub=found["sub"], email="bench@example.org", name="Bench User")
