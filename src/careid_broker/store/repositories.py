"""Every repository over one Store, built once at app start-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from careid_broker.store.audit import AuditLog
from careid_broker.store.challenges import CardChallenges
from careid_broker.store.codes import AuthorizationCodes
from careid_broker.store.engine import Store
from careid_broker.store.jtis import UsedJtis
from careid_broker.store.keys import KeyAlgorithm, SigningKeys
from careid_broker.store.outbox import LogoutOutbox, RetryPolicy
from careid_broker.store.registrations import Registrations
from careid_broker.store.sessions import SigninSessions
from careid_broker.store.subjects import Subjects
from careid_broker.store.throttle import Throttle, ThrottlePolicy
from careid_broker.store.tokens import Tokens
from careid_broker.store.transactions import LoginTransactions


@dataclass(frozen=True, kw_only=True, slots=True)
class Repositories:
    """The store's repositories, sharing one Store (and so one clock)."""

    store: Store
    subjects: Subjects
    registrations: Registrations
    transactions: LoginTransactions
    challenges: CardChallenges
    codes: AuthorizationCodes
    tokens: Tokens
    sessions: SigninSessions
    outbox: LogoutOutbox
    throttle: Throttle
    keys: SigningKeys
    jtis: UsedJtis
    audit: AuditLog

    @classmethod
    def build(
        cls,
        store: Store,
        *,
        key_passphrase: bytes | None = None,
        key_previous_passphrase: bytes | None = None,
        key_algorithm: KeyAlgorithm = KeyAlgorithm.RS256,
        transaction_ttl: timedelta = timedelta(minutes=15),
        challenge_ttl: timedelta = timedelta(minutes=5),
        code_ttl: timedelta = timedelta(seconds=60),
        access_token_ttl: timedelta = timedelta(minutes=10),
        refresh_token_ttl: timedelta = timedelta(hours=8),
        throttle_policy: ThrottlePolicy | None = None,
        logout_retry: RetryPolicy | None = None,
        transaction_key: bytes | None = None,
        previous_transaction_keys: Sequence[bytes] = (),
    ) -> Repositories:
        """Build every repository with the broker's configured lifetimes and policies.

        `transaction_key` seals login transactions (`transactions.transaction_key`); every
        worker and instance must have the same. Without one, a random key: ids made in
        this process open only here (tests and one-process tools).
        `previous_transaction_keys` still open what they sealed, while a key is replaced.
        """
        transactions = LoginTransactions(
            store,
            key=transaction_key,
            previous_keys=previous_transaction_keys,
            ttl=transaction_ttl,
        )
        return cls(
            store=store,
            subjects=Subjects(store),
            registrations=Registrations(store),
            transactions=transactions,
            challenges=CardChallenges(store, transactions=transactions, ttl=challenge_ttl),
            codes=AuthorizationCodes(store, ttl=code_ttl),
            tokens=Tokens(store, access_ttl=access_token_ttl, refresh_ttl=refresh_token_ttl),
            sessions=SigninSessions(store),
            outbox=LogoutOutbox(store, policy=logout_retry),
            throttle=Throttle(store, policy=throttle_policy),
            keys=SigningKeys(
                store,
                passphrase=key_passphrase,
                previous_passphrase=key_previous_passphrase,
                alg=key_algorithm,
            ),
            jtis=UsedJtis(store),
            audit=AuditLog(store),
        )
