"""The independent relying parties in tests/rp (Node's openid-client), for the tests
that run them: Node itself, and the package installed from its lock file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

RP_DIR = Path(__file__).resolve().parents[1] / "rp"


def node_command() -> list[str]:
    """How to run Node.js 18+ (skips, naming the Debian packages, without it)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs Node.js 18+ and npm (Debian packages nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.skip(f"needs Node.js 18+ for openid-client (found {version.stdout.strip()})")
    # Node 18 has Web Crypto only behind a flag; later versions have it by default.
    return [node, "--experimental-global-webcrypto"] if major == 18 else [node]


def install_openid_client() -> None:
    """`npm ci` from the lock file, unless exactly that release is installed already."""
    lock = json.loads((RP_DIR / "package-lock.json").read_text(encoding="utf-8"))
    wanted = lock["packages"]["node_modules/openid-client"]["version"]
    marker = RP_DIR / "node_modules" / "openid-client" / "package.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8"))["version"] == wanted:
        return
    npm = shutil.which("npm")
    assert npm is not None
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=RP_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"npm ci failed: {result.stdout}{result.stderr}"
