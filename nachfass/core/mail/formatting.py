"""Locale handling, money/date formatting, salutations and the small sanitisers the renderer relies on.

Formatting goes through babel (CLDR data) so that ``49,90 €`` / ``22. November 2026`` (de-DE) and
``€49.90`` / ``22 November 2026`` (en-GB) come out right for every locale babel knows. Results are
cached: a batch formats the same prices and dates over and over, and babel's pattern handling costs
more than the rest of a mail's context.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as _babel_format_date

# Template languages that exist under mail_templates/<lang>/; the first is the fallback of last resort.
TEMPLATE_LANGUAGES: tuple[str, ...] = ("de", "en")

# A bare language tag gets the region whose conventions our shops' customers expect
# ("en" alone would give US dates, "November 22, 2026", for a European shop).
_DEFAULT_REGION = {"de": "de_DE", "en": "en_GB"}

NBSP = "\u00a0"
_STRAIGHT_QUOTED = re.compile(r'"([^"\n]+)"')
# Typographic quotes per template language: „…“ in German, “…” in English.
_QUOTES = {"de": ("\u201e", "\u201c"), "en": ("\u201c", "\u201d")}
# content_unit (export contract) → (factor to the unit the unit price is quoted in, that unit's label).
_BASE_UNITS: dict[str, tuple[Decimal, str]] = {
    "g": (Decimal("0.001"), "kg"),
    "kg": (Decimal(1), "kg"),
    "ml": (Decimal("0.001"), "l"),
    "l": (Decimal(1), "l"),
    "cm": (Decimal("0.01"), "m"),
    "m": (Decimal(1), "m"),
    "m2": (Decimal(1), "m²"),
    "m3": (Decimal(1), "m³"),
}

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


def template_language(locale: str | None, default_locale: str) -> str:
    """de-DE/de-AT/de-CH → 'de', en-* → 'en'; anything else → the shop's default language."""
    for candidate in (locale, default_locale):
        lang = (candidate or "").replace("_", "-").split("-")[0].strip().lower()
        if lang in TEMPLATE_LANGUAGES:
            return lang
    return TEMPLATE_LANGUAGES[0]


@lru_cache(maxsize=256)
def babel_locale(locale: str | None, default_locale: str) -> str:
    """The babel locale used for numbers and dates: the recipient's own locale when babel knows it and it
    matches the template language (a German mail gets German month names even for an odd locale)."""
    lang = template_language(locale, default_locale)
    for candidate in (locale, default_locale):
        tag = (candidate or "").replace("-", "_").strip()
        if not tag or tag.split("_")[0].lower() != lang:
            continue
        if "_" not in tag:
            tag = _DEFAULT_REGION.get(tag.lower(), tag)
        try:
            return str(Locale.parse(tag))
        except (UnknownLocaleError, ValueError):
            continue
    return _DEFAULT_REGION[lang]


def _to_decimal(amount: Any) -> Decimal:
    if isinstance(amount, Decimal):
        return amount
    try:
        # str() first: Decimal(49.9) would carry the binary float error into rounding.
        return Decimal(str(amount))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a number: {amount!r}") from exc


@lru_cache(maxsize=64)
def _currency_pattern(locale: str) -> tuple[Locale, Any]:
    parsed = Locale.parse(locale)
    return parsed, parsed.currency_formats["standard"]


@lru_cache(maxsize=65536)
def _money_cached(amount: str, currency: str, locale: str) -> str:
    # Same result as babel.numbers.format_currency, without re-parsing locale and pattern on every call.
    parsed, pattern = _currency_pattern(locale)
    return pattern.apply(Decimal(amount), parsed, currency=currency, currency_digits=True)


def format_money(amount: Any, currency: str, locale: str) -> str:
    """``49,90 €`` for de_DE, ``€49.90`` for en_GB. ``amount`` may be a number or a numeric string."""
    if amount is None:
        raise ValueError("missing amount")
    return _money_cached(str(_to_decimal(amount)), (currency or "").upper(), locale)


