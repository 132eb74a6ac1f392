"""`Auditor`: one call to record a security event with who, from where and for which RP.

Every sign-in attempt, refusal and session end goes through here into the hash-chained
audit log. The client address and request id come from an injected `RequestFacts`
callable (the web layer gives one reading the current request; the CLI none), so
callers name only what they know. Details never hold secrets: the audit log refuses
keys such as `password` or `token` outright.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from careid_broker.store import AuditLog, AuditRecord, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RequestFacts:
    """Where the action came from: the client's address and the request id, if any."""

    client_address: str | None = None
    request_id: str | None = None


NO_REQUEST = RequestFacts()


def no_request() -> RequestFacts:
    """For work done outside any request (the CLI, background threads)."""
    return NO_REQUEST


class Auditor:
    """Appends audit entries; call it as `audit(event, outcome=…, code=…, actor=…)`."""

    def __init__(
        self, audit_log: AuditLog, *, request_facts: Callable[[], RequestFacts] = no_request
    ) -> None:
        self._log = audit_log
        self._request_facts = request_facts

    def __call__(
        self,
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
        """Append an entry (e.g. `signin.password`, `failure`, code `invalid_credentials`).

        `actor` is who acted (the person signing in, an administrator), `subject` whom it
        is about (the account's mail or a card UUID), `org` the organisation code, `rp`
        the relying party's client id. A store that is down raises
        `StoreUnavailableError`: an action that cannot be audited is not carried out.
        """
        facts = self._request_facts()
        merged: dict[str, Any] = dict(details or {})
        if facts.request_id:
            merged.setdefault("request_id", facts.request_id)
        record = self._log.append(
            event,
            outcome,
            error_code=str(code) if code is not None else None,
            actor=actor,
            subject=subject,
            organisation=org,
            client_address=facts.client_address,
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
