"""Helpers for the OpenID Provider tests: test clients, a PKCE browser-and-RP driver,
ID token checks, and a tiny relying party HTTP server for back-channel logout.

A plain module (the tests folder has no packages); the fixtures live in the test modules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from broker_support import DEMO_PASSWORD, csrf_token_from, install_test_signin
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet, OctKey
from werkzeug.test import TestResponse

from careid_broker.oidc.client_secrets import hash_secret

ISSUER = "http://localhost:5000"
REDIRECT = "https://rp.example.test/callback"
POST_LOGOUT = "https://rp.example.test/signed-out"
OTHER_POST_LOGOUT = "https://other.example.test/signed-out"
# A native app's loopback redirect URI (RFC 8252 §7.3), as the public client registers it.
LOOPBACK_REDIRECT = "http://127.0.0.1:8765/cb"
RP_SECRET = "rp-secret-for-the-oidc-tests-0123"
# client_secret_jwt's shared HMAC key (at least 32 bytes).
# 64 bytes: long enough for HS512 (RFC 7518 §3.2).
JWT_SECRET = "hmac-secret-for-the-oidc-tests-0123456789-long-enough-for-hs512!!"
OTHER_SECRET = "other-secret-for-the-oidc-tests-45"
ALL_SCOPES = "openid profile email nationalrbacaccess associatedorgs"
ALEX = "alex.morgan@nhs.net"
# A private_key_jwt client's key, made once per test run.
JWT_CLIENT_KEY = ECKey.generate_key("P-256", private=True, auto_kid=True)


def _fast_hash(secret: str) -> str:
    # Cheaper scrypt than production (N=2^10): the tests check behaviour, not cost.
    return hash_secret(secret, log2_n=10)


def write_test_clients(
    path: Path,
    *,
    backchannel_uri: str | None = None,
    other_backchannel: str | None = None,
    other_card_removal: str | None = None,
) -> Path:
    """A clients file with one client of each kind the conformance tests need."""
    rp_backchannel = f'backchannel_logout_uri = "{backchannel_uri}"\n' if backchannel_uri else ""
    other_bc = f'backchannel_logout_uri = "{other_backchannel}"\n' if other_backchannel else ""
    if other_card_removal is not None:
        other_bc += f'card_removal = "{other_card_removal}"\n'
    secret_file = path.with_name(path.stem + "-secretjwt.secret")
    secret_file.write_text(JWT_SECRET + "\n", encoding="utf-8")
    jwks = inline_jwks(JWT_CLIENT_KEY)
    path.write_text(
        f"""
[clients.rp]
name = "Test RP"
secret_hash = "{_fast_hash(RP_SECRET)}"
redirect_uris = ["{REDIRECT}", "https://rp.example.test/other"]
post_logout_redirect_uris = ["{POST_LOGOUT}"]
{rp_backchannel}
[clients.other]
name = "Other RP"
secret_hash = "{_fast_hash(OTHER_SECRET)}"
token_endpoint_auth_method = "client_secret_post"
redirect_uris = ["https://other.example.test/cb"]
post_logout_redirect_uris = ["{OTHER_POST_LOGOUT}"]
{other_bc}
[clients.nopkce]
name = "Confidential RP without PKCE"
secret_hash = "{_fast_hash(RP_SECRET)}"
require_pkce = false
redirect_uris = ["{REDIRECT}", "{LOOPBACK_REDIRECT}"]

[clients.public]
name = "Public RP"
token_endpoint_auth_method = "none"
redirect_uris = ["{LOOPBACK_REDIRECT}", "http://[::1]:8765/cb", "http://localhost:8765/cb"]

[clients.jwtrp]
name = "private_key_jwt RP"
id_token_signed_response_alg = "ES256"
redirect_uris = ["{REDIRECT}"]
jwks = {jwks}

