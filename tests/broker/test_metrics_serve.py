"""/metrics under `careid-broker serve` with two workers: one scrape reports the sum over
both, whichever worker answers it, and a killed worker's counts are not lost."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from broker_support import TEST_SECRET_KEY, write_broker_toml
from metrics_support import sample
from prometheus_client.multiprocess import MultiProcessCollector

from careid_broker.cli import main
from careid_broker.metrics import MULTIPROC_ENV
from careid_devkit.net import free_port
from careid_devkit.slapd import Slapd

WORKERS = 2


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (gunicorn's workers)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


@dataclass
class Served:
    """A running `careid-broker serve` and where its workers keep their metrics."""

    process: subprocess.Popen[bytes]
    url: str
    tmp: Path
    log: Path

    def metrics_dir(self) -> Path:
        (directory,) = self.tmp.glob("careid-metrics-*")
        return directory

    def workers(self) -> set[int]:
        return _children(self.process.pid)

    def scrape(self) -> str:
        status, text = _get(f"{self.url}/metrics")
        assert status == 200, text
        return text

    def healthz_count(self, text: str) -> float:
        return sample(
            text, "careid_http_requests_total", endpoint="ops.healthz", method="GET", status="200"
        )


@pytest.fixture
def served(tmp_path: Path, demo_slapd: Slapd, clients_file: Path) -> Iterator[Served]:
    config = write_broker_toml(
        tmp_path / "broker.toml",
        {
            "broker": {
                "issuer": "http://localhost:5000",
                "secret_key": TEST_SECRET_KEY,
                "dev": True,
                "dev_disable_workers": True,
            },
            "logging": {"format": "json"},
            "database": {"url": "sqlite:///data/broker.db"},
            "directory": demo_slapd.directory_settings(connect_timeout=1.0, receive_timeout=1.0),
            "oidc": {"clients_file": str(clients_file)},
        },
    )
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREID_")}
    env.pop(MULTIPROC_ENV, None)
    env["TMPDIR"] = str(tmp)  # where serve makes its metrics directory, for the test to see
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "careid_broker.cli", "--config", str(config), "serve"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--threads", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Served(process=process, url=f"http://127.0.0.1:{port}", tmp=tmp, log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if _get(f"{server.url}/healthz")[0] == 200 and len(server.workers()) == WORKERS:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # The master takes its metrics directory with it.
    assert not list(tmp.glob("careid-metrics-*")), log.read_text()


def _requests(url: str, count: int) -> None:
    # Eight at once against single-threaded workers: both workers serve some.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: _get(url)[0], range(count)))
    assert statuses == [200] * count


def _share(directory: Path, pid: int) -> float:
    """What one worker's own files say it served of /healthz (its answer before)."""
    total = 0.0
    for family in MultiProcessCollector.merge([str(directory / f"counter_{pid}.db")]):
        for item in family.samples:
            if item.name == "careid_http_requests_total" and item.labels.get("endpoint") == (
                "ops.healthz"
            ):
                total += item.value
    return total


def test_one_scrape_reports_the_sum_over_the_workers_and_keeps_a_killed_workers_counts(
    served: Served,
) -> None:
    directory = served.metrics_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    before = served.healthz_count(served.scrape())
    workers = served.workers()
    # Until every worker has answered some: which worker accepts a connection is the
    # kernel's choice, and on a busy machine one may take a whole batch.
    sent = 0
    while sent < 600:
        _requests(f"{served.url}/healthz", 30)
        sent += 30
        shares = {pid: _share(directory, pid) for pid in workers}
        if all(share > 0 for share in shares.values()):
            break
    assert all(share > 0 for share in shares.values()), shares  # one worker alone: less
    for _ in range(8):
        assert served.healthz_count(served.scrape()) == before + sent
    shares = {pid: _share(directory, pid) for pid in workers}
    assert sum(shares.values()) == before + sent

    # Directory state from the workers' files: readiness checks ping the directory.
    for _ in range(4):
        assert _get(f"{served.url}/readyz")[0] == 200
    text = served.scrape()
    # Each worker that answered a readiness check keeps its service connection bound
    # for the next one (at most one each: the pings ran one after another).
    assert 1 <= sample(text, "careid_directory_connections_open") <= len(workers)
    assert sample(text, "careid_logout_outbox_pending") == 0

    victim = max(workers, key=lambda pid: shares[pid])
    assert (directory / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(served.workers() - {victim}) < WORKERS:  # gunicorn starts a new one
        assert time.monotonic() < deadline, served.log.read_text()
        time.sleep(0.1)
    # gunicorn's child_exit hook forgot its live gauges; its counters stay.
    assert not (directory / f"gauge_livesum_{victim}.db").exists()
    assert (directory / f"counter_{victim}.db").exists()
    for _ in range(8):
        assert served.healthz_count(served.scrape()) == before + sent
    more = 20
    _requests(f"{served.url}/healthz", more)
    for _ in range(8):
        assert served.healthz_count(served.scrape()) == before + sent + more
