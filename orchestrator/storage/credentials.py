"""Node credentials: random tokens handed out once, stored only as salted hashes.

A credential is 32 random bytes, so a fast hash is enough (there is no dictionary to attack, unlike
passwords); the salt keeps equal tokens from having equal hashes and the comparison runs in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_SCHEME = "sha256"
_TOKEN_BYTES = 32
_SALT_BYTES = 16


def new_credential() -> str:
    """A fresh credential to hand to a node (URL-safe text)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def hash_credential(credential: str) -> str:
    """``sha256$<salt hex>$<digest hex>``: what the registry stores."""
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"{_SCHEME}${salt.hex()}${_digest(salt, credential).hex()}"


def verify_credential(credential: str, stored_hash: str) -> bool:
    """Whether ``credential`` hashes to ``stored_hash``; ``False`` for a malformed stored hash."""
    parts = stored_hash.split("$")
    if len(parts) != 3 or parts[0] != _SCHEME:
        return False
    try:
        salt = bytes.fromhex(parts[1])
        expected = bytes.fromhex(parts[2])
    except ValueError:
        return False
    return hmac.compare_digest(_digest(salt, credential), expected)


def _digest(salt: bytes, credential: str) -> bytes:
    return hashlib.sha256(salt + credential.encode("utf-8")).digest()
