"""Fixtures shared by the whole suite: the real PC/SC stack here; the broker's (slapd,
the store, the app) and card sign-in's from the plugins named in `pytest_plugins`.

Fixtures start the real parts themselves and stop only what they started: a pcscd that
was already running (a developer's workstation) is reused and left alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from careid_devkit.pcscd import Pcscd, PcscdUnavailable, ensure_pcscd

# The test folders are not packages: their helper modules import by name, from the
# folders pytest's `pythonpath` setting (pyproject.toml) names. Plugins, not folder
# conftests: a session fixture defined in a folder's conftest starts
# again for every folder that loads it; these start once per run (pytest only accepts
# `pytest_plugins` here, in the top conftest).
pytest_plugins = ["broker_fixtures", "card_fixtures"]

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


def _pcscd_binary() -> str | None:
    return shutil.which("pcscd") or shutil.which("pcscd", path="/usr/sbin")


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    """A running pcscd with the vpcd virtual readers (started here if none runs)."""
    if _pcscd_binary() is None:
        pytest.skip("needs pcscd (Debian package pcscd)")
    if not VPCD_DRIVER.exists():
        pytest.skip("needs the vpcd reader driver (Debian package vsmartcard-vpcd)")
    log_path = tmp_path_factory.mktemp("pcscd") / "pcscd.log"
    try:
        daemon = ensure_pcscd(log_path=log_path)
    except PcscdUnavailable as exc:
        pytest.fail(f"pcscd is installed but could not be started: {exc}")
    yield daemon
    daemon.stop()


@pytest.fixture(autouse=True, scope="session")
def _agents_keep_their_card_sessions_in_the_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Agents started from settings (`careid-agent serve`, the demo) write their card
    sessions under the user's state folder: this run's, not the machine user's."""
    state = tmp_path_factory.mktemp("xdg-state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = before
