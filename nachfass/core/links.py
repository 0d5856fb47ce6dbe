"""Signed, expiring link tokens for the links in the mails: cart restore, checkout, order status and
returns, product ratings, unsubscribe and objection.

Two token formats, both URL-safe (only ``A–Z a–z 0–9 - _ .``):

* **signed** ``<base64url(json claims)>.<base64url(hmac-sha256)>``: the claims carry the purpose (so an
  unsubscribe token cannot be replayed as a cart token), the data the link needs and an expiry (unix
  seconds). Readable by whoever has the URL, so only for links that carry ids, never personal data: the
  shop verifies these itself (cart, checkout, order, review; docs/templates.md describes the scheme).
* **opaque** ``<base64url(AES-SIV(json claims))>`` (no dot): encrypted and authenticated, the purpose
  bound in as associated data. Used for unsubscribe and objection links, whose data includes the
  recipient's address: such URLs end up in proxy logs and click tracking, so they must not show it.
  AES-SIV is deterministic (same mail, same token) and needs no nonce that could be reused by mistake.

``verify`` accepts both formats for every purpose, so unsubscribe links in mails sent before the opaque
format existed keep working until they expire. Both keys derive from one secret
(``NACHFASS_LINK_SIGNING_KEY``, read by ``LinkSignerResource``); this module never reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PURPOSES = frozenset({"cart", "checkout", "order", "review", "unsubscribe", "objection", "preferences"})
# Purposes whose data names a person (the address): their tokens are encrypted, not just signed.
OPAQUE_PURPOSES = frozenset({"unsubscribe", "objection", "preferences"})
_OPAQUE_KEY_INFO = b"nachfass link tokens v2: AES-SIV-512"


class InvalidToken(ValueError):
    """The token is malformed, tampered with, for another purpose, or expired."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padding = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text + padding)


def _canonical_b64decode(text: str) -> bytes:
    """Decode base64url, refusing every spelling but the one ``_b64encode`` writes: otherwise a changed
    last character (unused bits) or a '+' for '-' would decode to the same bytes and pass."""
    try:
        raw = _b64decode(text)
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if _b64encode(raw) != text:
        raise InvalidToken("malformed token")
    return raw


class LinkSigner:
    def __init__(self, key: bytes | str) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        if len(key_bytes) < 16:
            raise ValueError("the link-signing key must be at least 16 bytes (NACHFASS_LINK_SIGNING_KEY)")
        self._key = key_bytes
        # A separate key for encryption, derived from the same secret (one variable to manage).
        derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_OPAQUE_KEY_INFO).derive(
            key_bytes
        )
        self._siv = AESSIV(derived)

    def __repr__(self) -> str:  # never show the key
        return "LinkSigner(key=***)"

    def __reduce__(self):
        # to a render worker (render_pool.py) over the pool's pipe; the derived cipher is built there again
        return (LinkSigner, (self._key,))

    def same_key(self, other: LinkSigner) -> bool:
        """Whether ``other`` signs with this key (its links and tokens are the same)."""
        return hmac.compare_digest(self._key, other._key)

    def _mac(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:20])

    def sign(self, purpose: str, data: dict[str, Any], expires_at: datetime) -> str:
        """A token for ``purpose``: opaque for the purposes in ``OPAQUE_PURPOSES``, else signed."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown link purpose {purpose!r}")
        expiry = int(expires_at.timestamp())
        if purpose in OPAQUE_PURPOSES:
            plain = json.dumps({"exp": expiry, "d": data}, separators=(",", ":"), sort_keys=True)
            return _b64encode(self._siv.encrypt(plain.encode("utf-8"), [purpose.encode("ascii")]))
        claims = {"p": purpose, "exp": expiry, "d": data}
        body = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, purpose: str, now: datetime) -> dict[str, Any]:
        """Return the token's data, or raise ``InvalidToken`` saying why (never echoing the key)."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("malformed token")
        claims = self._open(token, purpose) if "." not in token else self._check_signed(token)
        if claims.get("p", purpose) != purpose:
            raise InvalidToken(f"token is for {claims.get('p')!r}, not {purpose!r}")
        if int(claims.get("exp", 0)) < now.timestamp():
            raise InvalidToken("token expired")
        return dict(claims.get("d") or {})

    def _check_signed(self, token: str) -> dict[str, Any]:
        try:
            body, mac = token.split(".")
        except ValueError:
            raise InvalidToken("malformed token") from None
        if not (body.isascii() and mac.isascii()):  # tokens are base64url; anything else is not one
            raise InvalidToken("malformed token")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidToken("bad signature")
        try:
            claims = json.loads(_b64decode(body))
        except (ValueError, UnicodeDecodeError):
            raise InvalidToken("malformed token") from None
        if not isinstance(claims, dict) or "p" not in claims:
            raise InvalidToken("malformed token")
        return claims

    def _open(self, token: str, purpose: str) -> dict[str, Any]:
        raw = _canonical_b64decode(token)
        plain = self._decrypt(raw, purpose)
        if plain is None:
            # The purpose is authenticated data: a token for another purpose fails like a forged one.
            # Say which, if it is one of ours, so a misrouted link is easy to diagnose.
            other = next((p for p in sorted(OPAQUE_PURPOSES - {purpose}) if self._decrypt(raw, p)), None)
            if other:
                raise InvalidToken(f"token is for {other!r}, not {purpose!r}")
            raise InvalidToken("bad signature")
        try:
            claims = json.loads(plain)
        except (ValueError, UnicodeDecodeError):
            raise InvalidToken("malformed token") from None
        if not isinstance(claims, dict):
            raise InvalidToken("malformed token")
        return claims

    def _decrypt(self, raw: bytes, purpose: str) -> bytes | None:
        try:
            return self._siv.decrypt(raw, [purpose.encode("ascii")])
        except (InvalidTag, ValueError):
            return None


ENV_LINK_SIGNING_KEY = "NACHFASS_LINK_SIGNING_KEY"
# Previews and the experiment check sign sample mails with this throwaway key, never the production key.
PREVIEW_SIGNING_KEY = "nachfass-preview-only-key-not-valid-in-production"
# Used only when NACHFASS_LINK_SIGNING_KEY is unset, so the demo runs on a fresh machine. Links signed with
# it are worthless outside a demo; the run log says so loudly.
DEVELOPMENT_LINK_KEY = "nachfass-development-only-link-key-do-not-use-in-production"


def signer_from_env(key_env: str = ENV_LINK_SIGNING_KEY) -> LinkSigner:
    """The signer for the key in the environment variable named here (the development key without one)."""
    import os

    return LinkSigner(os.environ.get(key_env) or DEVELOPMENT_LINK_KEY)
