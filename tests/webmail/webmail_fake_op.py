"""A stand-in OpenID Provider for the webmail's tests.

The end-to-end test with the real broker lives in tests/e2e; this one is small on
purpose, so the relying party can be tested on its own while the broker is built. It
is still real: a Flask app served over HTTP on 127.0.0.1, RSA keys made with
`cryptography`, ID and logout tokens signed as JWS by joserfc (the JOSE library authlib
itself uses), discovery, JWKS, an auto-approving authorization endpoint that checks the
redirect URI and records PKCE and nonce, a token endpoint that checks the client secret,
the code and the PKCE verifier, userinfo, and an end_session endpoint.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, abort, jsonify, redirect, request
from joserfc import jws
from joserfc.jwk import RSAKey
from werkzeug.serving import BaseWSGIServer, make_server

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DROP = object()  # a claim value meaning "leave this claim out"


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, unverified (to build variants of a real token)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def rsa_key(kid: str) -> RSAKey:
    """A fresh RSA-2048 key made with cryptography, as a joserfc JWK with a kid."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return RSAKey.import_key(pem, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


@functools.cache
def spare_key(kid: str) -> RSAKey:
    """A key the OP never publishes (made once per kid: RSA generation is slow)."""
    return rsa_key(kid)


DEMO_USER: Mapping[str, Any] = {
    "sub": "3f1c9a7e-opaque-subject",
    "name": "Alex Morgan",
    "given_name": "Alex",
    "family_name": "Morgan",
    "email": "alex.morgan@nhs.net",
    "email_verified": True,
    "nhsid_useruid": "555000000001",
    "nhsid_nrbac_roles": [
        {
            "role_code": "S8000:G8000:R8000",
            "role_name": "Clinical Practitioner Access Role",
            "org_code": "RX1",
            "person_roleid": "555000000001-1",
        },
        {
            "role_code": "S8000:G8001:R8003",
            "role_name": "Health Professional Access Role",
            "org_code": "RX2",
            "person_roleid": "555000000001-2",
        },
    ],
}


@dataclass
class Behaviour:
    """Knobs a test turns to make the OP misbehave (reset for every test)."""

    acr: str = "AAL3_SMARTCARD"
    amr: tuple[str, ...] = ("sc", "pin", "hwk")
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    sign_id_token_with: RSAKey | None = None
    callback_iss: str | None = None  # None: the real issuer
    discovery_issuer: str | None = None  # None: the real issuer


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    sid: str
    acr_values: str | None