def parse_timestamp(value: Any, tz: ZoneInfo) -> datetime:
    """ISO timestamp (or date) → aware datetime in the shop's zone; naive values are shop-local time."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return dt.replace(tzinfo=tz) if dt.tzinfo is None else dt.astimezone(tz)


@lru_cache(maxsize=4096)
def _date_cached(day: date, locale: str) -> str:
    # No-break spaces: "22. November 2026" must not wrap after the day in a narrow column.
    return _babel_format_date(day, format="long", locale=locale).replace(" ", NBSP)


def format_date(value: Any, locale: str, tz: ZoneInfo) -> str:
    """``22. November 2026`` (de) / ``22 November 2026`` (en_GB), the calendar day in the shop's zone,
    with no-break spaces."""
    return _date_cached(parse_timestamp(value, tz).date(), locale)


def clean_text(value: Any) -> str:
    """One line of customer-entered text: invisible format characters (bidi overrides, zero-width
    characters …) are removed, control characters (CR, LF, NUL …) become spaces, runs of whitespace
    collapse. The one sanitiser for names, product names and everything that ends up in a header or
    subject, so To display names, subjects, HTML and text all see the same clean value."""
    if value is None:
        return ""
    if isinstance(value, str) and value.isprintable() and "  " not in value:
        # Fast path (most values): isprintable() is False for CR, LF, TAB, NUL, U+2028 and every Cf character
        return value.strip(" ")
    # Invisible format characters (Unicode category Cf): bidi embeddings, overrides and isolates
    # (U+202A–U+202E, U+2066–U+2069) make a name or subject read differently from what it is, zero-width
    # characters hide text from people and filters. Only values that failed the fast path get here.
    text = "".join(ch for ch in str(value) if unicodedata.category(ch) != "Cf")
    return _SPACES.sub(" ", _CONTROL_CHARS.sub(" ", text)).strip()


def header_safe(value: str, max_length: int = 250) -> str:
    """A header value (subject, display name): single line, bounded length."""
    text = clean_text(value)
    if len(text) > max_length:
        text = text[: max_length - 1].rstrip() + "…"
    return text


def safe_url(value: Any) -> str | None:
    """An http(s) URL from payload data, or None: a ``javascript:`` or ``data:`` URL from a product feed
    must never reach an href or src."""
    text = clean_text(value)
    if not text:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return text


def display_name(first_name: str | None, last_name: str | None) -> str | None:
    """ "Vorname Nachname" for the To header, or None when no name is known."""
    name = " ".join(part for part in (clean_text(first_name), clean_text(last_name)) if part)
    return header_safe(name, 120) or None


_GENDERED = {
    "de": {"frau": "Frau", "herr": "Herr"},
    "en": {"frau": "Ms", "herr": "Mr"},
}
_GREETING = {"de": ("Guten Tag", "Guten Tag,"), "en": ("Dear", "Hello,")}


def salutation_line(lang: str, salutation: str | None, first_name: str | None, last_name: str | None) -> str:
    """The greeting line, unescaped (the template escapes it).

    de: "Guten Tag Frau Schmidt," / "Guten Tag Herr Müller,"; salutation 'divers' or unknown with a full
    name → "Guten Tag Kim Schmidt,"; name incomplete → "Guten Tag,".
    en: "Dear Ms Schmidt," / "Dear Mr Müller," / "Dear Kim Schmidt," / "Hello,".
    """
    lang = lang if lang in _GREETING else TEMPLATE_LANGUAGES[0]
    lead, neutral = _GREETING[lang]
    first, last = clean_text(first_name), clean_text(last_name)
    title = _GENDERED[lang].get(clean_text(salutation).lower())
    if title and last:
        return f"{lead} {title} {last},"
    if first and last:
        return f"{lead} {first} {last},"
    return neutral


def typographic_quotes(text: str, lang: str) -> str:
    """Pairs of straight double quotes in shop data ('Hochbeet "Terra"') become the language's own
    quotation marks ('Hochbeet „Terra“'), so they match the quotes of the mail copy around them."""
    if '"' not in text:
        return text
    opening, closing = _QUOTES.get(lang, _QUOTES[TEMPLATE_LANGUAGES[0]])
    return _STRAIGHT_QUOTED.sub(lambda m: f"{opening}{m.group(1)}{closing}", text)


def no_break(text: str) -> str:
    """Spaces → no-break spaces, for short values that must stay on one line (a phone number)."""
    return clean_text(text).replace(" ", NBSP)


def unit_price(price: Any, content_amount: Any, content_unit: Any, money: Any) -> str | None:
    """The unit price (Grundpreis, PAngV § 5) of a product with a net content, e.g. ``0,37 € / 1 l`` for
    14,90 € and 40 l; per 1 kg, 1 l, 1 m, 1 m² or 1 m³. None when the product has no (valid) content.

    ``money`` formats an amount in the mail's locale and currency.
    """
    if price in (None, "") or content_amount in (None, "") or content_unit not in _BASE_UNITS:
        return None
    try:
        amount = _to_decimal(content_amount) * _BASE_UNITS[content_unit][0]
        value = _to_decimal(price) / amount
    except (ValueError, ArithmeticError):
        return None
    if amount <= 0:
        return None
    return f"{money(value.quantize(Decimal('0.01')))}{NBSP}/{NBSP}1{NBSP}{_BASE_UNITS[content_unit][1]}"
