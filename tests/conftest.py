"""Fixtures shared by the whole suite: the real PC/SC stack.

Fixtures start the real parts themselves and stop only what they started: a pcscd that
was already running (a developer's workstation) is reused and left alone.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from careid_devkit.pcscd import Pcscd, PcscdUnavailable, ensure_pcscd

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