class FakeOP:
    """The stand-in OP; `start()` serves it on an ephemeral port of 127.0.0.1."""

    def __init__(self, *, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.key = rsa_key("op-key-1")
        self.extra_keys: list[RSAKey] = []  # published too (key rotation)
        self.behaviour = Behaviour()
        self.issuer = ""
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.end_session_requests: list[dict[str, str]] = []
        self.issued_id_tokens: list[str] = []
        self.issued_sids: list[str] = []
        self._grants: dict[str, _Grant] = {}
        self._access_tokens: dict[str, str] = {}
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.extra_keys.clear()
        self.authorize_requests.clear()
        self.token_requests.clear()
        self.end_session_requests.clear()
        self.issued_id_tokens.clear()
        self.issued_sids.clear()

    # -- tokens --------------------------------------------------------------------

    def sign(
        self, claims: Mapping[str, Any], *, key: RSAKey | None = None, typ: str = "JWT"
    ) -> str:
        """A compact RS256 JWS; `typ=""` leaves the typ header out."""
        key = key or self.key
        header: dict[str, Any] = {"alg": "RS256", "kid": key.kid}
        if typ:
            header["typ"] = typ
        # jws, not jwt.encode: the latter would add typ "JWT" to an untyped header.
        payload = json.dumps(dict(claims), separators=(",", ":"))
        return jws.serialize_compact(header, payload, key, algorithms=["RS256"])

    def logout_token(
        self,
        *,
        key: RSAKey | None = None,
        typ: str = "logout+jwt",
        **changes: Any,
    ) -> str:
        """A logout token (Back-Channel Logout §2.4); `changes` edit or DROP claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
            "events": {LOGOUT_EVENT: {}},
            "sub": DEMO_USER["sub"],
            "sid": self.issued_sids[-1] if self.issued_sids else "no-session",
        }
        for name, value in changes.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.sign(claims, key=key, typ=typ)

    # -- the provider --------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("webmail_fake_op")
        op = self

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Response:
            return jsonify(
                issuer=op.behaviour.discovery_issuer or op.issuer,
                authorization_endpoint=f"{op.issuer}/authorize",
                token_endpoint=f"{op.issuer}/token",
                userinfo_endpoint=f"{op.issuer}/userinfo",
                jwks_uri=f"{op.issuer}/jwks",
                end_session_endpoint=f"{op.issuer}/logout",
                response_types_supported=["code"],
                subject_types_supported=["public"],
                id_token_signing_alg_values_supported=["RS256"],
                code_challenge_methods_supported=["S256"],
                token_endpoint_auth_methods_supported=["client_secret_basic"],
                authorization_response_iss_parameter_supported=True,
                backchannel_logout_supported=True,
                backchannel_logout_session_supported=True,
                acr_values_supported=["AAL3_SMARTCARD", "AAL1_USERPASS", "AAL3_ANY"],
            )

        @app.get("/jwks")
        def jwks() -> Response:
            keys = [k.as_dict(private=False) for k in (op.key, *op.extra_keys)]
            return jsonify(keys=keys)

        @app.get("/authorize")
        def authorize() -> Any:
            args = request.args.to_dict()
            op.authorize_requests.append(args)
            if args.get("client_id") != op.client_id or args.get("redirect_uri") != op.redirect_uri:
                abort(400)  # never redirect to an unregistered URI
            if args.get("response_type") != "code" or args.get("code_challenge_method") != "S256":
                abort(400)
            if not args.get("code_challenge") or "openid" not in args.get("scope", "").split():
                abort(400)
            code = secrets.token_urlsafe(24)
            sid = secrets.token_urlsafe(12)
            op._grants[code] = _Grant(
                client_id=args["client_id"],
                redirect_uri=args["redirect_uri"],
                code_challenge=args["code_challenge"],
                nonce=args.get("nonce"),
                sid=sid,
                acr_values=args.get("acr_values"),
            )
            query = {
                "code": code,
                "state": args.get("state", ""),
                "iss": op.behaviour.callback_iss or op.issuer,
            }
            return redirect(f"{args['redirect_uri']}?{urlencode(query)}")

        @app.post("/token")
        def token() -> Any:
            form = request.form.to_dict()
            op.token_requests.append(form)
            auth = request.authorization
            if auth is None or (auth.username, auth.password) != (
                op.client_id,
                op.client_secret,
            ):
                return jsonify(error="invalid_client"), 401
            grant = op._grants.pop(form.get("code", ""), None)
            if grant is None or form.get("redirect_uri") != grant.redirect_uri:
                return jsonify(error="invalid_grant"), 400
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode("ascii")).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.code_challenge:
                return jsonify(error="invalid_grant", error_description="PKCE"), 400
            now = int(time.time())
            claims: dict[str, Any] = {
                "iss": op.issuer,
                "sub": DEMO_USER["sub"],
                "aud": op.client_id,
                "iat": now,
                "exp": now + 300,
                "auth_time": now,
                "nonce": grant.nonce,
                "sid": grant.sid,
                "acr": op.behaviour.acr,
                "amr": list(op.behaviour.amr),
                "name": DEMO_USER["name"],
                "email": DEMO_USER["email"],
                "nhsid_useruid": DEMO_USER["nhsid_useruid"],
            }
            for name, value in op.behaviour.id_token_overrides.items():
                if value is DROP:
                    claims.pop(name, None)
                else:
                    claims[name] = value
            id_token = op.sign(claims, key=op.behaviour.sign_id_token_with)
            access_token = secrets.token_urlsafe(24)
            op._access_tokens[access_token] = grant.sid
            op.issued_id_tokens.append(id_token)
            op.issued_sids.append(grant.sid)
            return jsonify(
                access_token=access_token,
                token_type="Bearer",
                expires_in=300,
                id_token=id_token,
                scope="openid profile email nationalrbacaccess associatedorgs",
            )

        @app.get("/userinfo")
        def userinfo() -> Any:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in op._access_tokens:
                return jsonify(error="invalid_token"), 401
            return jsonify(dict(DEMO_USER))

        @app.get("/logout")
        def end_session() -> Any:
            args = request.args.to_dict()
            op.end_session_requests.append(args)
            target = args.get("post_logout_redirect_uri")
            if not target:
                return "Signed out", 200
            return redirect(f"{target}?{urlencode({'state': args.get('state', '')})}")

        return app
