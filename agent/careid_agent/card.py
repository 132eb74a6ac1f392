"""The card facade the agent's HTTP layer and CLI call: status and sign.

Card I/O is the slow part of a sign-in on real hardware, so the certificate and CHUID are
read once per card insertion (keyed by the transport's insertion id) and a cached sign-in
costs SELECT + VERIFY + GENERAL AUTHENTICATE — 3 APDUs, or 2 under the
`once-per-insertion` PIN policy once the PIN has been verified for this insertion.

The PIN is asked for outside any PC/SC transaction: Windows resets a card whose
transaction sits idle for more than five seconds, and a person typing a PIN is idle
time. The connection stays open meanwhile, so a card pulled during PIN entry fails the
next APDU with CardRemovedError instead of signing with another card.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from careid_agent.errors import (
    CertificateMalformedError,
    MalformedDataError,
    PinBlockedError,
    SecurityStatusError,
    WrongPinError,
)
from careid_agent.piv import PivSession
from careid_agent.piv_objects import (
    Chuid,
    algorithm_for_key,
    describe_algorithm,
    load_certificate,
)
from careid_agent.transport import CardConnection
from careid_protocol.identity import DEFAULT_RULE, IdentityRule, holder_name, uuid_from_certificate
from careid_protocol.piv import Algorithm

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
ConnectionFactory = Callable[[], CardConnection]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PinPolicy(StrEnum):
    """When the agent asks for the PIN (the values are the configuration's words)."""

    EVERY_SIGNIN = "every-signin"
    ONCE_PER_INSERTION = "once-per-insertion"


@dataclass(frozen=True, kw_only=True)
class CardIdentity:
    """What one inserted card says about its holder (read once per insertion)."""

    insertion_id: str
    certificate: x509.Certificate
    certificate_der: bytes
    algorithm: Algorithm
    holder_name: str
    issuer: str
    """The issuer's name (RFC 4514), read with the rest: names are parsed lazily."""
    uuid: str | None
    chuid: Chuid | None

    @property
    def card_id(self) -> str | None:
        """The card's GUID from the CHUID, when it has one."""
        return self.chuid.card_id if self.chuid is not None else None


@dataclass(frozen=True, kw_only=True)
class CardStatus:
    """The card in the reader, for `careid-agent status` and `GET /v1/status`."""

    reader: str
    holder_name: str
    uuid: str | None
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    certificate_valid: bool
    algorithm: Algorithm
    pin_tries_left: int | None
    """None when the card only says the PIN is already verified."""
    pin_verified: bool
    card_id: str | None

    @property
    def pin_blocked(self) -> bool:
        """Whether the PIN is blocked."""
        return self.pin_tries_left == 0

    @property
    def key_description(self) -> str:
        """The key type for people ("ECC P-256")."""
        return describe_algorithm(self.algorithm)

    def to_json(self) -> dict[str, Any]:
        """The status as JSON (camelCase, like the agent's HTTP API)."""
        return {
            "reader": self.reader,
            "holderName": self.holder_name,
            "uuid": self.uuid,
            "issuer": self.issuer,
            "notBefore": _rfc3339(self.not_before),
            "notAfter": _rfc3339(self.not_after),
            "certificateValid": self.certificate_valid,
            "keyAlgorithm": self.key_description,
            "pinTriesLeft": self.pin_tries_left,
            "pinVerified": self.pin_verified,
            "pinBlocked": self.pin_blocked,
            "cardId": self.card_id,
        }


@dataclass(frozen=True, kw_only=True)
class PinRequest:
    """What a PIN prompt may show (never the PIN itself)."""

    reader: str
    holder_name: str
    uuid: str | None
    retries_left: int | None
    """Tries left as last seen on this insertion; None when not known."""
    requester: str | None = None
    """Who asks for the signature (the web origin), so the prompt can name it."""


class PinProvider(Protocol):
    """Asks the person for their PIN; raises an AgentError when cancelled or timed out.

    A bytearray answer is wiped once used; a str cannot be, so prefer a bytearray.
    """

    def __call__(self, request: PinRequest, /) -> str | bytearray: ...


class PinPad(Protocol):
    """A reader's secure PIN entry: the reader sends VERIFY itself, so the PIN never
    passes through this computer (PC/SC Part 10, FEATURE_VERIFY_PIN_DIRECT)."""

    def available(self, connection: CardConnection) -> bool:
        """Whether this connection's reader offers secure PIN entry."""
        ...

    def verify(self, connection: CardConnection, request: PinRequest) -> None:
        """Have the person type the PIN on the reader; raises WrongPinError,
        PinBlockedError, or an AgentError when cancelled or timed out."""
        ...


DigestSource = Callable[["CardIdentity"], tuple[bytes, hashes.HashAlgorithm]]


@dataclass(frozen=True, kw_only=True)
class SignResult:
    """A signature over the caller's digest, with the certificate that verifies it."""

    identity: CardIdentity
    signature: bytes
    """DER ECDSA for ECC keys; the raw RSASSA-PKCS1-v1_5 signature for RSA."""
    reader: str


@dataclass(kw_only=True)
class _Insertion:
    """Per-insertion knowledge; guarded by CardService._lock."""

    identity: CardIdentity
    pin_verified: bool = False
    retries_left: int | None = None
    # The site the PIN was last typed for: under once-per-insertion only that site signs
    # again without asking (another site is another consent).
    verified_for: str | None = None


class CardService:
    """Status and signing for the card in one reader, caching per insertion."""

    def __init__(
        self,
        connect: ConnectionFactory,
        *,
        identity_rule: IdentityRule = DEFAULT_RULE,
        pin_policy: PinPolicy = PinPolicy.EVERY_SIGNIN,
        clock: Clock = _utcnow,
        cache_size: int = 8,
    ) -> None:
        self._connect = connect
        self._rule = identity_rule
        self._pin_policy = pin_policy
        self._clock = clock
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Insertion] = OrderedDict()
        self._lock = threading.Lock()

    # -- cache ---------------------------------------------------------------------------

    def _cached(self, insertion_id: str) -> _Insertion | None:
        with self._lock:
            entry = self._cache.get(insertion_id)
            if entry is not None:
                self._cache.move_to_end(insertion_id)
            return entry

    def _remember(self, entry: _Insertion) -> None:
        with self._lock:
            self._cache[entry.identity.insertion_id] = entry
            self._cache.move_to_end(entry.identity.insertion_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def cached_identity(self, insertion_id: str) -> CardIdentity | None:
        """What is known about an insertion without touching the card; None if unread."""
        entry = self._cached(insertion_id)
        return entry.identity if entry is not None else None

    def forget(self, insertion_id: str | None = None) -> None:
        """Drop what is cached about one insertion (or all): the card watcher calls this
        on removal, for platforms whose PC/SC has no insertion counter."""
        with self._lock:
            if insertion_id is None:
                self._cache.clear()
            else:
                self._cache.pop(insertion_id, None)

    def _entry(self, connection: CardConnection, session: PivSession) -> _Insertion:
        """The cached entry for this insertion, reading the card if it is new."""
        entry = self._cached(connection.insertion_id)
        if entry is not None:
            return entry
        der = session.read_certificate_der()
        identity = self._identity(connection.insertion_id, der, self._read_chuid(session))
        entry = _Insertion(identity=identity)
        self._remember(entry)
        log.info("read card of %s in %r", identity.uuid or "<no UUID>", connection.reader)
        return entry

    @staticmethod
    def _read_chuid(session: PivSession) -> Chuid | None:
        try:
            return session.read_chuid()
        except MalformedDataError:
            # The CHUID only names the card; a bad one must not stop its holder signing in.
            log.warning("the card's CHUID is malformed; ignoring it")
            return None

    def _identity(self, insertion_id: str, der: bytes, chuid: Chuid | None) -> CardIdentity:
        certificate = load_certificate(der)
        # cryptography parses a certificate's names and key only when first asked: read
        # everything now, so that a certificate that is DER but holds a bad name or key
        # is refused as malformed here, not a crash in a later status or sign.
        try:
            key = certificate.public_key()
            return CardIdentity(
                insertion_id=insertion_id,
                certificate=certificate,
                certificate_der=certificate.public_bytes(Encoding.DER),
                algorithm=algorithm_for_key(key),
                holder_name=holder_name(certificate),
                issuer=certificate.issuer.rfc4514_string(),
                uuid=uuid_from_certificate(certificate, self._rule),
                chuid=chuid,
            )
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateMalformedError() from exc

    # -- operations ----------------------------------------------------------------------

    def read_identity(self) -> CardIdentity:
        """The card's identity without touching the PIN (1 APDU when cached)."""
        connection = self._connect()
        try:
            with connection.transaction():
                session = PivSession(connection)
                session.select()
                return self._entry(connection, session).identity
        finally:
            connection.close()

    def status(self) -> CardStatus:
        """Who the card names and its PIN state (2 APDUs when cached: SELECT, VERIFY)."""
        connection = self._connect()
        try:
            with connection.transaction():
                session = PivSession(connection)
                session.select()
                entry = self._entry(connection, session)
                pin = session.pin_status()
        finally:
            connection.close()
        with self._lock:
            entry.retries_left = pin.retries_left
            if not pin.verified:
                entry.pin_verified = False
        certificate = entry.identity.certificate
        now = self._clock()
        return CardStatus(
            reader=connection.reader,
            holder_name=entry.identity.holder_name,
            uuid=entry.identity.uuid,
            issuer=entry.identity.issuer,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            certificate_valid=certificate.not_valid_before_utc
            <= now
            <= certificate.not_valid_after_utc,
            algorithm=entry.identity.algorithm,
            pin_tries_left=pin.retries_left,
            pin_verified=pin.verified,
            card_id=entry.identity.card_id,
        )

    def sign(
        self,
        digest: bytes,
        hash_algorithm: hashes.HashAlgorithm,
        pin_provider: PinProvider,
    ) -> SignResult:
        """Sign a digest with the slot 9A key, asking `pin_provider` for the PIN."""
        if len(digest) != hash_algorithm.digest_size:
            raise ValueError("digest length does not match the hash algorithm")
        return self.sign_with(lambda identity: (digest, hash_algorithm), pin_provider)

    def sign_with(
        self,
        prepare: DigestSource,
        pin_provider: PinProvider,
        *,
        pin_pad: PinPad | None = None,
        requester: str | None = None,
    ) -> SignResult:
        """Sign what `prepare(identity)` returns, with the slot 9A key.

        The digest is a function of the card because the hash depends on its key (SHA-384
        for P-384), and asking for the identity first would cost a transaction more.
        With a `pin_pad` whose reader offers secure PIN entry, the reader takes the PIN;
        otherwise `pin_provider` is asked, outside any transaction.
        """
        connection = self._connect()
        try:
            entry = self._cached(connection.insertion_id)
            if entry is None:
                with connection.transaction():
                    session = PivSession(connection)
                    session.select()
                    entry = self._entry(connection, session)
            digest, hash_algorithm = prepare(entry.identity)
            if len(digest) != hash_algorithm.digest_size:
                raise ValueError("digest length does not match the hash algorithm")
            if (
                self._pin_policy is PinPolicy.ONCE_PER_INSERTION
                and entry.pin_verified
                and entry.verified_for == requester
            ):
                signature = self._sign_verified(connection, entry, digest, hash_algorithm)
                if signature is not None:
                    return SignResult(
                        identity=entry.identity, signature=signature, reader=connection.reader
                    )
            if entry.retries_left == 0 and self._still_blocked(connection, entry):
                # Asking would have the person type a PIN (or wait on a PIN pad) that
                # the card can only refuse.
                raise PinBlockedError()
            request = PinRequest(
                reader=connection.reader,
                holder_name=entry.identity.holder_name,
                uuid=entry.identity.uuid,
                retries_left=entry.retries_left,
                requester=requester,
            )
            pad = pin_pad if pin_pad is not None and pin_pad.available(connection) else None
            pin = pin_provider(request) if pad is None else None
            try:
                with connection.transaction():
                    session = PivSession(connection)
                    session.select()
                    if pin is not None:
                        self._verify(entry, functools.partial(session.verify_pin, pin))
                    elif pad is not None:
                        self._verify(entry, functools.partial(pad.verify, connection, request))
                    with self._lock:
                        entry.verified_for = requester
                    signature = session.sign_digest(
                        digest, algorithm=entry.identity.algorithm, hash_algorithm=hash_algorithm
                    )
            finally:
                if isinstance(pin, bytearray):
                    pin[:] = bytes(len(pin))
            return SignResult(
                identity=entry.identity, signature=signature, reader=connection.reader
            )
        finally:
            connection.close()

    def _sign_verified(
        self,
        connection: CardConnection,
        entry: _Insertion,
        digest: bytes,
        hash_algorithm: hashes.HashAlgorithm,
    ) -> bytes | None:
        """SELECT + GENERAL AUTHENTICATE on a card verified earlier in this insertion;
        None when the card has since lost the PIN state (reset by another program)."""
        with connection.transaction():
            session = PivSession(connection)
            session.select()
            try:
                return session.sign_digest(
                    digest, algorithm=entry.identity.algorithm, hash_algorithm=hash_algorithm
                )
            except SecurityStatusError:
                log.info("the card no longer has the PIN verified; asking again")
                with self._lock:
                    entry.pin_verified = False
                return None

    def _still_blocked(self, connection: CardConnection, entry: _Insertion) -> bool:
        """Whether the PIN this insertion last saw blocked is blocked still (SELECT +
        VERIFY status, no PIN): a Registration Authority may unblock a card left in."""
        with connection.transaction():
            session = PivSession(connection)
            session.select()
            pin = session.pin_status()
        with self._lock:
            entry.retries_left = pin.retries_left
            entry.pin_verified = pin.verified
        return pin.retries_left == 0

    def _verify(self, entry: _Insertion, verify: Callable[[], None]) -> None:
        try:
            verify()
        except WrongPinError as exc:
            with self._lock:
                entry.retries_left = exc.retries_left
                entry.pin_verified = False
            raise
        except PinBlockedError:
            with self._lock:
                entry.retries_left = 0
                entry.pin_verified = False
            raise
        with self._lock:
            entry.retries_left = None
            entry.pin_verified = True
