"""Sign-ins per second against node-oidc-provider, measured in the same run by one driver.

The yardstick is `../shared/peer-bench` (outside this repository; its README says what it
measures): panva's oidc-provider with an in-memory store, driven by its `drive.py` —
N virtual users, each flow authorize → login form → code → token → userinfo with every
step checked, every flow a new browser. This script runs, one after the other on the
same machine:

1. the peer (`op.mjs`), driven by `drive.py`;
2. `careid-broker serve` on SQLite (and on PostgreSQL when a server is named), driven
   by the same `drive.py` — a password sign-in with a real LDAP bind against slapd,
   every write the broker makes durable before it answers;
3. optionally (`--card`), `bench/card_signin.py` for complete card sign-ins;
4. optionally (`--floor`), `bench/floor_op.py`: the least an OpenID Provider on the
   same stack (Flask, gunicorn with the same workers) does for the driver's flow,
   without and with durable SQLite writes — the ceiling the stack itself sets, so the
   broker's own work per flow can be told from the framework's.

and prints one JSON document: each measurement, our rate as a ratio to the peer's, the
broker's CPU per sign-in and its work per sign-in (database transactions and
statements, directory round trips, from its own /metrics), and the targets:

- password flow at least 0.5 x the peer's flows/s; card sign-in at least 0.4 x;
- p95 under 60 ms at 8 users; broker CPU per card sign-in under 5 ms.

Each target is judged per backend (`targets_met`; `meets_targets` for all). Timing is
never a pass/fail test: this prints, and exits non-zero only when a run had errors.
Loopback only; needs Node.js and npm (the peer installs itself with `npm ci`), and slapd.

Run: .venv/bin/python bench/peer_compare.py [--seconds 20] [--users 8] [--card] [--floor]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker_bench import (
    PEER_CLIENT_ID,
    PEER_CLIENT_SECRET,
    PEER_REDIRECT,
    RATE_TARGETS,
    TARGET_CARD_CPU_MS,
    TARGET_P95_MS,
    Server,
    WorkMeter,
    add_server_arguments,
    free_port,
    password_setup,
    running_broker,
    select_backends,
    server_label,
)
from careid_devkit.slapd import start_slapd

HERE = Path(__file__).resolve().parent
DEFAULT_PEER = HERE.parents[1] / "shared" / "peer-bench"
MAIL = "alex.morgan@nhs.net"
PASSWORD = "Demo-Password-1"
TARGETS = {
    **RATE_TARGETS,
    "p95_ms_below": TARGET_P95_MS,
    "card_cpu_ms_per_signin_below": TARGET_CARD_CPU_MS,
}


def _below(value: object, limit: float) -> bool:
    return isinstance(value, int | float) and value < limit


def _targets_met(entry: dict[str, Any]) -> dict[str, bool]:
    """Each target judged for one backend's measurements (an error fails its flow's)."""
    ours = entry["password_flow"]
    clean = not ours.get("errors")
    met = {
        "password_ratio": clean and entry["password_ratio"] >= TARGETS["password_ratio_at_least"],
        "password_p95": clean and _below(ours.get("p95_ms"), TARGET_P95_MS),
    }
    card = entry.get("card_signin")
    if card is not None:
        clean = not card.get("errors")
        met["card_ratio"] = clean and entry["card_ratio"] >= TARGETS["card_ratio_at_least"]
        met["card_p95"] = clean and _below(
            card.get("server_side_latency_ms", {}).get("p95"), TARGET_P95_MS
        )
        met["card_cpu"] = clean and _below(card.get("server_cpu_ms_per_signin"), TARGET_CARD_CPU_MS)
    return met


def _install_peer(peer: Path) -> None:
    # Installers report on stderr: stdout is this script's JSON and nothing else.
    if not (peer / "node_modules" / "oidc-provider" / "package.json").is_file():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=peer, check=True, stdout=sys.stderr
        )
    python = peer / ".venv" / "bin" / "python"
    probe = [str(python), "-c", "import aiohttp, jwt, cryptography"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run(
            [sys.executable, "-m", "venv", str(peer / ".venv")], check=True, stdout=sys.stderr
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
            cwd=peer,
            check=True,
            stdout=sys.stderr,
        )


def _drive(peer: Path, base_url: str, pid: int, args: argparse.Namespace, *extra: str) -> Any:
    command = [
        str(peer / ".venv" / "bin" / "python"),
        str(peer / "drive.py"),
        "--base-url",
        base_url,
        "--server-pid",
        str(pid),
        "--concurrency",
        str(args.users),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        *extra,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds * 4 + 120)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"drive.py printed nothing: {run.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if run.returncode != 0 and not result.get("errors"):
        result["errors"] = f"drive.py exit {run.returncode}: {run.stderr[-500:]}"
    return result


def _wait_for_discovery(base: str, process: subprocess.Popen[bytes], name: str) -> None:
    """Until the provider started as `process` serves its discovery document (30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            url = f"{base}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback http
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.1)


