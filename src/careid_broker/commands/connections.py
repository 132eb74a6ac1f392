"""`check-config --connect`: ask each part the configuration names, and say what it said.

Each check is reported separately, so a wrong bind password reads as a wrong bind
password and not as "the directory does not answer"; no password is ever shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from careid_broker.commands.database import CREATE_IT, sqlite_file_missing
from careid_broker.config import BrokerConfig
from careid_broker.directory.connector import BindRole
from careid_broker.directory.probe import ProbeResult, ServerProbe, probe_directory
from careid_broker.pki import HttpFetcher
from careid_broker.pki.probe import ResponderProbe, probe_responders
from careid_broker.store import create_store, schema_is_current, shown_url


@dataclass(frozen=True, kw_only=True)
class Check:
    """One thing asked: passed or not, whether the broker needs it, and what to say."""

    ok: bool
    text: str
    needed: bool = True


def connection_checks(
    config: BrokerConfig, *, http: HttpFetcher, now: datetime
) -> tuple[Check, ...]:
    """The database, every directory server, and the revocation services `[pki]` names."""
    checks = [_database(config)]
    checks.extend(_directory(probe) for probe in probe_directory(config.directory))
    if config.pki is None:
        checks.append(Check(ok=True, text="[pki] not set: no revocation service to ask"))
    else:
        probes = probe_responders(config.pki, http=http, now=now)
        checks.extend(_responder(probe) for probe in probes)
        if not config.pki.ocsp.responder_url:
            checks.append(
                Check(
                    ok=True,
                    text="card certificates' own OCSP and CRL URLs are known only from a card:"
                    " not checked here (`careid-broker revocation check --uuid …` asks about"
                    " a registered card)",
                )
            )
    return tuple(checks)


def _database(config: BrokerConfig) -> Check:
    shown = shown_url(config.database.url)
    if sqlite_file_missing(config.database.url) is not None:
        # Connecting would create an empty file; like every other command, create nothing.
        return Check(ok=False, text=f"database {shown}: there is no such file; {CREATE_IT}")
    store = create_store(config.database.url)
    try:
        if not store.ping():
            return Check(ok=False, text=f"database {shown}: does not answer (see the line above)")
        if not schema_is_current(store):
            return Check(
                ok=False,
                text=f"database {shown}: schema is not current; run `careid-broker db upgrade`",
            )
    finally:
        store.dispose()
    return Check(ok=True, text=f"database {shown}: answers, schema current")


def _directory(probe: ServerProbe) -> Check:
    who = f"the {probe.role.value} account {probe.bind_dn!r}"
    where = f"directory {probe.url}"
    if probe.result is ProbeResult.OK:
        return Check(ok=True, text=f"{where}: {who} binds and reads the configured bases")
    if probe.result is ProbeResult.UNREACHABLE:
        text = f"{where}: cannot be reached ({probe.detail}); check the URL, the port and TLS"
    elif probe.invalid_credentials:
        key = "write_bind_dn" if probe.role is BindRole.WRITER else "bind_dn"
        text = (
            f"{where}: refused the bind as {who}: invalidCredentials, so the DN or its"
            f" password is wrong. Check [directory] {key} and its password"
            " (bind_password, bind_password_file or CAREID_DIRECTORY_BIND_PASSWORD)"
        )
    elif probe.result is ProbeResult.BIND_REFUSED:
        text = f"{where}: refused the bind as {who}: {probe.detail}"
    else:
        text = (
            f"{where}: {who} binds, but a search failed: {probe.detail}; check"
            " [directory] accounts_base, care_identities_base and the account's read access"
        )
    return Check(ok=False, text=text)


def _responder(probe: ResponderProbe) -> Check:
    text = f"{probe.kind.value} {probe.location} ({probe.named_by}): {probe.detail}"
    if not probe.needed and not probe.ok:
        text += " (the broker does not ask it about cards)"
    return Check(ok=probe.ok, text=text, needed=probe.needed)


__all__ = ["Check", "connection_checks"]
