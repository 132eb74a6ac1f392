"""`careid-agent status` against the real pcscd and vpcd's two virtual readers: reader
names as PC/SC reports them, a setting that matches both, and the exit status for it.
It only lists readers, so it never touches a card another test is using."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_service_support import ORIGIN

from careid_devkit.pcscd import Pcscd

pytestmark = pytest.mark.pcsc


def test_status_lists_every_reader_a_setting_matches(pcscd: Pcscd, tmp_path: Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(f'allowed_origins = ["{ORIGIN}"]\nreader = "Virtual PCD"\n')
    result = subprocess.run(
        [sys.executable, "-m", "careid_agent.cli", "status", "--config", str(settings), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 4, result.stderr
    check = json.loads(result.stdout)["readerCheck"]
    assert check["service"] == "running"
    assert check["readerSetting"] == "Virtual PCD"
    assert {"Virtual PCD 00 00", "Virtual PCD 00 01"} <= set(check["matching"])
    assert check["chosen"] is None
    assert "readers match the reader setting 'Virtual PCD'" in check["problem"]["detail"]
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["error"] == "no_reader" and "IT support" in error["message"]
