"""Fixtures for certificate validation: a development PKI per test module, served over
real HTTP on 127.0.0.1 by the devkit's OCSP/CRL server, and a clock they share.

    def test_x(env: PkiEnv): cert = env.issue(); env.validator().validate(cert)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pki_validation_support import START, PkiEnv, served_pki


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PkiEnv]:
    """One PKI whose certificates point at its own running server."""
    with served_pki(tmp_path_factory.mktemp("pki-validation")) as env:
        yield env


@pytest.fixture(autouse=True)
def _reset_clock(request: pytest.FixtureRequest) -> None:
    """Every test starts at START, whatever the previous one did to the shared clock."""
    if "env" in request.fixturenames:
        request.getfixturevalue("env").clock.now = START
