"""The whole chain, once per test session, and a fresh Chromium context per test.

    webmail → broker → agent → pcscd → vpcd → virtual card (the card tray)
              └─ slapd (demo directory), OCSP/CRL responder

Started by the demo's own orchestration (`DemoChain`), on the documented ports where
they are free and other free ports where not. Skips, naming the Debian package, when
Chromium, pcscd, vpcd or slapd is missing. Between tests: the reader is emptied, every
card's PIN counter restored, every registration removed, the agent's PIN and the
directory put back.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import delete

from careid_broker.store import Repositories, Store, create_store
from careid_broker.store.models import Registration
from careid_devkit.demo import DEMO_PIN, ChainSettings, DemoChain, DemoPorts, free_port
from careid_devkit.pcscd import Pcscd
from careid_devkit.slapd import DEBIAN_SBIN

from .e2e_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CIS2_RP_CLIENT_ID,
    PAGE_TIMEOUT_MS,
    ExtraPorts,
    remove,
)

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            for name in ("browser", "pcsc", "slapd"):
                item.add_marker(getattr(pytest.mark, name))


@pytest.fixture(scope="package")
def playwright_api() -> Any:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Chromium (Debian package chromium)")
    return pytest.importorskip("playwright.sync_api", reason="needs Playwright (dev extra)")


@pytest.fixture(scope="package")
def extra_ports() -> ExtraPorts:
    return ExtraPorts(crl_broker=free_port(), other_site=free_port(), cis2_rp=free_port())


@pytest.fixture(scope="package")
def cis2_rp_key() -> ECKey:
    """The CIS2-configured RP's private_key_jwt key (its public half is in clients.toml)."""
    return ECKey.generate_key("P-256", private=True, auto_kid=True)


def _cis2_client(key: ECKey, port: int, folder: Path) -> dict[str, Any]:
    """clients.toml for the CIS2-configured RP: private_key_jwt only, as CIS2 demands."""
    jwks = folder / "cis2-rp-jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8")
    return {
        "name": "Clinical system (CIS2-configured test RP)",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": str(jwks),
        "redirect_uris": [f"http://localhost:{port}/callback"],
        "scopes": [
            "openid",
            "profile",
            "nhsperson",
            "nationalrbacaccess",
            "associatedorgs",
            "selectedrole",
        ],
    }


@pytest.fixture(scope="package")
def chain(
    pcscd: Pcscd,
    playwright_api: Any,
    extra_ports: ExtraPorts,
    cis2_rp_key: ECKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DemoChain]:
    """Every part running (session-wide; tests reset what they change)."""
    if not VPCD_DRIVER.exists():
        pytest.skip("needs the vpcd reader driver (Debian package vsmartcard-vpcd)")
    if not (os.access(DEBIAN_SBIN / "slapd", os.X_OK)):
        pytest.skip("needs OpenLDAP slapd (Debian package slapd)")
    # The agent also serves a second broker (CRL revocation mode) and "another site":
    # that is how a token for another origin is obtained for real.
    rp_folder = tmp_path_factory.mktemp("cis2-rp")
    settings = ChainSettings(
        extra_clients={
            CIS2_RP_CLIENT_ID: _cis2_client(cis2_rp_key, extra_ports.cis2_rp, rp_folder)
        },
        workspace=tmp_path_factory.mktemp("demo"),
        ports=DemoPorts.defaults_or_free(),
        headless=True,
        extra_agent_origins=(
            f"http://localhost:{extra_ports.crl_broker}",
            f"http://localhost:{extra_ports.other_site}",
        ),
    )
    with DemoChain(settings) as demo:
        yield demo


class _OtherSite(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"<!doctype html><title>Another site</title><p>Another site."
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet."""


@pytest.fixture(scope="package")
def other_site(chain: DemoChain, extra_ports: ExtraPorts) -> Iterator[str]:
    """A plain page on a loopback origin the agent allows, standing for another web site."""
    port = extra_ports.other_site
    server = ThreadingHTTPServer(("127.0.0.1", port), _OtherSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="package")
def store(chain: DemoChain) -> Iterator[Store]:
    """The broker's own database, opened beside it (the tests' back door)."""
    opened = create_store(chain.database_url)
    yield opened
    opened.dispose()


@pytest.fixture(scope="package")
def repos(store: Store) -> Repositories:
    return Repositories.build(store)


@pytest.fixture(autouse=True)
def fresh_state(chain: DemoChain, store: Store) -> Iterator[None]:
    """Each test starts with an empty reader, fresh PIN counters, no registrations."""
    _reset(chain, store)
    yield
    failure = chain.failure()
    assert failure is None, str(failure)
    remove(chain)


def _reset(chain: DemoChain, store: Store) -> None:
    remove(chain)
    for card in chain.tray.cards:
        profile = card.load()
        if profile.pin_retries_left != profile.pin_retries_max:
            card.save(
                profile.with_counters(
                    pin_retries_left=profile.pin_retries_max,
                    puk_retries_left=profile.puk_retries_max,
                )
            )
    with store.transaction() as session:
        session.execute(delete(Registration))
    if chain.agent_pin != DEMO_PIN:
        chain.restart_agent()
    if chain.slapd is not None and not chain.slapd.running:
        chain.slapd.start()
    elif chain.slapd is not None:
        chain.slapd.resume()


@pytest.fixture(scope="package")
def chromium(playwright_api: Any, chain: DemoChain) -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Any]:
    """Open pages in fresh browser contexts (own cookies: another person, another tab)."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = chromium.new_context()
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Any) -> Any:
    """A page in a fresh browser context."""
    return new_page()
