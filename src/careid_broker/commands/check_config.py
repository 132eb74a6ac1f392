"""`careid-broker check-config [--connect]`: name every problem, or say what was checked.

A configuration that loads is summarised section by section (never a secret), so the
person checking it sees what the broker will do, not just "OK"; development mode is
called out. `--connect` then asks the parts the broker depends on: the database, each
directory server as the broker's own accounts, and the revocation services `[pki]`
names (`connections`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from careid_broker.codes import BrokerCode
from careid_broker.commands.connections import Check, connection_checks
from careid_broker.commands.parsing import documented
from careid_broker.config import BrokerConfig, BrokerConfigError, default_config_path, load_config
from careid_broker.pki import UrllibFetcher
from careid_broker.store import shown_url

EXIT_OK, EXIT_CONNECT_FAILED, EXIT_INVALID = 0, 1, 2


def check_config(args: argparse.Namespace) -> int:
    """Load and check the configuration; with `--connect`, ask what it names."""
    config_arg: Path | None = args.config
    path = (config_arg or default_config_path()).resolve()
    try:
        config = load_config(path)
    except BrokerConfigError as exc:
        # Its own headline: the generic one tells the reader to run this very command.
        count = len(exc.problems)
        print(
            f"careid-broker: {BrokerCode.BROKER_CONFIG_INVALID.value}: {path} is not valid:"
            f" {count} problem{'' if count == 1 else 's'}. Correct each one below, then"
            " check the file again.",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  problem: {problem}", file=sys.stderr)
        return EXIT_INVALID
    for name in config.env_overrides:
        print(f"note: {name} overrides the file")
    for line in summary(config):
        print(line)
    if config.broker.dev:
        print(DEV_WARNING, file=sys.stderr)
    if not args.connect:
        print(f"configuration OK: {path} (connections not checked: add --connect)")
        return EXIT_OK
    checks = connection_checks(config, http=UrllibFetcher(), now=datetime.now(UTC))
    failed = report(checks)
    if failed:
        print(
            f"careid-broker: {failed} connection check{'' if failed == 1 else 's'} of"
            f" {len(checks)} failed (named above); the configuration itself is valid",
            file=sys.stderr,
        )
        return EXIT_CONNECT_FAILED
    print(f"configuration OK: {path}; all {len(checks)} connection checks passed")
    return EXIT_OK


DEV_WARNING = (
    "WARNING: development mode is on ([broker] dev = true): cookies are sent without"
    " Secure, an http:// issuer and the demo secret key are allowed, and no HSTS is sent."
    " Never use it in production."
)


def report(checks: tuple[Check, ...]) -> int:
    """Print each check (passes on stdout, failures on stderr); how many needed ones failed."""
    failed = 0
    for check in checks:
        if check.ok:
            print(f"  ok: {check.text}")
        elif check.needed:
            failed += 1
            print(f"  problem: {check.text}", file=sys.stderr)
        else:
            print(f"  warning: {check.text}", file=sys.stderr)
    return failed


def summary(config: BrokerConfig) -> list[str]:
    """What was checked, one line per section, without any secret."""
    broker, server, directory = config.broker, config.server, config.directory
    clients = list(config.oidc.clients)
    lines = [
        f"checked: {config.source or 'configuration'}",
        f"  [broker] issuer {broker.issuer}; sessions {_duration(broker.session_lifetime)}"
        f" (idle {_duration(broker.session_idle)}); trusted proxies {broker.trusted_proxies};"
        f" development mode {'ON' if broker.dev else 'off'}",
        f"  [server] bind {server.bind}; {server.workers} workers x {server.threads} threads",
        f"  [logging] {config.logging.level}, {config.logging.format.value}",
        "  [ops] /metrics from " + ", ".join(str(n) for n in config.ops.metrics_allowed_networks),
        f"  [database] {shown_url(config.database.url)}",
        f"  [directory] {', '.join(directory.urls)} ({directory.pool_strategy.value});"
        f" bind as {directory.bind_dn!r}; TLS {directory.use_tls.value};"
        f" {'writable' if directory.writable else 'read-only'}",
        f"  [signin] {config.signin.account_throttle.free_failures} free failures per account,"
        f" {config.signin.address_throttle.free_failures} per address",
        f"  [oidc] {len(clients)} client{'' if len(clients) == 1 else 's'}"
        f" in {config.oidc.clients_file}"
        + (f": {', '.join(c.client_id for c in clients)}" if clients else ""),
        f"  [card] agent {config.card.agent_url}; link mode {config.card.link_mode.value};"
        f" session lock {'on' if config.card.session_lock else 'off'}",
        _pki_line(config),
        f"  [admin] rights re-read every {int(config.admin.rights_cache.total_seconds())} s",
        f"  [api] {len(config.api.clients)} API client"
        f"{'' if len(config.api.clients) == 1 else 's'}",
    ]
    return lines


def _pki_line(config: BrokerConfig) -> str:
    pki = config.pki
    if pki is None:
        return "  [pki] not set: card sign-in is not available"
    anchors = ", ".join(repr(c.subject.rfc4514_string()) for c in pki.trust_anchors)
    ocsp = pki.ocsp.responder_url or "each card certificate's own"
    return (
        f"  [pki] {len(pki.trust_anchors)} trust anchor(s): {anchors};"
        f" {len(pki.intermediates)} intermediate(s); revocation {pki.revocation.value}"
        f"{' (SOFT-FAIL)' if pki.soft_fail else ''}; OCSP responder {ocsp};"
        f" {len(pki.crl.files)} CRL file(s)"
    )


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def register(sub: Any) -> None:
    """Add `check-config` to the broker's CLI."""
    check = sub.add_parser(
        "check-config",
        help="check the configuration and name every problem",
        **documented(
            "Read the configuration file and the CAREID_* environment overrides, check"
            " every section, and name every problem at once (unknown settings are errors,"
            " with the closest known name). A valid file is summarised section by section."
            " With --connect, also ask the database, each directory server (as the"
            " broker's own accounts) and the OCSP responders and CRLs [pki] names.",
            {
                EXIT_OK: "the configuration is valid (and, with --connect, everything answered)",
                EXIT_CONNECT_FAILED: "--connect: the configuration is valid, but something"
                " it names did not answer or refused (each named on stderr)",
                EXIT_INVALID: "the configuration is not valid (each problem named), or the"
                " command line was not",
            },
        ),
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also check that the database, the directory and the revocation services answer",
    )
    check.set_defaults(func=check_config)


__all__ = ["check_config", "register", "summary"]
