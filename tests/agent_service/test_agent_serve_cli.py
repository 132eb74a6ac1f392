"""`careid-agent serve` as a real process: settings file plus flags, the development
banner, answering, and a clean stop on SIGTERM; and refusals to start."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_service_support import ORIGIN, READER, call

from careid_agent.cli import CliEnv, main

CONFIG = f"""
allowed_origins = ["https://other.example.nhs.uk"]
pin_policy = "once-per-insertion"
reader = "{READER}"
log_level = "warning"
"""


def _start(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    settings = tmp_path / "agent.toml"
    settings.write_text(CONFIG)
    env = dict(os.environ, CAREID_AGENT_PIN="246810")
    return subprocess.Popen(
        [sys.executable, "-m", "careid_agent.cli", "serve", "--config", str(settings), *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _port(process: subprocess.Popen[str]) -> tuple[int, str]:
    assert process.stderr is not None
    seen = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
        if "listening on http://127.0.0.1:" in line:
            return int(line.rsplit(":", 1)[1]), seen
    process.kill()
    raise AssertionError(f"the agent did not start:\n{seen}")


def test_serve_runs_answers_and_stops_cleanly(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "agent.log"
    process = _start(
        tmp_path,
        "--dev",
        "--port",
        "0",
        "--allow-origin",
        ORIGIN,
        "--pin-provider",
        "env",
        "--log-file",
        str(log_file),
    )
    try:
        port, banner = _port(process)
        assert "DEVELOPMENT MODE" in banner
        status = call(port, "GET", "/v1/status")
        assert status.status == 200
        body = status.json
        # The file's settings hold where no flag overrides them.
        assert body["pinPolicy"] == "once-per-insertion"
        assert {r["name"] for r in body["readers"]} <= {READER}
        # --allow-origin replaced the file's list.
        other = call(port, "GET", "/v1/status", origin="https://other.example.nhs.uk")
        assert other.json["error"] == "origin_not_allowed"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert process.stderr is not None
        process.stderr.close()
    assert "development mode: not for clinical use" in log_file.read_text()


@pytest.mark.parametrize(
    ("flags", "detail"),
    [
        (["--pin-provider", "env"], "needs --dev"),
        (["--allow-origin", "http://localhost:5000"], "need --dev"),
        (["--port", "80"], "port must be between 1024 and 65535"),
    ],
)
def test_serve_refuses_bad_settings(tmp_path: Path, flags: list[str], detail: str) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(CONFIG)
    err = io.StringIO()
    env = CliEnv(stdout=io.StringIO(), stderr=err)
    assert main(["serve", "--config", str(settings), *flags], env=env) == 1
    assert err.getvalue().startswith("careid-agent: agent_config_invalid: ")
    assert detail in err.getvalue()


def test_serve_refuses_a_port_already_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = tmp_path / "agent.toml"
        settings.write_text(CONFIG)
        err = io.StringIO()
        env = CliEnv(stdout=io.StringIO(), stderr=err)
        code = main(["serve", "--config", str(settings), "--port", str(port)], env=env)
    assert code == 1
    assert "Is another careid-agent already running?" in err.getvalue()
