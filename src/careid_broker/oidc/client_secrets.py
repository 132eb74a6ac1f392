"""Client secrets: random when made, stored only as a salted scrypt hash.

The encoded form is `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>` (salt and hash base64url,
no padding), so the cost can be raised later without breaking existing entries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

SCHEME = "scrypt"
DEFAULT_LOG2_N = 14  # N = 16384, r = 8: 16 MiB and some tens of milliseconds per check
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Bounds on what a stored entry may ask for: an edited clients.toml must not be able
# to make every token request allocate gigabytes.
_MAX_LOG2_N = 20
_MAX_R = 16
_MAX_P = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class SecretHash:
    """A parsed `scrypt$…` entry."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, *, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        secret.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * r * n + (1 << 20),
        dklen=HASH_BYTES,
    )


def new_client_secret() -> str:
    """A fresh client secret (256 bits from the OS CSPRNG)."""
    return secrets.token_urlsafe(32)


def hash_secret(
    secret: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """The `scrypt$…` entry to put in clients.toml as `secret_hash`."""
    if not secret:
        raise ValueError("an empty client secret cannot be hashed")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(secret, salt=salt, log2_n=log2_n, r=r, p=p)
    return f"{SCHEME}${log2_n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_secret_hash(encoded: str) -> SecretHash:
    """Parse an entry; ValueError names what is wrong (never echoing the value)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("must look like scrypt$14$8$1$<salt>$<hash> (see clients hash-secret)")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ValueError("has a malformed number, salt or hash") from None
    if not (10 <= log2_n <= _MAX_LOG2_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise ValueError("has scrypt parameters outside the accepted range")
    if len(salt) < 8 or len(digest) != HASH_BYTES:
        raise ValueError("has a salt or hash of the wrong length")
    return SecretHash(log2_n=log2_n, r=r, p=p, salt=salt, digest=digest)


class _VerifiedSecrets:
    """Secrets that already verified in this process, kept only as a keyed hash.

    A confidential client presents the same secret at every token request; paying
    scrypt each time would cost a busy broker a good share of a CPU. A success is
    remembered as HMAC(process key, entry, secret) — never the secret — so a repeat
    is a fast exact match. Failures are never cached: guessing always pays full price.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._key = secrets.token_bytes(32)
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def _tag(self, secret: str, entry: SecretHash) -> bytes:
        material = entry.salt + entry.digest + secret.encode("utf-8")
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def known(self, secret: str, entry: SecretHash) -> bool:
        tag = self._tag(secret, entry)
        with self._lock:
            if tag in self._seen:
                self._seen.move_to_end(tag)
                return True
        return False

    def remember(self, secret: str, entry: SecretHash) -> None:
        tag = self._tag(secret, entry)
        with self._lock:
            self._seen[tag] = None
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)


_verified = _VerifiedSecrets()


def verify_secret(secret: str, entry: SecretHash) -> bool:
    """Whether the presented secret matches the stored hash (constant-time compare)."""
    if not secret:
        return False
    if _verified.known(secret, entry):
        return True
    candidate = _scrypt(secret, salt=entry.salt, log2_n=entry.log2_n, r=entry.r, p=entry.p)
    matched = hmac.compare_digest(candidate, entry.digest)
    if matched:
        _verified.remember(secret, entry)
    return matched
