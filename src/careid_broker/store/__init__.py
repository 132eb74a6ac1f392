"""The broker's store: SQLAlchemy 2 models, repositories, Alembic migrations, audit.

Start-up:  `store = create_store(url, clock=...)`, `repos = Repositories.build(store)`.
Operations: `upgrade(url)` (`careid-broker db upgrade`), `store.ping()` (/readyz).
Repositories return frozen dataclasses; nothing above this package sees ORM objects.
"""

from __future__ import annotations

from careid_broker.store.audit import AuditLog, AuditRecord, ChainHead, Outcome, VerifyResult
from careid_broker.store.challenges import CardChallenges, ChallengeOutcome, IssuedChallenge
from careid_broker.store.codes import (
    AuthorizationCodes,
    CodeGrant,
    IssuedCode,
    RedeemOutcome,
    RedeemResult,
)
from careid_broker.store.engine import Clock, Store, create_store, sqlite_file, utc_now
from careid_broker.store.errors import (
    ConflictSide,
    RegistrationConflictError,
    SigningKeyUnavailableError,
    StoreError,
    StoreUnavailableError,
)
from careid_broker.store.jtis import UsedJtis
from careid_broker.store.keys import (
    ActiveSigningKey,
    KeyAlgorithm,
    KeyState,
    PublishedKey,
    RotationResult,
    SigningKeys,
)
from careid_broker.store.migrate import (
    current_revision,
    head_revision,
    schema_is_current,
    upgrade,
)
from careid_broker.store.outbox import Delivery, LogoutOutbox, RetryPolicy, Settlement
from careid_broker.store.registrations import (
    LinkMode,
    NewRegistration,
    RegistrationPage,
    RegistrationRecord,
    Registrations,
)
from careid_broker.store.repositories import Repositories
from careid_broker.store.responders import OcspAnswerTable, ResponderStateTable, SharedCrlTable
from careid_broker.store.retention import (
    PurgeKind,
    PurgeReport,
    Retention,
    RetentionObserver,
    RetentionPolicy,
)
from careid_broker.store.retention_worker import RetentionWorker
from careid_broker.store.sessions import (
    CertificateRef,
    EndedSession,
    EndReason,
    NewSession,
    SessionRecord,
    SigninSessions,
)
from careid_broker.store.subjects import SubjectRow, Subjects
from careid_broker.store.throttle import (
    AttemptOutcome,
    Booking,
    Reservation,
    Throttle,
    ThrottlePolicy,
    ThrottleState,
    account_key,
    address_key,
    entry_key,
)
from careid_broker.store.tokens import (
    AccessTokenInfo,
    IssuedTokens,
    RevokeOutcome,
    RevokeResult,
    RotateOutcome,
    RotateResult,
    TokenKind,
    TokenRecord,
    Tokens,
    new_opaque_token,
)
from careid_broker.store.transactions import (
    FIELD_LIMITS,
    MAX_HINT_LENGTH,
    MAX_TRANSACTION_ID_LENGTH,
    AuthorizationRequest,
    LoginTransactionRecord,
    LoginTransactions,
    NewLoginTransaction,
    TransactionStatus,
    TransactionTooLargeError,
    instant_for_extras,
    instant_from_extras,
    transaction_key,
)
from careid_broker.store.urls import driver_problem, shown_url

__all__ = [
    "FIELD_LIMITS",
    "MAX_HINT_LENGTH",
    "MAX_TRANSACTION_ID_LENGTH",
    "AccessTokenInfo",
    "ActiveSigningKey",
    "AttemptOutcome",
    "AuditLog",
    "AuditRecord",
    "AuthorizationCodes",
    "AuthorizationRequest",
    "Booking",
    "CardChallenges",
    "ChainHead",
    "ChallengeOutcome",
    "Clock",
    "CodeGrant",
    "ConflictSide",
    "Delivery",
    "EndReason",
    "EndedSession",
    "IssuedChallenge",
    "IssuedCode",
    "IssuedTokens",
    "KeyAlgorithm",
    "KeyState",
    "LinkMode",
    "LoginTransactionRecord",
    "LoginTransactions",
    "LogoutOutbox",
    "NewLoginTransaction",
    "NewRegistration",
    "NewSession",
    "CertificateRef",
    "OcspAnswerTable",
    "Outcome",
    "PublishedKey",
    "PurgeKind",
    "PurgeReport",
    "RedeemOutcome",
    "RedeemResult",
    "RegistrationConflictError",
    "RegistrationPage",
    "RegistrationRecord",
    "Registrations",
    "Repositories",
    "Reservation",
    "ResponderStateTable",
    "Retention",
    "RetentionObserver",
    "RetentionPolicy",
    "RetentionWorker",
    "RetryPolicy",
    "RevokeOutcome",
    "RevokeResult",
    "SharedCrlTable",
    "RotateOutcome",
    "RotateResult",
    "RotationResult",
    "SessionRecord",
    "Settlement",
    "SigninSessions",
    "SigningKeyUnavailableError",
    "SigningKeys",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SubjectRow",
    "Subjects",
    "Throttle",
    "ThrottlePolicy",
    "ThrottleState",
    "TokenKind",
    "TokenRecord",
    "Tokens",
    "TransactionStatus",
    "TransactionTooLargeError",
    "UsedJtis",
    "VerifyResult",
    "account_key",
    "address_key",
    "create_store",
    "sqlite_file",
    "current_revision",
    "driver_problem",
    "entry_key",
    "head_revision",
    "instant_for_extras",
    "instant_from_extras",
    "new_opaque_token",
    "schema_is_current",
    "shown_url",
    "transaction_key",
    "upgrade",
    "utc_now",
]
