"""Bidi overrides and other invisible format characters (Unicode category Cf) never reach a mail.

A name like ``"Erika\\u202egnp.exe"`` reads as something else once a mail client applies the override; the
same characters in a product name can disguise a subject. They are stripped where customer text enters
the renderer (``formatting.clean_text``), so To display names, subjects, HTML and text agree.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nachfass.core.links import LinkSigner
from nachfass.core.mail.formatting import clean_text
from nachfass.core.mail.render import MailRenderer, sample_jobs
from nachfass.core.shop import load_shop_settings

INVISIBLE = (
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"
)


def _has_format_char(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cf" for ch in text)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
@settings(max_examples=300)
def test_clean_text_leaves_no_format_or_control_characters(value: str) -> None:
    cleaned = clean_text(value)
    assert not _has_format_char(cleaned)
    assert "\r" not in cleaned and "\n" not in cleaned and "\x00" not in cleaned


def test_visible_text_is_kept() -> None:
    assert clean_text("Jörg\u202e Mül\u200bler\u2066") == "Jörg Müller"
    assert clean_text("Rosenschere \u201eProfi\u201c – 2 m") == "Rosenschere \u201eProfi\u201c – 2 m"


@pytest.fixture(scope="module")
def renderer() -> MailRenderer:
    return MailRenderer(
        load_shop_settings(),
        LinkSigner("test-signing-key-0123456789abcdef"),
        now=datetime(2026, 11, 22, 12, tzinfo=UTC),
    )


def _with_names(job, first: str, last: str, product: str):
    payload = dict(job.payload)
    if payload.get("items"):
        payload["items"] = [{**item, "name": product} for item in payload["items"]]
    return replace(job, first_name=first, last_name=last, salutation=None, payload=payload)


def test_format_characters_leave_no_trace_in_display_name_subject_html_or_text(
    renderer: MailRenderer,
) -> None:
    """The same mails rendered from hostile and from clean data are identical (the templates' own preheader
    padding uses U+200C on purpose, so the comparison is with a clean rendering, not a character scan)."""
    hostile = [
        _with_names(j, f"Erika{INVISIBLE}", "\u202eMuster\u2069frau", f"{INVISIBLE}Gartenschere{INVISIBLE}")
        for j in sample_jobs()
    ]
    clean = [_with_names(j, "Erika", "Musterfrau", "Gartenschere") for j in sample_jobs()]
    for bad, good in zip(renderer.render_batch(hostile), renderer.render_batch(clean), strict=True):
        assert bad.to_name == good.to_name == "Erika Musterfrau"
        assert (bad.subject, bad.html, bad.text) == (good.subject, good.html, good.text)
        assert not _has_format_char(bad.subject)
    assert any("Gartenschere" in m.subject for m in renderer.render_batch(hostile))
