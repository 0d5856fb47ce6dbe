"""LinkSigner: signed, expiring, purpose-bound link tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nachfass.core.links import InvalidToken, LinkSigner

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SIGNER = LinkSigner("test-signing-key-0123456789abcdef")
DATA = {"cart_id": "K-77812", "customer_id": "C1001"}


def test_roundtrip() -> None:
    token = SIGNER.sign("cart", DATA, NOW + timedelta(days=14))
    assert SIGNER.verify(token, "cart", NOW) == DATA
    assert SIGNER.verify(token, "cart", NOW + timedelta(days=13, hours=23)) == DATA


def test_expired_refused() -> None:
    token = SIGNER.sign("cart", DATA, NOW + timedelta(days=14))
    with pytest.raises(InvalidToken, match="expired"):
        SIGNER.verify(token, "cart", NOW + timedelta(days=14, seconds=1))


def test_wrong_purpose_refused() -> None:
    token = SIGNER.sign("unsubscribe", {"email": "a@example.org"}, NOW + timedelta(days=1))
    with pytest.raises(InvalidToken, match="not 'cart'"):
        SIGNER.verify(token, "cart", NOW)


def test_tampered_refused() -> None:
    token = SIGNER.sign("cart", DATA, NOW + timedelta(days=1))
    body, mac = token.split(".")
    forged = SIGNER.sign("cart", {**DATA, "cart_id": "K-1"}, NOW + timedelta(days=1)).split(".")[0]
    for bad in (f"{forged}.{mac}", f"{body}.{mac[:-1]}", body, "", "a.b.c", f"{body}.{mac}x"):
        with pytest.raises(InvalidToken):
            SIGNER.verify(bad, "cart", NOW)


def test_other_key_refused() -> None:
    token = LinkSigner("another-key-0123456789abcdef").sign("cart", DATA, NOW + timedelta(days=1))
    with pytest.raises(InvalidToken, match="signature"):
        SIGNER.verify(token, "cart", NOW)


def test_unknown_purpose_and_short_key() -> None:
    with pytest.raises(ValueError):
        SIGNER.sign("admin", DATA, NOW)
    with pytest.raises(ValueError):
        LinkSigner("short")
    assert "key" not in repr(SIGNER).replace("key=***", "")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
purposes = st.sampled_from(["cart", "checkout", "unsubscribe", "objection", "preferences"])


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(st.text(max_size=12), json_values, max_size=6), purpose=purposes)
def test_any_data_roundtrips(data: dict, purpose: str) -> None:
    token = SIGNER.sign(purpose, data, NOW + timedelta(days=1))
    assert SIGNER.verify(token, purpose, NOW) == data


_TOKEN = SIGNER.sign("unsubscribe", {"email": "kunde@example.org", "send_id": "s_1"}, NOW + timedelta(days=1))
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(_TOKEN) - 1), char=st.sampled_from(_ALPHABET))
def test_any_single_character_change_refused(position: int, char: str) -> None:
    if _TOKEN[position] == char:
        return
    changed = _TOKEN[:position] + char + _TOKEN[position + 1 :]
    with pytest.raises(InvalidToken):
        SIGNER.verify(changed, "unsubscribe", NOW)


# ---- opaque unsubscribe/objection tokens ----

OPT_OUT = {"email": "anna.schmidt@example.org", "customer_id": "C0001234", "send_id": "s_1", "campaign": "x"}


def _legacy_token(key: str, purpose: str, data: dict, expires: datetime) -> str:
    """A token in the signed format every mail used before the opaque one (docs/templates.md)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"p": purpose, "exp": int(expires.timestamp()), "d": data}
    body = b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{b64(hmac.new(key.encode(), body.encode(), hashlib.sha256).digest()[:20])}"


@pytest.mark.parametrize("purpose", ["unsubscribe", "objection"])
def test_opt_out_tokens_carry_no_readable_personal_data(purpose: str) -> None:
    import base64

    token = SIGNER.sign(purpose, OPT_OUT, NOW + timedelta(days=730))
    assert SIGNER.verify(token, purpose, NOW) == OPT_OUT
    assert "." not in token and len(token) < 260
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret in ("anna", "schmidt", "example", "c0001234"):
        assert secret.encode() not in raw.lower() and secret not in token.lower()
    # deterministic: the same mail gets the same link when it is rendered again after a crash
    assert SIGNER.sign(purpose, OPT_OUT, NOW + timedelta(days=730)) == token


def test_opaque_token_bound_to_purpose_and_key() -> None:
    token = SIGNER.sign("unsubscribe", OPT_OUT, NOW + timedelta(days=1))
    with pytest.raises(InvalidToken, match="for 'unsubscribe', not 'objection'"):
        SIGNER.verify(token, "objection", NOW)
    with pytest.raises(InvalidToken):
        SIGNER.verify(token, "cart", NOW)
    with pytest.raises(InvalidToken, match="signature"):
        LinkSigner("another-key-0123456789abcdef").verify(token, "unsubscribe", NOW)
    with pytest.raises(InvalidToken, match="expired"):
        SIGNER.verify(token, "unsubscribe", NOW + timedelta(days=2))


def test_old_signed_opt_out_tokens_still_honoured() -> None:
    key = "test-signing-key-0123456789abcdef"
    old = _legacy_token(key, "unsubscribe", OPT_OUT, NOW + timedelta(days=730))
    assert SIGNER.verify(old, "unsubscribe", NOW) == OPT_OUT
    with pytest.raises(InvalidToken, match="not 'objection'"):
        SIGNER.verify(old, "objection", NOW)
    forged = _legacy_token("an-attacker-key-0123456789", "unsubscribe", OPT_OUT, NOW + timedelta(days=1))
    with pytest.raises(InvalidToken, match="signature"):
        SIGNER.verify(forged, "unsubscribe", NOW)


def test_shop_tokens_stay_in_the_documented_signed_format() -> None:
    """Cart, checkout, order and review links are verified by the shop with HMAC (docs/templates.md)."""
    key = "test-signing-key-0123456789abcdef"
    for purpose, data in (("cart", DATA), ("order", {"order_id": "100234"}), ("review", {"order_id": "1"})):
        token = SIGNER.sign(purpose, data, NOW + timedelta(days=1))
        assert token == _legacy_token(key, purpose, data, NOW + timedelta(days=1))
