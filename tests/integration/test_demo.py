"""The README's first command runs `careid-devkit demo`; its headless form must work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from careid_devkit.card_profile import load_profile

from .conftest import wait_for_reader

pytestmark = pytest.mark.pcsc


def test_headless_demo_reads_and_signs_with_the_virtual_card(pcsc: object, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "careid_devkit.cli", "demo", "--headless"]
        + ["--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Card holder:         Alex Morgan" in out
    assert "Care Identity UUID:  555000000001" in out
    assert "verified   yes" in out
    # The demo left real material behind in its workspace, and took the card out.
    profile = load_profile(tmp_path / "alex.morgan.json")
    assert profile.uuid == "555000000001"
    assert (tmp_path / "pki" / "ca.json").is_file()
    wait_for_reader(False)
