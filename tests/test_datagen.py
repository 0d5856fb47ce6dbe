"""Sample shop data generator: contract shape, determinism, scenario coverage, deliberate bad rows."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nachfass.cli.main import main
from nachfass.devtools.datagen.generate import DEFAULT_AS_OF, generate_exports, scenario_cases
from nachfass.devtools.datagen.scenarios import night_timezone
from nachfass.devtools.datagen.vocab import EMAIL_DOMAINS, email_address, is_valid_email, slug

# The export contract (spec/exports.md), written out independently of the generator's own SCHEMA.
CONTRACT_HEADERS = {
    "customers": "customer_id,email,first_name,last_name,salutation,locale,timezone,is_guest,"
    "created_at,updated_at",
    "consents": "consent_event_id,customer_id,email,purpose,event,source,occurred_at",
    "session_events": "event_id,session_id,customer_id,is_logged_in,event_type,cart_id,product_id,quantity,"
    "unit_price,currency,occurred_at",
    "orders": "order_id,customer_id,cart_id,session_id,status,total_amount,currency,placed_at,updated_at",
    "order_items": "order_id,line_no,product_id,quantity,unit_price",
    "shipments": "shipment_id,order_id,carrier,tracking_url,shipped_at,delivered_at,tracking_number,"
    "expected_delivery_date",
    "products": "product_id,name,category,price,currency,url,image_url,guide_url,in_stock,updated_at,"
    "content_amount,content_unit",
    "support_tickets": "ticket_id,customer_id,topic,status,opened_at,closed_at,updated_at",
}
AS_OF = "TIMESTAMPTZ '2026-11-24 10:00:00+00'"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.csv"))
    }


def _load(folder: Path) -> duckdb.DuckDBPyConnection:
    """All tables as VARCHAR (the deliberate bad rows must survive), materialised."""
    con = duckdb.connect()
    for table in CONTRACT_HEADERS:
        con.execute(
            f"CREATE TABLE {table} AS SELECT * FROM "
            f"read_csv('{folder}/{table}/*.csv', header = true, all_varchar = true, delim = ',')"
        )
    return con


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("landing")
    return folder, generate_exports(folder, customers=200, seed=42)


@pytest.fixture(scope="module")
def db(sample: tuple[Path, dict[str, int]]) -> duckdb.DuckDBPyConnection:
    return _load(sample[0])


def test_every_table_has_exactly_the_contract_header(sample: tuple[Path, dict[str, int]]) -> None:
    folder, counts = sample
    assert set(counts) == set(CONTRACT_HEADERS)
    for table, header in CONTRACT_HEADERS.items():
        files = sorted((folder / table).glob("*.csv"))
        assert files, table
        for f in files:
            assert f.read_text(encoding="utf-8").split("\n", 1)[0] == header, f


def test_counts_match_files(sample: tuple[Path, dict[str, int]], db: duckdb.DuckDBPyConnection) -> None:
    _, counts = sample
    for table, rows in counts.items():
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows, table
    assert counts["customers"] == 200


def test_same_seed_is_byte_identical_other_seed_differs(
    tmp_path: Path, sample: tuple[Path, dict[str, int]]
) -> None:
    folder, _ = sample
    generate_exports(tmp_path / "same", customers=200, seed=42)
    generate_exports(tmp_path / "other", customers=200, seed=7)
    assert _digest(tmp_path / "same") == _digest(folder)
    other = _digest(tmp_path / "other")
    assert other["session_events/shop.csv"] != _digest(folder)["session_events/shop.csv"]
    assert other["customers/shop.csv"] != _digest(folder)["customers/shop.csv"]


def test_rows_scale_with_customers(tmp_path: Path, sample: tuple[Path, dict[str, int]]) -> None:
    _, small = sample
    big = generate_exports(tmp_path, customers=400, seed=42)
    assert big["customers"] == 400
    for table in ("consents", "session_events", "orders", "order_items", "shipments"):
        assert 1.5 * small[table] < big[table] < 2.6 * small[table], table
    # ~30 session events per customer (the scale target); the small sample's scenarios dilute it slightly.
    assert 20 * 400 < big["session_events"] < 40 * 400


def test_referential_sanity(db: duckdb.DuckDBPyConnection) -> None:
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    assert one("SELECT count(*) FROM order_items ANTI JOIN orders USING (order_id)") == 0
    assert one("SELECT count(*) FROM orders ANTI JOIN customers USING (customer_id)") == 0
    assert one("SELECT count(*) FROM shipments ANTI JOIN orders USING (order_id)") == 0
    assert one("SELECT count(*) FROM support_tickets ANTI JOIN customers USING (customer_id)") == 0
    assert one("SELECT count(*) FROM order_items ANTI JOIN products USING (product_id)") == 0
    assert one("SELECT count(*) - count(DISTINCT order_id || '/' || line_no) FROM order_items") == 0
    assert one("SELECT count(*) - count(DISTINCT event_id) FROM session_events") == 0
    assert (
        one(
            "SELECT count(*) FROM session_events WHERE event_type IN ('add_to_cart', 'remove_from_cart') "
            "AND (cart_id IS NULL OR product_id IS NULL OR quantity IS NULL OR unit_price IS NULL)"
        )
        == 0
    )
    assert (
        one(
            "SELECT count(*) FROM session_events "
            "WHERE event_type IN ('checkout_started', 'payment_failed', 'purchase') AND cart_id IS NULL"
        )
        == 0
    )
    # Order totals = items + 4.95 shipping below 50 EUR.
    assert (
        one(
            "SELECT count(*) FROM (SELECT o.total_amount::DECIMAL(12, 2)"
            " - sum(i.quantity::INT * i.unit_price::DECIMAL(12, 2))"
            " AS diff FROM orders o JOIN order_items i USING (order_id) GROUP BY o.order_id, o.total_amount)"
            " WHERE diff NOT IN (0, 4.95)"
        )
        == 0
    )


def test_nothing_happens_after_as_of(db: duckdb.DuckDBPyConnection) -> None:
    checks = {
        "session_events": "occurred_at",
        "orders": "placed_at",
        "consents": "occurred_at",
        "shipments": "shipped_at",
    }
    for table, col in checks.items():
        latest = db.execute(f"SELECT max(try_cast({col} AS TIMESTAMPTZ)) <= {AS_OF} FROM {table}").fetchone()[
            0
        ]
        assert latest, table


def test_logged_in_abandoned_cart_within_72_hours(db: duckdb.DuckDBPyConnection) -> None:
    carts = db.execute(f"""
        SELECT count(*) FROM (
            SELECT cart_id, any_value(customer_id) AS customer_id,
                bool_and(is_logged_in::BOOLEAN) AS logged_in,
                max(occurred_at::TIMESTAMPTZ) AS last_activity,
                sum(CASE event_type WHEN 'add_to_cart' THEN quantity::INT WHEN 'remove_from_cart'
                    THEN -quantity::INT ELSE 0 END) AS items_left,
                bool_or(event_type = 'purchase') AS purchased
            FROM session_events WHERE cart_id IS NOT NULL GROUP BY cart_id
        ) WHERE logged_in AND customer_id IS NOT NULL AND items_left > 0 AND NOT purchased
          AND last_activity BETWEEN {AS_OF} - INTERVAL 72 HOUR AND {AS_OF} - INTERVAL 1 HOUR
    """).fetchone()[0]
    assert carts >= 3


def test_campaign_and_skip_cases_exist(db: duckdb.DuckDBPyConnection) -> None:
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    # checkout_recovery: a checkout/payment failure 30 min – 24 h ago.
    assert (
        one(f"""SELECT count(*) FROM session_events WHERE event_type IN ('checkout_started', 'payment_failed')
        AND occurred_at::TIMESTAMPTZ BETWEEN {AS_OF} - INTERVAL 24 HOUR AND {AS_OF} - INTERVAL 30 MINUTE""")
        >= 2
    )
    # order_thanks, shipping_update, review_request, cross_sell, support_followup.
    assert one(f"SELECT count(*) FROM orders WHERE placed_at::TIMESTAMPTZ > {AS_OF} - INTERVAL 48 HOUR") >= 2
    assert (
        one(f"SELECT count(*) FROM shipments WHERE shipped_at::TIMESTAMPTZ > {AS_OF} - INTERVAL 6 HOUR") >= 1
    )
    assert (
        one(f"SELECT count(*) FROM shipments WHERE delivered_at::TIMESTAMPTZ > {AS_OF} - INTERVAL 6 HOUR")
        >= 1
    )
    for days in (7, 14):
        assert (
            one(f"""SELECT count(*) FROM shipments WHERE delivered_at::TIMESTAMPTZ
            BETWEEN {AS_OF} - INTERVAL {days + 1} DAY AND {AS_OF} - INTERVAL {days - 1} DAY""")
            >= 2
        )
    assert one("SELECT count(*) FROM shipments WHERE delivered_at IS NULL") >= 1
    assert (
        one(f"""SELECT count(*) FROM support_tickets WHERE status IN ('solved', 'closed')
        AND closed_at::TIMESTAMP BETWEEN {AS_OF} - INTERVAL 3 DAY AND {AS_OF} - INTERVAL 1 DAY""")
        >= 2
    )
    # reactivation: buyers whose last order is older than 120 days.
    assert (
        one(f"""SELECT count(*) FROM (SELECT customer_id, max(placed_at::TIMESTAMPTZ) AS last FROM orders
        GROUP BY ALL) WHERE last < {AS_OF} - INTERVAL 120 DAY""")
        >= 3
    )
    # consent log variety: requested-only, withdrawn, re-confirmed, weekly, objection notice, no customer_id.
    events = dict(db.execute("SELECT event, count(*) FROM consents GROUP BY ALL").fetchall())
    assert {"requested", "confirmed", "withdrawn", "objection_notice_given", "frequency_weekly"} <= set(
        events
    )
    assert one("SELECT count(*) FROM consents WHERE customer_id IS NULL") >= 1
    # guests, foreign timezones (quiet hours), neutral salutation.
    assert one("SELECT count(*) FROM customers WHERE is_guest = 'true'") >= 3
    assert one("SELECT count(*) FROM customers WHERE timezone = 'America/New_York'") >= 1
    assert one("SELECT count(*) FROM customers WHERE first_name IS NULL AND last_name IS NULL") >= 1
    statuses = {r[0] for r in db.execute("SELECT DISTINCT status FROM orders").fetchall()}
    assert statuses == {"placed", "paid", "shipped", "delivered", "cancelled", "returned"}


def test_every_scenario_customer_is_written(db: duckdb.DuckDBPyConnection) -> None:
    ids = {r[0] for r in db.execute("SELECT customer_id FROM customers").fetchall()}
    cases = scenario_cases()
    assert len(cases) >= 40 and set(cases) <= ids
    assert any(c.startswith("skip purchased") for c in cases.values())
    assert any(c.startswith("skip quiet_hours") for c in cases.values())


def test_deliberate_contract_violations_are_present_but_few(db: duckdb.DuckDBPyConnection) -> None:
    emails = [r[0] for r in db.execute("SELECT email FROM customers").fetchall()]
    invalid = [e for e in emails if not is_valid_email(e)]
    assert {"max@", "kein-at-zeichen.example"} <= set(invalid)
    assert len(invalid) <= 0.02 * len(emails)
    bad_ts = db.execute("SELECT count(*) FROM session_events WHERE occurred_at = '31.12.2025'").fetchone()[0]
    kart = db.execute("SELECT count(*) FROM session_events WHERE event_type = 'kart'").fetchone()[0]
    total = db.execute("SELECT count(*) FROM session_events").fetchone()[0]
    assert 1 <= bad_ts <= 0.005 * total
    assert 1 <= kart <= 0.005 * total
    # Everything else is well formed.
    assert (
        db.execute("""SELECT count(*) FROM session_events WHERE occurred_at <> '31.12.2025'
        AND try_cast(occurred_at AS TIMESTAMPTZ) IS NULL""").fetchone()[0]
        == 0
    )


def test_timestamps_carry_offsets_and_domains_are_reserved(db: duckdb.DuckDBPyConnection) -> None:
    created = [r[0] for r in db.execute("SELECT created_at FROM customers").fetchall()]
    assert all(v.endswith(("+01:00", "+02:00")) for v in created)
    domains = {
        r[0] for r in db.execute("SELECT DISTINCT split_part(email, '@', 2) FROM customers").fetchall()
    }
    assert domains - {""} <= set(EMAIL_DOMAINS)


def test_parquet_format(tmp_path: Path) -> None:
    counts = generate_exports(tmp_path, customers=60, seed=1, file_format="parquet")
    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/orders/*.parquet')").fetchone()[0]
    assert rows == counts["orders"] > 0
    assert not list(tmp_path.rglob("*.csv"))


def test_too_few_customers_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_exports(tmp_path, customers=5)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "generate",
        "--customers",
        "60",
        "--landing",
        str(tmp_path),
        "--as-of",
        "2026-06-01T18:30:00+02:00",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "session_events" in out and "generated in" in out
    assert (tmp_path / "customers" / "shop.csv").exists()


names = st.one_of(st.none(), st.text(max_size=30))


@given(
    first=names,
    last=names,
    number=st.integers(min_value=0, max_value=10**9),
    domain=st.sampled_from(EMAIL_DOMAINS),
)
def test_email_address_is_always_valid(first: str | None, last: str | None, number: int, domain: str) -> None:
    address = email_address(first, last, number, domain)
    assert is_valid_email(address), address
    assert address.endswith("@" + domain)


@given(st.text(max_size=40))
def test_slug_is_url_safe(text: str) -> None:
    s = slug(text)
    assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in s)
    assert not s.startswith("-") and not s.endswith("-") and "--" not in s
    assert s == s.lower()


@settings(max_examples=50)
@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)))
def test_night_timezone_is_in_quiet_hours(moment: datetime) -> None:
    as_of = moment.replace(tzinfo=UTC)
    hour = as_of.astimezone(ZoneInfo(night_timezone(as_of))).hour
    assert hour >= 20 or hour < 8


def test_default_as_of_is_fixed() -> None:
    assert datetime(2026, 11, 24, 10, tzinfo=UTC) == DEFAULT_AS_OF


def test_baskets_follow_shopping_themes(db: duckdb.DuckDBPyConnection) -> None:
    """Products bought together share a theme (a raised bed with soil and herbs) far more often than two
    products drawn independently would: the co-purchase structure the recommendation benchmark needs."""
    from nachfass.devtools.datagen.vocab import CATALOGUE, THEMES

    nouns = [noun for _, noun, _ in CATALOGUE]
    themes_of = {
        i + 1: {t for t, (_, members) in enumerate(THEMES) if noun in members} for i, noun in enumerate(nouns)
    }

    def noun(product_id: str) -> int:
        return (int(product_id[1:]) - 1) % len(nouns) + 1

    pairs = db.execute(
        """
        select a.product_id, b.product_id
        from order_items as a
        inner join order_items as b on a.order_id = b.order_id and a.line_no < b.line_no
        where a.order_id not like 'O3%'  -- the bulk, not the hand-shaped scenarios
        """
    ).fetchall()
    assert len(pairs) > 300
    together = sum(bool(themes_of[noun(a)] & themes_of[noun(b)]) for a, b in pairs) / len(pairs)
    partners = [b for _, b in pairs]
    random.Random(0).shuffle(partners)  # the same products, paired at random
    shuffled = list(zip([a for a, _ in pairs], partners, strict=True))
    chance = sum(bool(themes_of[noun(a)] & themes_of[noun(b)]) for a, b in shuffled) / len(shuffled)
    assert together > 0.5 and together > 2 * chance, (together, chance)
