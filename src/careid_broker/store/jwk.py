"""Public JWKs (RFC 7517/7518) and their thumbprints (RFC 7638) for the OP's keys."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def b64url_uint(value: int, length: int | None = None) -> str:
    """An unsigned big-endian integer, base64url without padding (RFC 7518 §2)."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def public_jwk_members(key: PublicKey) -> dict[str, str]:
    """The required members of a public JWK (exactly those RFC 7638 hashes)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
    if isinstance(key.curve, ec.SECP256R1):
        point = key.public_numbers()
        # Coordinates are fixed-length (32 bytes for P-256), RFC 7518 §6.2.1.2.
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_uint(point.x, 32),
            "y": b64url_uint(point.y, 32),
        }
    raise ValueError(f"unsupported curve {key.curve.name}")


def thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members, sorted, no whitespace."""
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(key: PublicKey, *, alg: str) -> dict[str, Any]:
    """The JWK as published in the JWKS, its `kid` being its thumbprint."""
    members = public_jwk_members(key)
    return {**members, "kid": thumbprint(members), "alg": alg, "use": "sig"}
