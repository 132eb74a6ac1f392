"""`audit()`: one call to record a security event with who, from where and for which RP.

The client address and the request id are taken from the Flask request, so callers
name only what they know. Every sign-in attempt, refusal and session end goes through
here into the hash-chained audit log (`repos.audit`). Details never hold secrets: the
audit log refuses keys such as `password` or `token` outright.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import has_request_context, request

from careid_broker.logging_setup import current_request_id
from careid_broker.services import services
from careid_broker.store import AuditRecord, Outcome

log = logging.getLogger(__name__)


def client_address() -> str | None:
    """The client's address for the current request (after the trusted-proxy fix-up)."""
    if not has_request_context():
        return None
    return request.remote_addr


def audit(
    event: str,
    *,
    outcome: Outcome | str,
    code: str | None = None,
    actor: str | None = None,
    subject: str | None = None,
    org: str | None = None,
    rp: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Append an audit entry (e.g. `signin.password`, `failure`, code `invalid_credentials`).

    `actor` is who acted (the person signing in, an administrator), `subject` whom it is
    about (the account's mail or a card UUID), `org` the organisation code, `rp` the
    relying party's client id. A store that is down raises `StoreUnavailableError`: an
    action that cannot be audited is not carried out.
    """
    merged: dict[str, Any] = dict(details or {})
    request_id = current_request_id()
    if request_id:
        merged.setdefault("request_id", request_id)
    record = services().repos.audit.append(
        event,
        outcome,
        error_code=str(code) if code is not None else None,
        actor=actor,
        subject=subject,
        organisation=org,
        client_address=client_address(),
        relying_party=rp,
        details=merged,
    )
    log.info(
        "audit %s %s",
        event,
        Outcome(outcome).value,
        extra={"audit_seq": record.seq, "error_code": record.error_code, "rp": rp},
    )
    return record
