"""LinkSigner: signed, expiring, purpose-bound link tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_project.links import InvalidToken, LinkSigner

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
