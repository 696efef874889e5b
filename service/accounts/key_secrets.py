"""API keys' secrets: generation and hashing (no HTTP: the request path's
authentication and the account-share middleware use it as they are).

A key is `psk_` followed by 43 URL-safe characters (256 random bits). Only its
SHA-256 digest is stored: a key has full entropy, so a fast hash is enough and a
lookup by digest reveals nothing about other keys. The first 12 characters are
kept in clear as the key's visible prefix, to tell keys apart in lists.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "psk_"
PREFIX_LENGTH = 12
_KEY_LENGTH = len(KEY_PREFIX) + 43


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def visible_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def looks_like_key(value: str) -> bool:
    """A cheap shape check before any database work."""
    return len(value) == _KEY_LENGTH and value.startswith(KEY_PREFIX) and value.isascii()
