"""A real broker process (`careid-broker serve`) and a browser over real HTTP.

A plain module (the tests folder has no packages), used by test_oidc_http.py.
"""

from __future__ import annotations

import http.cookiejar
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker_support import DEMO_PASSWORD, csrf_token_from
from oidc_support import ALEX, ALL_SCOPES, REDIRECT, RP_SECRET, basic, pkce_pair, query_of


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProcess:
    """`careid-broker serve` (gunicorn) on a loopback port, stopped by `stop()`."""

    def __init__(self, config: Path, *, port: int, workers: int = 2, log: Path) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = log
        self._log = log.open("wb")
        self._process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("careid-broker")),
                "--config",
                str(config),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                "4",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"broker exited {self._process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"broker did not answer /healthz: {self.log_tail()}")

    def log_tail(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `careid-broker --config CONFIG ARGS…`, failing the test on a non-zero exit."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("careid-broker")), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class HttpResult:
    """A response read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def json(self) -> Any:
        return json.loads(self.body)


class HttpBrowser:
    """A browser over real HTTP: its own cookie jar, redirects not followed."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(
        self,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResult:
        data = urllib.parse.urlencode(dict(form)).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers=dict(headers or {}))  # noqa: S310 - loopback
        try:
            with self._opener.open(request, timeout=30) as response:  # noqa: S310 - loopback
                return HttpResult(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return HttpResult(exc.code, dict(exc.headers), exc.read())

    def sign_in_for_code(
        self, base: str, *, client_id: str = "rp", mail: str = ALEX, redirect_uri: str = REDIRECT
    ) -> tuple[str, str]:
        """authorize → sign-in form (unless signed in) → the RP; (code, code_verifier)."""
        verifier, challenge = pkce_pair()
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": ALL_SCOPES,
                "state": "http-state",
                "nonce": "http-nonce",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        authorized = self.request(f"{base}/authorize?{query}")
        assert authorized.status == 302, authorized.body[:500]
        if authorized.location.startswith(redirect_uri):  # already signed in: SSO
            return query_of(authorized.location)["code"], verifier
        login_url = urllib.parse.urljoin(base, authorized.location)
        page = self.request(login_url)
        assert page.status == 200, page.body[:500]
        posted = self.request(
            f"{base}/login",
            form={
                "csrf_token": csrf_token_from(page.body.decode()),
                "tx": query_of(login_url)["tx"],
                "email": mail,
                "password": DEMO_PASSWORD,
            },
        )
        assert posted.status == 303 and posted.location.startswith(redirect_uri), posted.body
        params = query_of(posted.location)
        assert params["state"] == "http-state"
        return params["code"], verifier


def redeem_over_http(
    base: str, code: str, verifier: str, *, client_id: str = "rp", secret: str = RP_SECRET
) -> HttpResult:
    """The RP's back-end code exchange, over HTTP."""
    return HttpBrowser().request(
        f"{base}/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        headers=basic(client_id, secret),
    )
