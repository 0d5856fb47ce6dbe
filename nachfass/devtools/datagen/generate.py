"""Sample shop data generator: writes every table of the export contract (docs/datagen.md).

Two files per table folder:

- ``scenarios.csv``: hand-shaped scenario customers ``C0000001`` … (see ``scenarios.py``), one per campaign
  trigger and skip reason, with times relative to ``as_of``, so even a tiny sample has every case;
- ``shop.csv``: the bulk shop, generated entirely in DuckDB SQL from ``range()`` with hash-based
  pseudo-randomness (``hash(key, salt, seed)``): no Python loop per row, and the same inputs give
  byte-identical files (insertion order is preserved, no ``random()``).

Internally timestamps are UTC epoch seconds and money is integer cents; they are formatted only when
written, so scenario and bulk rows share one writer.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from nachfass.devtools.datagen import vocab
from nachfass.devtools.datagen.scenarios import build_scenarios

DEFAULT_AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DAY = 86400

# Column order and types exactly as in the export contract (spec/exports.md).
SCHEMA: dict[str, list[tuple[str, str]]] = {
    "customers": [
        ("customer_id", "str"),
        ("email", "str"),
        ("first_name", "str"),
        ("last_name", "str"),
        ("salutation", "str"),
        ("locale", "str"),
        ("timezone", "str"),
        ("is_guest", "bool"),
        ("created_at", "ts"),
        ("updated_at", "ts"),
    ],
    "consents": [
        ("consent_event_id", "str"),
        ("customer_id", "str"),
        ("email", "str"),
        ("purpose", "str"),
        ("event", "str"),
        ("source", "str"),
        ("occurred_at", "ts"),
    ],
    "session_events": [
        ("event_id", "str"),
        ("session_id", "str"),
        ("customer_id", "str"),
        ("is_logged_in", "bool"),
        ("event_type", "str"),
        ("cart_id", "str"),
        ("product_id", "str"),
        ("quantity", "int"),
        ("unit_price", "dec"),
        ("currency", "str"),
        ("occurred_at", "ts"),
    ],
    "orders": [
        ("order_id", "str"),
        ("customer_id", "str"),
        ("cart_id", "str"),
        ("session_id", "str"),
        ("status", "str"),
        ("total_amount", "dec"),
        ("currency", "str"),
        ("placed_at", "ts"),
        ("updated_at", "ts"),
    ],
    "order_items": [
        ("order_id", "str"),
        ("line_no", "int"),
        ("product_id", "str"),
        ("quantity", "int"),
        ("unit_price", "dec"),
    ],
    "shipments": [
        ("shipment_id", "str"),
        ("order_id", "str"),
        ("carrier", "str"),
        ("tracking_url", "str"),
        ("shipped_at", "ts"),
        ("delivered_at", "ts"),
        ("tracking_number", "str"),
        ("expected_delivery_date", "date"),
    ],
    "products": [
        ("product_id", "str"),
        ("name", "str"),
        ("category", "str"),
        ("price", "dec"),
        ("currency", "str"),
        ("url", "str"),
        ("image_url", "str"),
        ("guide_url", "str"),
        ("in_stock", "bool"),
        ("updated_at", "ts"),
        ("content_amount", "str"),
        ("content_unit", "str"),
    ],
    "support_tickets": [
        ("ticket_id", "str"),
        ("customer_id", "str"),
        ("topic", "str"),
        ("status", "str"),
        ("opened_at", "ts"),
        ("closed_at", "ts"),
        ("updated_at", "ts"),
    ],
}

# How each export writes timestamps, mimicking real systems so the loader sees every legal form:
# the shop backend exports Berlin local time with offset, the tracker and carrier API use UTC "Z",
# the catalogue and the helpdesk export local time without offset (read in the shop's timezone).
TS_STYLE = {
    "customers": "berlin",
    "consents": "berlin",
    "session_events": "utc",
    "orders": "berlin",
    "order_items": "berlin",
    "shipments": "utc",
    "products": "local",
    "support_tickets": "local",
}

# Deliberate contract violations in the bulk, per row (the loader must quarantine them, see docs).
BAD_EMAIL_SHARE = 0.001
BAD_TIMESTAMP_SHARE = 0.0005
BAD_EVENT_TYPE_SHARE = 0.00005

MAX_EVENTS = 13  # per session: browse 1..9, cart sessions 4..13 events
SESSIONS_PER_CUSTOMER = 5.0  # x ~6.3 events per session = ~31 session events per customer


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: Sequence[str | int]) -> str:
    return "[" + ", ".join(_sql_str(v) if isinstance(v, str) else str(v) for v in values) + "]"


def _last_sunday(year: int, month: int) -> int:
    last = calendar.monthrange(year, month)[1]
    day = max(d for d in range(last - 6, last + 1) if calendar.weekday(year, month, d) == 6)
    return int(datetime(year, month, day, 1, 0, tzinfo=UTC).timestamp())


def _berlin_dst_condition(first_year: int, last_year: int) -> str:
    """SQL condition on epoch seconds ``s``: is Europe/Berlin on summer time (EU rule, 01:00 UTC switch)?"""
    spans = [
        f"(s >= {_last_sunday(y, 3)} AND s < {_last_sunday(y, 10)})" for y in range(first_year, last_year + 1)
    ]
    return " OR ".join(spans)


def _create_macros(
    con: duckdb.DuckDBPyConnection, *, seed: int, as_of: int, days: int, n_products: int
) -> None:
    win_start = as_of - days * DAY
    year = datetime.fromtimestamp(as_of, UTC).year
    dst = _berlin_dst_condition(year - 5, year + 1)
    iso = "'%Y-%m-%dT%H:%M:%S'"
    nouns = [p for _, p, _ in vocab.CATALOGUE]
    bases = [b for _, _, b in vocab.CATALOGUE]
    lines = [name for name, _ in vocab.PRODUCT_LINES]
    factors = [f for _, f in vocab.PRODUCT_LINES]
    male, female, last = vocab.MALE_FIRST_NAMES, vocab.FEMALE_FIRST_NAMES, vocab.LAST_NAMES
    themes = "[" + ", ".join(_sql_list([nouns.index(n) + 1 for n in t]) for _, t in vocab.THEMES) + "]"
    macros = f"""
    -- Pseudo-randomness: a pure function of (key, salt, seed). Casting to BIGINT keeps the hash identical
    -- whichever query computes the key, so a customer's attributes agree across tables.
    CREATE MACRO hh(a, b) AS hash(a::BIGINT, b::BIGINT, {seed}::BIGINT);
    CREATE MACRO u(a, b) AS (hh(a, b) >> 11)::DOUBLE / 9007199254740992.0;
    CREATE MACRO ri(a, b, m) AS (hh(a, b) % (m)::UBIGINT)::BIGINT;

    CREATE MACRO fmt_utc(s) AS strftime(make_timestamp(s::BIGINT * 1000000), '%Y-%m-%dT%H:%M:%SZ');
    CREATE MACRO fmt_berlin(s) AS CASE WHEN s IS NULL THEN NULL WHEN {dst}
        THEN strftime(make_timestamp((s::BIGINT + 7200) * 1000000), {iso}) || '+02:00'
        ELSE strftime(make_timestamp((s::BIGINT + 3600) * 1000000), {iso}) || '+01:00' END;
    CREATE MACRO fmt_local(s) AS CASE WHEN s IS NULL THEN NULL WHEN {dst}
        THEN strftime(make_timestamp((s::BIGINT + 7200) * 1000000), {iso})
        ELSE strftime(make_timestamp((s::BIGINT + 3600) * 1000000), {iso}) END;

    -- Products 1..{n_products}: the noun cycles through the catalogue, line and colour vary by hash.
    CREATE MACRO p_id(p) AS printf('P%05d', p);
    CREATE MACRO p_noun_i(p) AS ((p - 1) % {len(nouns)}) + 1;
    CREATE MACRO p_line_i(p) AS 1 + ri(p, 40, {len(lines)});
    CREATE MACRO p_raw(p) AS {_sql_list(bases)}[p_noun_i(p)] * {_sql_list(factors)}[p_line_i(p)] / 100.0;
    CREATE MACRO p_price(p) AS (CASE WHEN p_raw(p) >= 1000 THEN round(p_raw(p) / 100) * 100 - 10
                                     ELSE round(p_raw(p) / 10) * 10 - 1 END)::BIGINT;
    CREATE MACRO p_name(p) AS {_sql_list(nouns)}[p_noun_i(p)] || ' ' || {_sql_list(lines)}[p_line_i(p)]
        || CASE WHEN u(p, 41) < 0.5 THEN ', ' || {_sql_list(vocab.PRODUCT_COLOURS)}[1 + ri(p, 44,
           {len(vocab.PRODUCT_COLOURS)})] ELSE '' END;
    -- Popular products are drawn more often (square of a uniform).
    CREATE MACRO prod(a, s) AS 1 + floor({n_products} * pow(u(a, s), 2))::BIGINT;
    -- Shopping themes (vocab.THEMES): a line of an order or cart is a product of the basket's theme with
    -- probability 0.75 (a popular variant of one of the theme's nouns), else drawn by overall popularity.
    -- Products cycle through the nouns, so noun n is product n, n + {len(nouns)}, n + {2 * len(nouns)}, ...
    CREATE MACRO theme_nouns(t) AS {themes}[t];
    CREATE MACRO theme_prod(t, a, s) AS theme_nouns(t)[1 + ri(a, s + 51, len(theme_nouns(t)))]
        + {len(nouns)} * floor(pow(u(a, s + 52), 2)
            * (({n_products} - theme_nouns(t)[1 + ri(a, s + 51, len(theme_nouns(t)))]) // {len(nouns)} + 1)
        )::BIGINT;
    CREATE MACRO tprod(t, a, s) AS CASE WHEN u(a, s + 50) < 0.75 THEN theme_prod(t, a, s) ELSE prod(a, s) END;
    -- A customer's main and second theme; a basket (key) follows the main one mostly. Anonymous
    -- visitors' baskets get a theme of their own.
    CREATE MACRO c_theme(c) AS 1 + ri(c, 80, {len(vocab.THEMES)});
    CREATE MACRO c_theme2(c) AS 1 + ri(c, 81, {len(vocab.THEMES)});
    CREATE MACRO b_theme(key, c) AS CASE WHEN c IS NULL THEN 1 + ri(key, 83, {len(vocab.THEMES)})
        WHEN u(key, 82) < 0.6 THEN c_theme(c) WHEN u(key, 82) < 0.85 THEN c_theme2(c)
        ELSE 1 + ri(key, 83, {len(vocab.THEMES)}) END;
    CREATE MACRO qty(a, s) AS CASE WHEN u(a, s) < 0.85 THEN 1 ELSE 2 + ri(a, s + 1, 2) END;

    -- Customers (c = 1-based index).
    CREATE MACRO c_id(c) AS printf('C%07d', c);
    CREATE MACRO c_guest(c) AS u(c, 1) < 0.15;
    CREATE MACRO c_noname(c) AS u(c, 3) < 0.04;
    CREATE MACRO c_male(c) AS u(c, 2) < 0.48 OR u(c, 2) >= 0.98;
    CREATE MACRO c_first(c) AS CASE WHEN c_noname(c) THEN NULL WHEN c_male(c)
        THEN {_sql_list(male)}[1 + ri(c, 4, {len(male)})]
        ELSE {_sql_list(female)}[1 + ri(c, 4, {len(female)})] END;
    CREATE MACRO c_first_slug(c) AS CASE WHEN c_male(c)
        THEN {_sql_list([vocab.slug(x) for x in male])}[1 + ri(c, 4, {len(male)})]
        ELSE {_sql_list([vocab.slug(x) for x in female])}[1 + ri(c, 4, {len(female)})] END;
    CREATE MACRO c_last(c) AS CASE WHEN c_noname(c) THEN NULL
        ELSE {_sql_list(last)}[1 + ri(c, 5, {len(last)})] END;
    CREATE MACRO c_last_slug(c) AS {_sql_list([vocab.slug(x) for x in last])}[1 + ri(c, 5, {len(last)})];
    CREATE MACRO c_salutation(c) AS CASE WHEN c_noname(c) OR u(c, 6) < 0.05 THEN NULL
        WHEN u(c, 2) < 0.48 THEN 'Herr' WHEN u(c, 2) < 0.96 THEN 'Frau' ELSE 'divers' END;
    -- Same rule as vocab.email_address(): first.last<number>@<reserved domain>.
    CREATE MACRO c_email(c) AS
        (CASE WHEN c_noname(c) THEN 'kunde' ELSE c_first_slug(c) || '.' || c_last_slug(c) END)
        || c::VARCHAR || '@' || {_sql_list(vocab.EMAIL_DOMAINS)}[1 + ri(c, 8, {len(vocab.EMAIL_DOMAINS)})];
    CREATE MACRO c_bad_email(c) AS u(c, 10) < {BAD_EMAIL_SHARE};
    CREATE MACRO c_broken_email(c) AS [
        c_first_slug(c) || '@', c_first_slug(c) || '.' || c_last_slug(c) || '.example.de',
        c_first_slug(c) || '@@example.de', c_first_slug(c) || ' ' || c_last_slug(c) || '@example.com'
    ][1 + ri(c, 9, 4)];
    CREATE MACRO c_locale(c) AS CASE WHEN u(c, 7) < 0.01 THEN NULL WHEN u(c, 7) < 0.87 THEN 'de-DE'
        WHEN u(c, 7) < 0.93 THEN 'de-AT' WHEN u(c, 7) < 0.97 THEN 'de-CH' ELSE 'en-GB' END;
    CREATE MACRO c_tz(c) AS CASE
        WHEN u(c, 7) < 0.87 THEN (CASE WHEN u(c, 18) < 0.02 THEN NULL ELSE 'Europe/Berlin' END)
        WHEN u(c, 7) < 0.93 THEN 'Europe/Vienna' WHEN u(c, 7) < 0.97 THEN 'Europe/Zurich'
        WHEN u(c, 7) < 0.985 THEN 'Europe/London' ELSE 'America/New_York' END;
    CREATE MACRO c_created(c) AS {win_start - DAY} - floor(u(c, 11) * 1000 * {DAY})::BIGINT;
    -- Order history before the session window (up to ~3 years back): drives reactivation.
    CREATE MACRO c_hist_n(c) AS
        CASE WHEN u(c, 12) < 0.55 THEN 1 + floor(pow(u(c, 13), 2) * 7)::BIGINT ELSE 0 END;
    CREATE MACRO c_gap(c) AS (25 + floor(u(c, 14) * 200))::BIGINT * {DAY};
    CREATE MACRO c_first_order(c) AS
        c_created(c) + floor(u(c, 15) * ({win_start} - c_created(c)) * 0.5)::BIGINT;
    CREATE MACRO h_placed(c, h) AS
        c_first_order(c) + floor(h * c_gap(c) * (0.75 + 0.5 * u(c * 8 + h, 16)))::BIGINT;
    -- Consent pattern: 0 none, 1 requested only, 2 confirmed, 3 confirmed+withdrawn, 4 ... +confirmed again.
    CREATE MACRO c_cp(c) AS CASE WHEN c_bad_email(c) THEN 0
        WHEN c_guest(c) THEN (CASE WHEN u(c, 17) < 0.65 THEN 0 WHEN u(c, 17) < 0.8 THEN 1 ELSE 2 END)
        WHEN u(c, 17) < 0.30 THEN 0 WHEN u(c, 17) < 0.40 THEN 1 WHEN u(c, 17) < 0.80 THEN 2
        WHEN u(c, 17) < 0.86 THEN 3 ELSE 4 END;
    CREATE MACRO t_req(c) AS c_created(c) + floor(u(c, 20) * ({as_of} - c_created(c)) * 0.85)::BIGINT;
    CREATE MACRO t_conf(c) AS t_req(c) + 60 + floor(u(c, 21) * 2 * {DAY})::BIGINT;
    CREATE MACRO t_wd(c) AS t_conf(c) + floor(u(c, 22) * ({as_of} - t_conf(c)) * 0.7)::BIGINT;
    CREATE MACRO t_rec(c) AS t_wd(c) + 60 + floor(u(c, 23) * ({as_of} - t_wd(c)) * 0.9)::BIGINT;
    CREATE MACRO t_freq(c) AS t_conf(c) + 60 + floor(u(c, 24) * ({as_of} - t_conf(c)) * 0.9)::BIGINT;

    -- Order lifecycle from a key and placed_at: the status is whatever the times say at as_of.
    CREATE MACRO o_ship(key, placed) AS placed + 8 * 3600 + floor(u(key, 51) * 40 * 3600)::BIGINT;
    CREATE MACRO o_deliv(key, placed) AS
        o_ship(key, placed) + 20 * 3600 + floor(u(key, 52) * 60 * 3600)::BIGINT;
    CREATE MACRO o_status(key, placed) AS CASE WHEN u(key, 50) < 0.04 THEN 'cancelled'
        WHEN o_ship(key, placed) > {as_of}
            THEN (CASE WHEN placed > {as_of - 1200} THEN 'placed' ELSE 'paid' END)
        WHEN u(key, 53) < 0.07 OR o_deliv(key, placed) > {as_of} THEN 'shipped'
        WHEN u(key, 54) < 0.03 AND o_deliv(key, placed) + 6 * {DAY} < {as_of} THEN 'returned'
        ELSE 'delivered' END;
    """
    con.execute(macros)


def _bulk_queries(
    *, as_of: int, days: int, n: int, k: int, n_products: int, n_sessions: int
) -> dict[str, str]:
    """Inner SELECTs per table (typed: ts = epoch seconds, dec = cents); needs tables ``sess``, ``ord``."""
    nb = n - k
    shop = vocab.SHOP_BASE_URL
    cats = _sql_list([c for c, _, _ in vocab.CATALOGUE])
    guide_slugs = _sql_list([vocab.slug(p) for _, p, _ in vocab.CATALOGUE])
    carriers = _sql_list(vocab.CARRIERS)
    nouns = [noun for _, noun, _ in vocab.CATALOGUE]
    content_amounts = _sql_list([vocab.CONTENTS.get(n, ("",))[0] for n in nouns]).replace("''", "NULL")
    content_units = _sql_list([vocab.CONTENTS.get(n, ("", ""))[1] for n in nouns]).replace("''", "NULL")
    tracking_number = (
        "CASE carrier "
        + " ".join(
            f"WHEN {_sql_str(name)} THEN lpad((hh(key, 57) % (10^{min(digits, 18)})::UBIGINT)::VARCHAR, "
            f"{digits}, '0')"
            for name, digits in vocab.TRACKING_DIGITS.items()
        )
        + " END"
    )
    tracking_url = (
        "CASE carrier "
        + " ".join(
            f"WHEN {_sql_str(name)} THEN replace({_sql_str(url)}, '{{tracking_number}}', tracking_number)"
            for name, url in vocab.CARRIER_TRACKING_URLS.items()
        )
        + " END"
    )
    topics = _sql_list(vocab.TICKET_TOPICS)
    cart_types = "('add_to_cart', 'remove_from_cart', 'checkout_started', 'payment_failed', 'purchase')"
    # One row per (session, event slot); sessions have at most MAX_EVENTS events.
    sessions = _sessions_sql(
        f"SELECT i // {MAX_EVENTS} AS j, i % {MAX_EVENTS} AS kk FROM range({n_sessions * MAX_EVENTS}) t(i)",
        k=k,
        nb=nb,
        as_of=as_of,
        days=days,
        keep="kk < e",
    )
    q: dict[str, str] = {}
    q["products"] = f"""
        SELECT p_id(p) AS product_id, p_name(p) AS name, {cats}[p_noun_i(p)] AS category, p_price(p) AS price,
            'EUR' AS currency, '{shop}/p/' || p_id(p) AS url, '{shop}/img/' || p_id(p) || '.jpg' AS image_url,
            CASE WHEN u(p, 43) < 0.35 THEN '{shop}/ratgeber/' || {guide_slugs}[p_noun_i(p)] END AS guide_url,
            u(p, 42) < 0.92 AS in_stock, {as_of} - floor(u(p, 45) * 60 * {DAY})::BIGINT AS updated_at,
            {content_amounts}[p_noun_i(p)] AS content_amount, {content_units}[p_noun_i(p)] AS content_unit
        FROM range(1, {n_products + 1}) t(p)"""
    q["customers"] = f"""
        SELECT c_id(c) AS customer_id,
            CASE WHEN c_bad_email(c) THEN c_broken_email(c) ELSE c_email(c) END AS email,
            c_first(c) AS first_name, c_last(c) AS last_name, c_salutation(c) AS salutation,
            c_locale(c) AS locale, c_tz(c) AS timezone, c_guest(c) AS is_guest, c_created(c) AS created_at,
            c_created(c) + floor(u(c, 19) * ({as_of} - c_created(c)))::BIGINT AS updated_at
        FROM range({k + 1}, {n + 1}) t(c)"""
    q["consents"] = f"""
        SELECT consent_event_id, customer_id, email, purpose, event, source, occurred_at FROM (
        SELECT 0 AS part, i, 'CE' || i AS consent_event_id, c_id(c) AS customer_id, c_email(c) AS email,
            'marketing_email' AS purpose, event, source, occurred_at
        FROM (
            SELECT i, c, CASE
                WHEN s = 0 AND cp >= 1 THEN 'requested' WHEN s = 1 AND cp >= 2 THEN 'confirmed'
                WHEN s = 2 AND cp >= 3 THEN 'withdrawn' WHEN s = 3 AND cp = 4 THEN 'confirmed'
                WHEN s = 4 AND cp = 2 AND u(c, 29) < 0.08 THEN 'frequency_weekly'
                WHEN s = 5 AND NOT c_bad_email(c) AND c_hist_n(c) > 0 THEN 'objection_notice_given'
                END AS event,
              CASE s WHEN 0 THEN ['newsletter_form', 'checkout', 'account'][1 + ri(c, 25, 3)]
                WHEN 2 THEN ['mail_link', 'support', 'account'][1 + ri(c, 26, 3)]
                WHEN 3 THEN 'account' WHEN 5 THEN 'checkout' ELSE 'mail_link' END AS source,
              CASE s WHEN 0 THEN t_req(c) WHEN 1 THEN t_conf(c) WHEN 2 THEN t_wd(c) WHEN 3 THEN t_rec(c)
                WHEN 4 THEN t_freq(c) ELSE c_first_order(c) END AS occurred_at
            FROM (SELECT i, {k + 1} + i // 6 AS c, i % 6 AS s, c_cp({k + 1} + i // 6) AS cp
                  FROM range({nb * 6}) t(i))
        ) WHERE event IS NOT NULL
        UNION ALL
        -- Newsletter sign-ups before an account exists: no customer_id.
        SELECT 1, i, 'CN' || i, NULL, 'newsletter' || (i // 2) || '@example.org', 'marketing_email',
            CASE WHEN i % 2 = 0 THEN 'requested' ELSE 'confirmed' END,
            CASE WHEN i % 2 = 0 THEN 'newsletter_form' ELSE 'mail_link' END,
            {as_of} - floor(u(i // 2, 27) * {days} * {DAY})::BIGINT + (i % 2) * 600 - 3600
        FROM range({max(1, nb // 40) * 2}) t(i)
        ) ORDER BY part, i"""
    # Session sequence: [views][adds][tail]; tail = remove of the last add (abandoned), checkout_started
    # (+ payment_failed), or checkout_started + purchase. Removes only ever undo the last add, so the
    # remaining adds are contiguous and order line numbers follow without a window function.
    q["session_events"] = f"""
        SELECT 'E' || ek AS event_id, 'S' || j AS session_id, c_id(cust) AS customer_id,
            logged AS is_logged_in,
            CASE WHEN event_type = 'page_view' AND u(ek, 91) < {BAD_EVENT_TYPE_SHARE} THEN 'kart'
                 ELSE event_type END AS event_type,
            CASE WHEN event_type IN {cart_types} THEN 'K' || j END AS cart_id,
            CASE WHEN pk IS NOT NULL THEN p_id(tprod(b_theme(j, cust), pk, 31)) END AS product_id,
            CASE WHEN event_type IN ('add_to_cart', 'remove_from_cart') THEN qty(pk, 33) END AS quantity,
            CASE WHEN event_type IN ('add_to_cart', 'remove_from_cart')
                THEN p_price(tprod(b_theme(j, cust), pk, 31)) END AS unit_price,
            CASE WHEN event_type IN ('add_to_cart', 'remove_from_cart') THEN 'EUR' END AS currency,
            start + kk * 60 + floor(u(ek, 32) * 50)::BIGINT AS occurred_at,
            event_type = 'page_view' AND u(ek, 90) < {BAD_TIMESTAMP_SHARE} AS _bad_ts
        FROM (
            SELECT *, j * 16 + kk AS ek,
                CASE WHEN kind = 0 THEN (CASE WHEN kk = 0 OR u(j * 16 + kk, 30) >= 0.6 THEN 'page_view'
                                              ELSE 'product_view' END)
                     WHEN kk = 0 THEN 'page_view' WHEN kk < v THEN 'product_view'
                     WHEN kk < v + m THEN 'add_to_cart'
                     WHEN kind = 1 THEN 'remove_from_cart' WHEN kk = v + m THEN 'checkout_started'
                     WHEN kind = 2 THEN 'payment_failed' ELSE 'purchase' END AS event_type,
                CASE WHEN kind = 0 THEN (CASE WHEN kk > 0 AND u(j * 16 + kk, 30) < 0.6 THEN j * 16 + kk END)
                     WHEN kk = 0 THEN NULL WHEN kk < v THEN j * 16 + v + (kk - 1) % m
                     WHEN kk < v + m THEN j * 16 + kk WHEN kind = 1 THEN j * 16 + kk - 1 END AS pk
            FROM ({sessions})
        )"""
    q["orders"] = """
        SELECT 'O' || key AS order_id, customer_id, cart_id, session_id, status, total_amount,
            'EUR' AS currency,
            placed AS placed_at, updated AS updated_at
        FROM ord"""
    q["order_items"] = """
        SELECT 'O' || key AS order_id, line_no, p_id(it.p) AS product_id, it.q AS quantity,
            p_price(it.p) AS unit_price
        FROM (SELECT key, unnest(range(1, len(items) + 1)) AS line_no, unnest(items) AS it FROM ord)
        ORDER BY key, line_no"""
    # Carrier exports: most carry the tracking page, some only the number (the mail then builds the link
    # from config/shop.yaml carrier_tracking_urls); most announce a delivery date 1-3 days after shipping.
    q["shipments"] = f"""
        SELECT 'SH' || key AS shipment_id, 'O' || key AS order_id, carrier,
            CASE WHEN u(key, 58) < 0.7 THEN {tracking_url} END AS tracking_url,
            ship AS shipped_at, CASE WHEN status IN ('delivered', 'returned') THEN deliv END AS delivered_at,
            tracking_number,
            CASE WHEN u(key, 59) < 0.85 THEN ship + (1 + ri(key, 60, 3)) * {DAY} END AS expected_delivery_date
        FROM (
            SELECT *, {tracking_number} AS tracking_number
            FROM (SELECT *, {carriers}[1 + ri(key, 55, {len(vocab.CARRIERS)})] AS carrier FROM ord)
        )
        WHERE status IN ('shipped', 'delivered', 'returned')"""
    q["support_tickets"] = f"""
        SELECT 'T' || key AS ticket_id, c_id(c) AS customer_id,
            {topics}[1 + ri(key, 74, {len(vocab.TICKET_TOPICS)})] AS topic,
            CASE WHEN closed > {as_of} THEN (CASE WHEN u(key, 73) < 0.5 THEN 'open' ELSE 'pending' END)
                 WHEN u(key, 73) < 0.5 THEN 'solved' ELSE 'closed' END AS status,
            opened AS opened_at, CASE WHEN closed <= {as_of} THEN closed END AS closed_at,
            CASE WHEN closed <= {as_of} THEN closed
                 ELSE opened + floor(u(key, 75) * ({as_of} - opened))::BIGINT END AS updated_at
        FROM (
            SELECT key, c, opened, opened + 7200 + floor(u(key, 72) * 4 * {DAY})::BIGINT AS closed
            FROM (
                SELECT 1000000 + i AS key, {k + 1} + i // 2 AS c,
                    {as_of} - 600 - floor(u(1000000 + i, 71) * 180 * {DAY})::BIGINT AS opened, i % 2 AS t
                FROM range({nb * 2}) r(i)
            ) WHERE t < CASE WHEN u(c, 70) < 0.06 THEN 1 WHEN u(c, 70) < 0.08 THEN 2 ELSE 0 END
        )"""
    return q


def _sessions_sql(source: str, *, k: int, nb: int, as_of: int, days: int, keep: str = "true") -> str:
    """Session attributes as a pure function of the session number ``j`` (a column of ``source``).

    Used both for the ``sess`` table (orders derive from it) and, with one row per (session, event slot),
    for the events themselves: streaming straight from ``range()`` keeps row order stable across threads
    without a sort (``unnest`` would not). ``keep`` filters rows as soon as ``e`` is known.
    """
    return f"""
        SELECT *, e - v - tail AS m FROM (
            SELECT *, CASE kind WHEN 0 THEN 0 WHEN 1 THEN (u(j, 26) < 0.2)::INT
                                WHEN 2 THEN 1 + (u(j, 27) < 0.5)::INT ELSE 2 END AS tail,
                CASE WHEN kind = 0 THEN e ELSE 1 + ri(j, 28, e - 3) END AS v,
                {as_of} - 60 - e * 60 - floor(u(j, 25) * ({days} * {DAY} - 7200))::BIGINT AS start,
                cust IS NOT NULL AND NOT c_guest(cust) AND u(j, 23) < 0.8 AS logged
            FROM (
                SELECT *, CASE WHEN kind = 0 THEN 1 + ri(j, 24, 9) ELSE 4 + ri(j, 24, 10) END AS e
                FROM (
                    -- 0 browse, 1 cart abandoned, 2 checkout abandoned, 3 purchase (anonymous visitors
                    -- cannot buy without becoming a customer, so their would-be purchases stay abandoned).
                    SELECT *, CASE WHEN u(j, 20) < 0.25 THEN NULL ELSE {k + 1} + ri(j, 21, {nb}) END AS cust,
                        CASE WHEN u(j, 22) < 0.64 THEN 0 WHEN u(j, 22) < 0.84 THEN 1
                             WHEN u(j, 22) < 0.88 THEN 2
                             WHEN u(j, 20) < 0.25 THEN 1 ELSE 3 END AS kind
                    FROM ({source})
                )
            ) WHERE {keep}
        )"""


def _build_tables(
    con: duckdb.DuckDBPyConnection, *, as_of: int, days: int, n: int, k: int, n_sessions: int
) -> None:
    """Materialise sessions and orders once: events, orders, items and shipments all derive from them."""
    nb = n - k
    win_start = as_of - days * DAY
    con.execute(
        "CREATE TABLE sess AS "
        + _sessions_sql(f"SELECT range AS j FROM range({n_sessions})", k=k, nb=nb, as_of=as_of, days=days)
    )
    con.execute("""
        CREATE TABLE ord_raw AS
        SELECT 100000000 + j AS key, c_id(cust) AS customer_id, 'K' || j AS cart_id, 'S' || j AS session_id,
            start + (e - 1) * 60 + floor(u(j * 16 + e - 1, 32) * 50)::BIGINT AS placed,
            list_transform(range(v, v + m),
                           lambda kk: {'p': tprod(b_theme(j, cust), j * 16 + kk, 31),
                                       'q': qty(j * 16 + kk, 33)})
                AS items
        FROM sess WHERE kind = 3""")
    con.execute(f"""
        INSERT INTO ord_raw
        SELECT 200000000 + c * 8 + h AS key, c_id(c), NULL, NULL, h_placed(c, h),
            list_transform(range(1 + ri(c * 8 + h, 60, 4)),
                lambda l: {{'p': tprod(b_theme(c * 8 + h, c), (c * 8 + h) * 8 + l, 35),
                           'q': qty((c * 8 + h) * 8 + l, 37)}})
        FROM (SELECT {k + 1} + i // 8 AS c, i % 8 AS h FROM range({nb * 8}) t(i))
        WHERE h < c_hist_n(c) AND h_placed(c, h) < {win_start - DAY}""")
    con.execute(f"""
        CREATE TABLE ord AS
        SELECT key, customer_id, cart_id, session_id, placed, items, status, ship, deliv,
            sub + CASE WHEN sub >= 5000 THEN 0 ELSE 495 END AS total_amount,
            CASE status WHEN 'cancelled' THEN least(placed + 7200, {as_of}) WHEN 'placed' THEN placed
                WHEN 'paid' THEN placed + 600 WHEN 'shipped' THEN ship WHEN 'delivered' THEN deliv
                ELSE deliv + 6 * {DAY} - 3600 END AS updated
        FROM (
            SELECT *, o_status(key, placed) AS status, o_ship(key, placed) AS ship,
                o_deliv(key, placed) AS deliv,
                list_sum(list_transform(items, lambda x: x.q * p_price(x.p))) AS sub
            FROM ord_raw
        )""")


def _arrow_rows(table: str, rows: list[dict]) -> pa.Table:
    types = {
        "str": pa.string(),
        "int": pa.int64(),
        "dec": pa.int64(),
        "bool": pa.bool_(),
        "ts": pa.int64(),
        "date": pa.int64(),
    }
    cols = list(SCHEMA[table])
    if table == "session_events":
        cols.append(("_bad_ts", "bool"))
    schema = pa.schema([(name, types[kind]) for name, kind in cols])
    return pa.Table.from_pylist([{name: r.get(name) for name, _ in cols} for r in rows], schema=schema)


def _copy(con: duckdb.DuckDBPyConnection, table: str, inner: str, path: Path, file_format: str) -> int:
    style = TS_STYLE[table]
    exprs = []
    for name, kind in SCHEMA[table]:
        if kind == "ts":
            expr = f"fmt_{style}({name})" if file_format == "csv" else f"to_timestamp({name})"
            if table == "session_events" and name == "occurred_at" and file_format == "csv":
                expr = f"CASE WHEN _bad_ts THEN '31.12.2025' ELSE {expr} END"
        elif kind == "date":
            # A calendar day in the shop's timezone, ISO 8601 without a time (2026-11-26).
            expr = f"left(fmt_local({name}), 10)"
        elif kind == "dec":
            expr = f"({name}::DECIMAL(14, 2) / 100)::DECIMAL(14, 2)"
        else:
            expr = name
        exprs.append(f"{expr} AS {name}")
    # Parquet is typed: an unparseable timestamp cannot be represented there, so those rows exist in CSV only.
    where = "WHERE NOT _bad_ts" if table == "session_events" and file_format == "parquet" else ""
    options = (
        "FORMAT parquet, COMPRESSION zstd"
        if file_format == "parquet"
        else "FORMAT csv, HEADER, DELIMITER ','"
    )
    sql = f"COPY (SELECT {', '.join(exprs)} FROM ({inner}) {where}) TO {_sql_str(str(path))} ({options})"
    return int(con.execute(sql).fetchone()[0])  # type: ignore[index]


def generate_exports(
    landing_dir: Path,
    customers: int = 2000,
    seed: int = 42,
    as_of: datetime | None = None,
    days: int = 90,
    file_format: str = "csv",
) -> dict[str, int]:
    """Write <landing_dir>/<table>/<name>.csv (or .parquet) for every table of the export contract.

    Returns rows per table. Each table folder gets ``scenarios.<ext>`` (hand-shaped cases) and
    ``shop.<ext>`` (bulk). ``as_of`` is the "now" of the generated world (naive = UTC).
    """
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', got {file_format!r}")
    if days < 4:
        raise ValueError("days must be at least 4 (the scenarios need a few days of history)")
    as_of = as_of or DEFAULT_AS_OF
    as_of = (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
    now = int(as_of.timestamp())
    landing_dir = Path(landing_dir)
    n_products = min(2000, max(200, customers // 50))  # scenarios use product indexes up to 200

    con = duckdb.connect()
    try:
        # Order of rows in every file must not depend on thread scheduling.
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET TimeZone = 'UTC'")
        # Scenario customers first: they need product prices, and their count fixes where the bulk starts.
        _create_macros(con, seed=seed, as_of=now, days=days, n_products=n_products)
        prices = dict(con.execute(f"SELECT p, p_price(p) FROM range(1, {n_products + 1}) t(p)").fetchall())
        guides = [
            p
            for (p,) in con.execute(
                f"SELECT p FROM range(1, {n_products + 1}) t(p) "
                "WHERE u(p, 43) < 0.35 AND u(p, 42) < 0.92 ORDER BY p"
            ).fetchall()
        ]
        world = build_scenarios(as_of, prices, guides)
        k = len(world.cases)
        if customers < k:
            raise ValueError(f"customers must be at least {k} (the number of scenario customers)")
        n_sessions = round((customers - k) * SESSIONS_PER_CUSTOMER)
        _build_tables(con, as_of=now, days=days, n=customers, k=k, n_sessions=n_sessions)
        queries = _bulk_queries(
            as_of=now, days=days, n=customers, k=k, n_products=n_products, n_sessions=n_sessions
        )

        counts: dict[str, int] = {}
        for table in SCHEMA:
            folder = landing_dir / table
            folder.mkdir(parents=True, exist_ok=True)
            for stem in ("scenarios", "shop"):  # a re-run in another format must not leave a twin behind
                for ext in ("csv", "parquet"):
                    (folder / f"{stem}.{ext}").unlink(missing_ok=True)
            total = 0
            rows = world.rows.get(table, [])
            if rows:
                con.register("scenario_rows", _arrow_rows(table, rows))
                total += _copy(
                    con,
                    table,
                    "SELECT * FROM scenario_rows",
                    folder / f"scenarios.{file_format}",
                    file_format,
                )
                con.unregister("scenario_rows")
            total += _copy(con, table, queries[table], folder / f"shop.{file_format}", file_format)
            counts[table] = total
        return counts
    finally:
        con.close()


def scenario_cases(as_of: datetime | None = None) -> dict[str, str]:
    """customer_id -> description of every scenario customer (for docs and tests)."""
    as_of = as_of or DEFAULT_AS_OF
    prices = {p: 1000 for p in range(1, 201)}
    return build_scenarios(as_of, prices, [1]).cases