[clients.secretjwt]
name = "client_secret_jwt RP"
redirect_uris = ["{REDIRECT}"]
secret_file = "{secret_file.name}"
""",
        encoding="utf-8",
    )
    return path


def inline_jwks(*keys: Key) -> str:
    """A clients.toml inline `jwks` value holding the public part of each key."""
    tables = []
    for key in keys:
        public = key.as_dict(private=False)
        members = ", ".join(f"{name} = {json.dumps(value)}" for name, value in public.items())
        tables.append(f"{{ {members} }}")
    return f"{{ keys = [ {', '.join(tables)} ] }}"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL (first value of each)."""
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic Authorization header (RFC 6749 §2.3.1 form-encodes both parts)."""
    raw = f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def client_assertion(
    client_id: str = "jwtrp",
    *,
    audience: str = f"{ISSUER}/token",
    jti: str | None = None,
    lifetime: int = 60,
    exp: float | None = None,
    hmac_secret: str | None = None,
    key: Key | None = None,
    alg: str | None = None,
) -> dict[str, str]:
    """private_key_jwt form fields signed with JWT_CLIENT_KEY (client_secret_jwt with
    `hmac_secret`: an HS256 MAC under that secret); `exp` overrides now + `lifetime`.

    `key` signs instead (its `kid` in the header, but for an OctKey), under `alg`."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti or secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + lifetime if exp is None else exp,
    }
    if key is not None:
        assert alg is not None, "an assertion signed with `key` needs its `alg`"
        header = {"alg": alg} if isinstance(key, OctKey) else {"alg": alg, "kid": key.kid}
        token = jwt.encode(header, claims, key, algorithms=[alg])
    elif hmac_secret is not None:
        token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(hmac_secret.encode()))
    else:
        token = jwt.encode({"alg": "ES256", "kid": JWT_CLIENT_KEY.kid}, claims, JWT_CLIENT_KEY)
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token,
    }


@dataclass
class Authorization:
    """The result of an authorization request as the RP receives it."""

    response: TestResponse
    verifier: str | None
    nonce: str | None
    state: str | None
    # Where a card sign-in's JSON answer sends the browser (its script navigates there).
    redirect: str | None = None

    @property
    def location(self) -> str:
        if self.redirect is not None:
            return self.redirect
        return self.response.headers.get("Location", "")

    @property
    def params(self) -> dict[str, str]:
        return query_of(self.location)

    @property
    def code(self) -> str:
        params = self.params
        assert "code" in params, f"no code in {self.location!r}"
        return params["code"]


@dataclass
class Browser:
    """A browser (its own cookies) and an RP, talking to the broker's test client."""

    client: FlaskClient
    client_id: str = "rp"
    redirect_uri: str = REDIRECT
    extra: dict[str, str] = field(default_factory=dict)

    def authorize(
        self,
        *,
        scope: str = ALL_SCOPES,
        pkce: bool = True,
        nonce: str | None = "",
        state: str | None = "",
        method: str = "GET",
        **params: str | None,
    ) -> Authorization:
        """Send the browser to /authorize (redirects not followed)."""
        verifier, challenge = pkce_pair() if pkce else (None, None)
        nonce = secrets.token_urlsafe(12) if nonce == "" else nonce
        state = secrets.token_urlsafe(12) if state == "" else state
        query: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256" if pkce else None,
        }
        query.update(params)
        clean = {k: v for k, v in query.items() if v is not None}
        if method == "POST":
            response = self.client.post("/authorize", data=clean)
            if response.status_code == 303 and response.headers["Location"].startswith(
                "/authorize?"
            ):
                # Posted without the broker's cookies: a browser follows on by GET.
                response = self.client.get(response.headers["Location"])
        else:
            response = self.client.get("/authorize", query_string=clean)
        return Authorization(response=response, verifier=verifier, nonce=nonce, state=state)

    def sign_in(self, authorization: Authorization, mail: str = ALEX) -> Authorization:
        """Follow a login hand-off: the login page, then the password form, whose answer
        goes on with the authorization (a 303 to the RP, the role page or the login)."""
        location = authorization.location
        assert location.startswith("/login?"), f"not sent to login: {location!r}"
        tx = query_of(location)["tx"]
        page = self.client.get(location)
        assert page.status_code == 200, page.get_data(as_text=True)
        posted = self.client.post(
            "/login",
            data={
                "csrf_token": csrf_token_from(page.get_data(as_text=True)),
                "tx": tx,
                "email": mail,
                "password": DEMO_PASSWORD,
            },
        )
        assert posted.status_code == 303, posted.get_data(as_text=True)
        return Authorization(
            response=posted,
            verifier=authorization.verifier,
            nonce=authorization.nonce,
            state=authorization.state,
        )

    def sign_in_by_card(self, mail: str = ALEX) -> None:
        """Open a card session (AAL3) in this browser without a card, through the test
        sign-in route `make_oidc_app` installs: for tests of what follows a card sign-in."""
        response = self.client.post("/_test/signin", data={"mail": mail, "method": "card"})
        assert response.status_code == 204, response.get_data(as_text=True)

    def signed_in_code(self, mail: str = ALEX, **params: Any) -> Authorization:
        """authorize → sign in (unless already signed in) → the redirect with a code."""
        result = self.authorize(**params)
        if result.location.startswith("/login?"):
            result = self.sign_in(result, mail)
        # 302 from /authorize (single sign-on), 303 from the sign-in form.
        assert result.response.status_code in (302, 303), result.response.get_data(as_text=True)
        assert result.location.startswith(self.redirect_uri), result.location
        return result

    def redeem(
        self,
        authorization: Authorization,
        *,
        auth: str = "basic",
        secret: str = RP_SECRET,
        **overrides: str | None,
    ) -> TestResponse:
        """The RP's code exchange at /token."""
        form: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": authorization.code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": authorization.verifier,
        }
        return self.token(form, auth=auth, secret=secret, **overrides)

    def token(
        self,
        form: Mapping[str, str | None],
        *,
        auth: str = "basic",
        secret: str = RP_SECRET,
        **overrides: str | None,
    ) -> TestResponse:
        """POST /token with the chosen client authentication."""
        data = {**form, **overrides}
        headers: dict[str, str] = {}
        if auth == "basic":
            headers = basic(self.client_id, secret)
        elif auth == "post":
            data.update(client_id=self.client_id, client_secret=secret)
        elif auth == "jwt":
            data.update(client_assertion(self.client_id))
        elif auth == "secret_jwt":
            data.update(client_assertion(self.client_id, hmac_secret=secret))
        elif auth == "none":
            data["client_id"] = self.client_id
        clean = {k: v for k, v in data.items() if v is not None}
        return self.client.post("/token", data=clean, headers=headers)


