"""Signed, expiring link tokens (HMAC-SHA256) for cart restore, checkout, unsubscribe and objection links.

A token is ``<base64url(json claims)>.<base64url(hmac)>``. The claims carry the purpose (so an unsubscribe
token cannot be replayed as a cart token), the data the link needs and an expiry (unix seconds).
The key comes from the environment (``NACHFASS_LINK_SIGNING_KEY``) through the ``LinkSignerResource``;
this module never reads the environment itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

PURPOSES = frozenset({"cart", "checkout", "unsubscribe", "objection", "preferences"})


class InvalidToken(ValueError):
    """The token is malformed, tampered with, for another purpose, or expired."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padding = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text + padding)


class LinkSigner:
    def __init__(self, key: bytes | str) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        if len(key_bytes) < 16:
            raise ValueError("the link-signing key must be at least 16 bytes (NACHFASS_LINK_SIGNING_KEY)")
        self._key = key_bytes

    def __repr__(self) -> str:  # never show the key
        return "LinkSigner(key=***)"

    def _mac(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:20])

    def sign(self, purpose: str, data: dict[str, Any], expires_at: datetime) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown link purpose {purpose!r}")
        claims = {"p": purpose, "exp": int(expires_at.timestamp()), "d": data}
        body = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, purpose: str, now: datetime) -> dict[str, Any]:
        """Return the token's data, or raise ``InvalidToken`` saying why (never echoing the key)."""
        try:
            body, mac = token.split(".")
        except (ValueError, AttributeError):
            raise InvalidToken("malformed token") from None
        if not (body.isascii() and mac.isascii()):  # tokens are base64url; anything else is not one
            raise InvalidToken("malformed token")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidToken("bad signature")
        try:
            claims = json.loads(_b64decode(body))
        except (ValueError, UnicodeDecodeError):
            raise InvalidToken("malformed token") from None
        if claims.get("p") != purpose:
            raise InvalidToken(f"token is for {claims.get('p')!r}, not {purpose!r}")
        if int(claims.get("exp", 0)) < now.timestamp():
            raise InvalidToken("token expired")
        return dict(claims.get("d") or {})
