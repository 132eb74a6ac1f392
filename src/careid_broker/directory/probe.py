"""Asking each directory server, one by one, whether the broker's accounts work there.

Sign-in needs only one server to answer and turns every failure into "try again
shortly"; an administrator checking a deployment needs to know which server failed and
why: it could not be reached, it refused the broker's bind (a wrong DN or password: a
configuration fault, the same on every server), or a search under a configured base
failed (a wrong base, or access rights). Passwords are never part of what is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum, unique

from ldap3 import Connection
from ldap3.core.exceptions import LDAPException

from careid_broker.directory.config import DirectoryConfig, ServerAddress
from careid_broker.directory.connector import (
    BindAccount,
    BindRefused,
    BindRole,
    Connector,
    ServerFault,
)

# RFC 4511 §4.1.9 resultCode invalidCredentials.
RESULT_INVALID_CREDENTIALS = 49


@unique
class ProbeResult(StrEnum):
    """What one server said."""

    OK = "ok"
    UNREACHABLE = "unreachable"
    BIND_REFUSED = "bind_refused"
    SEARCH_FAILED = "search_failed"


@dataclass(frozen=True, kw_only=True)
class ServerProbe:
    """One server, one account: the result and, unless OK, what went wrong."""

    url: str
    role: BindRole
    bind_dn: str
    result: ProbeResult
    detail: str = ""
    invalid_credentials: bool = False


def probe_directory(config: DirectoryConfig) -> tuple[ServerProbe, ...]:
    """Bind as the service account on every server and read both configured bases;
    with a separate writer account, bind as that too."""
    connector = Connector(config)
    service = BindAccount(
        role=BindRole.SERVICE, dn=config.bind_dn, password=config.bind_password.encode()
    )
    accounts: list[tuple[BindAccount, tuple[str, ...]]] = [
        (service, (config.accounts_base, config.care_identities_base))
    ]
    if config.writable and config.write_bind_dn and config.write_bind_dn != config.bind_dn:
        writer = BindAccount(
            role=BindRole.WRITER,
            dn=config.write_bind_dn,
            password=(config.write_bind_password or config.bind_password).encode(),
        )
        accounts.append((writer, (config.accounts_base,)))
    return tuple(
        _probe(connector, address, account, bases)
        for address in config.servers()
        for account, bases in accounts
    )


def _probe(
    connector: Connector, address: ServerAddress, account: BindAccount, bases: tuple[str, ...]
) -> ServerProbe:
    bound = False

    def operation(connection: Connection) -> None:
        nonlocal bound
        bound = True
        for base in bases:
            connector.search(
                connection,
                base=base,
                search_filter="(objectClass=*)",
                attributes=[],
                size_limit=1,
                base_only=True,
            )

    def probe(result: ProbeResult, detail: str = "", *, invalid: bool = False) -> ServerProbe:
        return ServerProbe(
            url=address.url,
            role=account.role,
            bind_dn=account.dn,
            result=result,
            detail=detail,
            invalid_credentials=invalid,
        )

    try:
        connector.attempt(address, account, operation)
    except BindRefused as exc:
        return probe(
            ProbeResult.BIND_REFUSED,
            f"{exc.description or 'refused'} (result {exc.result})",
            invalid=exc.result == RESULT_INVALID_CREDENTIALS,
        )
    except (ServerFault, LDAPException, OSError) as exc:
        text = str(exc) if isinstance(exc, ServerFault) else f"{type(exc).__name__}: {exc}"
        return probe(ProbeResult.SEARCH_FAILED if bound else ProbeResult.UNREACHABLE, text)
    return probe(ProbeResult.OK)


__all__ = ["ProbeResult", "ServerProbe", "probe_directory"]
