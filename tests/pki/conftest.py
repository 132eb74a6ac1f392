"""Fixtures for certificate validation: a development PKI per test module, served over
real HTTP on 127.0.0.1 by the devkit's OCSP/CRL server, and a clock they share.

    def test_x(env: PkiEnv): cert = env.issue(); env.validator().validate(cert)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pki_validation_support import NOW, START, PkiEnv

from careid_devkit.ocsp_responder import start_pki_server
from careid_devkit.pki import init_pki
from support.clock import FakeClock


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PkiEnv]:
    """One PKI whose certificates point at its own running server."""
    work = tmp_path_factory.mktemp("pki-validation")
    directory = work / "pki"
    clock = FakeClock(START)
    # The certificates must carry the server's URL, which is known only once it listens
    # on its free port: start it on a first PKI, then remake the PKI with that base URL.
    # The responder rereads the folder whenever ca.json changes, so it serves the new one.
    init_pki(directory, now=NOW)
    with start_pki_server(directory, "127.0.0.1", 0, clock=clock) as server:
        pki = init_pki(directory, base_url=server.url, now=NOW, force=True)
        yield PkiEnv(pki=pki, server=server, clock=clock, work=work)


@pytest.fixture(autouse=True)
def _reset_clock(request: pytest.FixtureRequest) -> None:
    """Every test starts at START, whatever the previous one did to the shared clock."""
    if "env" in request.fixturenames:
        request.getfixturevalue("env").clock.now = START