def id_token_claims(
    app_client: FlaskClient, id_token: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of an ID token checked against the published JWKS."""
    key_set = KeySet.import_key_set(app_client.get("/jwks").get_json())
    token = jwt.decode(id_token, key_set, algorithms=["RS256", "ES256"])
    return dict(token.header), dict(token.claims)


def make_oidc_app(
    app_factory: Callable[..., Flask],
    tmp_path: Path,
    *,
    backchannel_uri: str | None = None,
    other_backchannel: str | None = None,
    broker: dict[str, Any] | None = None,
    directory_slapd: Any = None,
    **oidc_settings: Any,
) -> Flask:
    """An app with the test clients (and any other [oidc] or [broker] settings), and
    the test sign-in route (`Browser.sign_in_by_card`)."""
    clients = write_test_clients(
        tmp_path / "oidc-test-clients.toml",
        backchannel_uri=backchannel_uri,
        other_backchannel=other_backchannel,
    )
    sections: dict[str, dict[str, Any]] = {"oidc": {"clients_file": str(clients), **oidc_settings}}
    if broker:
        sections["broker"] = broker
    app = app_factory(directory_slapd=directory_slapd, **sections)
    install_test_signin(app)
    return app


@dataclass
class ReceivedLogout:
    """A logout token POSTed to the test RP."""

    path: str
    form: dict[str, str]
    content_type: str


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the tests check signatures elsewhere); {} when
    it is not one."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _unverified_jti(token: str) -> str:
    """The `jti` of a JWT, unverified."""
    return str(unverified_claims(token).get("jti", ""))


class TestRelyingParty:
    """A tiny RP on 127.0.0.1 receiving back-channel logout POSTs.

    `fail_next` answers that many requests with HTTP 503 before accepting, to
    exercise the OP's retry; `slow_next` accepts that many only after `slow_seconds`
    (past the OP's timeout: it never hears the answer). Like a real RP it refuses a
    logout token whose `jti` it has seen before (400).
    """

    __test__ = False  # not a test class, despite the name

    def __init__(self) -> None:
        self.received: list[ReceivedLogout] = []
        self.fail_next = 0
        self.slow_next = 0
        self.slow_seconds = 0.0
        self.attempts = 0
        self.replays = 0
        self._seen_jtis: set[str] = set()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        rp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                jti = _unverified_jti(form.get("logout_token", ""))
                with rp._lock:
                    rp.attempts += 1
                    failing = rp.fail_next > 0
                    slow = not failing and rp.slow_next > 0
                    replay = not failing and jti in rp._seen_jtis
                    if failing:
                        rp.fail_next -= 1
                    elif replay:
                        rp.replays += 1
                    else:
                        rp._seen_jtis.add(jti)
                        if slow:
                            rp.slow_next -= 1
                        rp.received.append(
                            ReceivedLogout(
                                path=self.path,
                                form=form,
                                content_type=self.headers.get("Content-Type", ""),
                            )
                        )
                    rp._arrived.notify_all()
                if slow:
                    time.sleep(rp.slow_seconds)
                self.send_response(503 if failing else 400 if replay else 200)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/backchannel-logout"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedLogout]:
        """Block until `count` logout tokens arrived (or fail)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"only {len(self.received)} of {count} logouts arrived"
                self._arrived.wait(remaining)
            return list(self.received)

    @contextmanager
    def running(self) -> Iterator[TestRelyingParty]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
