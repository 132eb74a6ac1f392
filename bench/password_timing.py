"""Does a wrong password answer as fast for a real address as for an unknown one?

A stranger who can time the answer to POST /login learns which addresses are real if an
unknown address skips work a real one does. Making the same LDAP round trips for both
was not enough: slapd does more for a real entry (its password policy records the
failure), and real addresses were answered about 0.8 ms slower (8.4 ms against 7.6 ms
median). A refusal is now held to `[signin] failure_answer_ms` (50 ms) after the
directory was asked; run with `--floor-ms 0` to see the raw difference. This bench asks a real
`careid-broker serve` (gunicorn, against a real slapd with the demo's lockout policy)
for wrong-password answers, alternating a real account and a fresh unknown address in
each round (the order swapped every round), and times only the POST.

After each round the real account signs in with its right password, which clears both
the broker's per-account count and the directory's lockout count: the bench measures
the answer to a wrong password, never a throttle's or a lockout's.

Target: the medians differ by less than 0.5 ms, or the 95% bootstrap confidence
interval of their difference contains zero (the difference is not measurable).

Run: .venv/bin/python bench/password_timing.py [--rounds 400]
Prints JSON. Loopback only; needs slapd (Debian package slapd). SQLite backend.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker_bench import BrokerSetup, Browser, emit, running_broker
from careid_devkit.slapd import start_slapd

REAL = "alex.morgan@nhs.net"
PASSWORD = "Demo-Password-1"  # noqa: S105 - the demo seed's, public
WRONG = "Not-The-Password-9"  # noqa: S105 - deliberately wrong
TARGET_MEDIAN_DIFFERENCE_MS = 0.5
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _post_login(browser: Browser, mail: str, password: str) -> tuple[int, float]:
    """GET the form (untimed), then POST it; the POST's status and seconds."""
    status, _, page = browser.request("GET", "/login")
    match = _CSRF.search(page.decode())
    assert status == 200 and match, f"login page {status}"
    form = {"csrf_token": match.group(1), "email": mail, "password": password}
    started = time.perf_counter()
    status, _, _ = browser.request("POST", "/login", form=form)
    return status, time.perf_counter() - started


def _median_difference_ci(
    real: list[float], unknown: list[float], *, draws: int = 2000
) -> tuple[float, float]:
    """95% bootstrap interval (ms) of median(real) - median(unknown)."""
    rng = random.Random(20261206)  # a fixed seed: the interval is reproducible from the data
    differences = sorted(
        statistics.median(rng.choices(real, k=len(real)))
        - statistics.median(rng.choices(unknown, k=len(unknown)))
        for _ in range(draws)
    )
    low = differences[int(0.025 * draws)]
    high = differences[int(0.975 * draws) - 1]
    return low * 1000, high * 1000


def measure(port: int, *, rounds: int, warmup: int) -> dict[str, Any]:
    """`rounds` timed wrong-password answers each for the real and unknown addresses."""
    real: list[float] = []
    unknown: list[float] = []
    statuses: set[tuple[str, int]] = set()
    browser = Browser(port)
    try:
        for n in range(warmup + rounds):
            stranger = f"nobody.{secrets.token_hex(6)}@nhs.net"
            order = [("real", REAL), ("unknown", stranger)]
            if n % 2:
                order.reverse()
            for kind, mail in order:
                status, seconds = _post_login(browser, mail, WRONG)
                statuses.add((kind, status))
                if n >= warmup:
                    (real if kind == "real" else unknown).append(seconds)
            status, _ = _post_login(browser, REAL, PASSWORD)
            assert status in (302, 303), f"right password refused: {status}"
            browser.cookies.clear()  # signed out: the next round starts as a new visitor
    finally:
        browser.close()
    answers = sorted(statuses)
    assert {status for _, status in answers} == {400}, f"answers differ: {answers}"
    low, high = _median_difference_ci(real, unknown)
    median_real = statistics.median(real) * 1000
    median_unknown = statistics.median(unknown) * 1000
    difference = median_real - median_unknown
    return {
        "rounds": rounds,
        "answer_status": 400,
        "real_address_ms": {
            "p50": round(median_real, 2),
            "p95": round(sorted(real)[int(0.95 * len(real))] * 1000, 2),
        },
        "unknown_address_ms": {
            "p50": round(median_unknown, 2),
            "p95": round(sorted(unknown)[int(0.95 * len(unknown))] * 1000, 2),
        },
        "median_difference_ms": round(difference, 2),
        "median_difference_95ci_ms": [round(low, 2), round(high, 2)],
        "meets_target": bool(abs(difference) < TARGET_MEDIAN_DIFFERENCE_MS or low <= 0 <= high),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument(
        "--floor-ms", type=int, default=None, help="[signin] failure_answer_ms (default: 50)"
    )
    args = parser.parse_args()
    signin: dict[str, Any] = {"address_free_failures": 10000}
    if args.floor_ms is not None:
        signin["failure_answer_ms"] = args.floor_ms

    with (
        tempfile.TemporaryDirectory(prefix="careid-bench-") as raw,
        start_slapd(Path(raw) / "slapd") as slapd,
    ):
        setup = BrokerSetup(
            workers=args.workers,
            threads=args.threads,
            pg_url=None,
            directory=slapd.directory_settings(),
            # Every failure comes from one address: keep the per-address throttle out of it.
            extra_sections={"signin": signin},
        )
        with running_broker("sqlite", Path(raw), setup) as server:
            outcome = measure(server.port, rounds=args.rounds, warmup=args.warmup)
    return emit(
        {
            "benchmark": "password_timing",
            "question": "wrong password: real address vs unknown address, POST /login only",
            "server": f"careid-broker serve, {args.workers} workers x {args.threads} threads",
            "failure_answer_ms": 50 if args.floor_ms is None else args.floor_ms,
            "cpu_count": os.cpu_count(),
            "target": {
                "median_difference_ms_below": TARGET_MEDIAN_DIFFERENCE_MS,
                "or_95ci_contains_zero": True,
            },
            "results": [outcome],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
