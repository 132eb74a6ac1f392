"""Which login transactions this browser started, and so may sign in to (by password or
card); where a broker-local sign-in goes on to.

A challenge is bound to a login transaction in the store; the transaction is bound to
the browser here, in its signed session cookie. The `/authorize` request that makes
`tx` records it, so the login page, the password form, `/card/challenge`,
`/card/authenticate` and the steps after them work for that `tx` only in the browser
the relying party sent: a challenge (or a transaction id) that leaks to another
browser is of no use there.

A card sign-in without a relying party (someone opening `/login` directly) still needs
a transaction for its challenges: a broker-local one, made on first use and known only
to this browser's session.
"""

from __future__ import annotations

import hashlib

from flask import session

from careid_broker.store import AuthorizationRequest, LoginTransactions, TransactionStatus

#: The session key holding the login transactions this browser started.
RP_TRANSACTIONS_KEY = "careid_card_tx"
_LOCAL_TRANSACTION = "careid_card_local"
_NEXT = "careid_next"
#: The longest local path kept as where to go after a broker-local sign-in.
MAX_NEXT_LENGTH = 512
#: Sign-ins a browser may have under way at once (tabs signing in to different RPs).
MAX_REMEMBERED = 5
#: The client id of broker-local transactions: not a registered client, so the OpenID
#: Provider can never issue a code for one.
LOCAL_CLIENT_ID = "careid-broker:card-signin"


def remember_login_transaction(tx_id: str) -> None:
    """Record that this browser started login transaction `tx_id`.

    By a digest of the id: a sealed id carries the whole request, and five of them
    would crowd the cookie.
    """
    digest = remembered_as(tx_id)
    known = [t for t in _remembered() if t != digest]
    known.append(digest)
    session[RP_TRANSACTIONS_KEY] = known[-MAX_REMEMBERED:]


def knows_login_transaction(tx_id: str) -> bool:
    """Whether this browser started login transaction `tx_id`."""
    return remembered_as(tx_id) in _remembered()


def forget_login_transaction(tx_id: str) -> None:
    """Drop a finished transaction from this browser's list."""
    digest = remembered_as(tx_id)
    known = _remembered()
    if digest in known:
        session[RP_TRANSACTIONS_KEY] = [t for t in known if t != digest]


def remembered_as(tx_id: str) -> str:
    """How the cookie keeps `tx_id`: 128 bits of its SHA-256 tell the ids apart, and the
    cookie is signed, so none is forged."""
    # surrogatepass: a lone surrogate from a JSON body is no one's id, not a crash.
    return hashlib.sha256(tx_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _remembered() -> list[str]:
    value = session.get(RP_TRANSACTIONS_KEY)
    if not isinstance(value, list):
        return []
    return [t for t in value if isinstance(t, str)]


def safe_next(path: str | None) -> str | None:
    """`path` when it is a path on this broker, else None (never an open redirect).

    Only an absolute path: no scheme, no host (`//host`), no backslash that a browser
    might read as a slash, no control characters.
    """
    if not path or len(path) > MAX_NEXT_LENGTH or not path.startswith("/"):
        return None
    if path.startswith("//") or "\\" in path or any(ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        return None
    return path


def remember_next(path: str | None) -> None:
    """Where a broker-local sign-in should continue (e.g. the admin console's step-up)."""
    safe = safe_next(path)
    if safe is not None:
        session[_NEXT] = safe


def pop_next() -> str | None:
    """The remembered continuation, once."""
    value = session.pop(_NEXT, None)
    return safe_next(value) if isinstance(value, str) else None


def local_transaction(transactions: LoginTransactions, *, issuer: str, create: bool) -> str | None:
    """This browser's broker-local transaction (pending), made afresh when `create`."""
    current = session.get(_LOCAL_TRANSACTION)
    if isinstance(current, str):
        record = transactions.get(current)
        if record is not None and record.status is TransactionStatus.PENDING:
            return current
    if not create:
        return None
    created = transactions.create(
        AuthorizationRequest(
            client_id=LOCAL_CLIENT_ID,
            redirect_uri=f"{issuer}/login",
            scope="",
            extras={"purpose": "card-signin"},
        )
    )
    session[_LOCAL_TRANSACTION] = created.transaction_id
    return created.transaction_id