def _measure_peer(peer: Path, args: argparse.Namespace) -> Any:
    port = free_port()
    log = (Path(tempfile.gettempdir()) / f"peer-op-{port}.log").open("wb")
    process = subprocess.Popen(
        ["node", "op.mjs"],
        cwd=peer,
        env={**os.environ, "NODE_ENV": "production", "PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_discovery(base, process, "op.mjs")
        version = json.loads((peer / "node_modules" / "oidc-provider" / "package.json").read_text())
        return _drive(
            peer,
            base,
            process.pid,
            args,
            "--peer",
            "oidc-provider",
            "--peer-version",
            version["version"],
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _measure_broker(peer: Path, server: Server, args: argparse.Namespace) -> Any:
    meter = WorkMeter(server=server)
    meter.start()
    result = _drive(
        peer,
        f"http://127.0.0.1:{server.port}",
        server.pid,
        args,
        "--peer",
        "careid-broker",
        "--client-id",
        PEER_CLIENT_ID,
        "--client-secret",
        PEER_CLIENT_SECRET,
        "--redirect-uri",
        PEER_REDIRECT,
        "--username",
        MAIL,
        "--password",
        PASSWORD,
        "--username-field",
        "email",
        "--password-field",
        "password",
    )
    # Warm-up flows and drive.py's preflight are counted too: an upper bound per flow.
    flows = max(1, round(result["flows_per_s"] * (args.seconds + args.warmup)))
    result.update(meter.report(flows))
    return result


def _measure_floor(peer: Path, mode: str, folder: Path, args: argparse.Namespace) -> Any:
    """`floor_op.py` (the least an OP on this stack does) under gunicorn, driven alike."""
    port = free_port()
    key = folder / "floor-key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    database = folder / f"floor-{mode}.db"
    env = {
        **os.environ,
        "FLOOR_ISSUER": f"http://127.0.0.1:{port}",
        "FLOOR_KEY": str(key),
        "FLOOR_SECRET": secrets.token_hex(16),
        "FLOOR_MODE": mode,
        "FLOOR_DB": str(database),
    }
    if mode == "sqlite":
        subprocess.run(
            [sys.executable, "-c", f"import floor_op; floor_op.create_schema({str(database)!r})"],
            cwd=HERE,
            env=env,
            check=True,
        )
    gunicorn = [sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "floor_op:app"]
    process = subprocess.Popen(
        [*gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers)]
        + (["--threads", str(args.threads)] if args.threads > 1 else [])
        + ["--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_discovery(f"http://127.0.0.1:{port}", process, "floor_op")
        return _drive(
            peer, f"http://127.0.0.1:{port}", process.pid, args, "--peer", f"floor-{mode}"
        )
    finally:
        process.terminate()
        process.wait(timeout=15)


def _card(args: argparse.Namespace, backend: str) -> Any:
    command = [
        sys.executable,
        str(HERE / "card_signin.py"),
        "--signins",
        str(args.card_signins),
        "--users",
        str(args.users),
        "--backend",
        backend,
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
    ]
    if args.pg_url:
        command += ["--pg-url", args.pg_url]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    return json.loads(run.stdout)["results"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-bench", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--card", action="store_true", help="also run bench/card_signin.py")
    parser.add_argument("--card-signins", type=int, default=600)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/floor_op.py: the stack alone, without the broker's work",
    )
    add_server_arguments(parser)
    args = parser.parse_args()
    backends = select_backends(parser, args)
    peer = args.peer_bench.resolve()
    _install_peer(peer)

    reference = _measure_peer(peer, args)
    peer_rate = float(reference["flows_per_s"]) or 1.0
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="careid-peer-") as raw,
        start_slapd(Path(raw) / "slapd") as slapd,
    ):
        setup = password_setup(args, slapd.directory_settings())
        for backend in backends:
            with running_broker(backend, Path(raw), setup) as server:
                ours = _measure_broker(peer, server, args)
            entry: dict[str, Any] = {
                "backend": backend,
                "password_flow": ours,
                "password_ratio": round(float(ours["flows_per_s"]) / peer_rate, 3),
            }
            if args.card:
                card = _card(args, backend)
                entry["card_signin"] = card
                entry["card_ratio"] = round(card["signins_per_second"] / peer_rate, 3)
            entry["targets_met"] = _targets_met(entry)
            results.append(entry)
        floor = [
            {
                "mode": mode,
                "password_flow": (measured := _measure_floor(peer, mode, Path(raw), args)),
                "ratio": round(float(measured["flows_per_s"] or 0) / peer_rate, 3),
            }
            for mode in (("stateless", "sqlite") if args.floor else ())
        ]
    report = {
        "benchmark": "peer_compare",
        "server": server_label(args),
        "virtual_users": args.users,
        "cpu_count": os.cpu_count(),
        "peer": reference,
        "targets": TARGETS,
        "results": results,
        "meets_targets": bool(results) and all(all(r["targets_met"].values()) for r in results),
    }
    if floor:
        report["stack_floor"] = floor
    print(json.dumps(report, indent=2))
    errors = bool(reference.get("errors")) or any(
        r["password_flow"].get("errors") for r in [*results, *floor]
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
