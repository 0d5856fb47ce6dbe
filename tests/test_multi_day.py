"""Many days on one warehouse: nine live runs (the main Dagster job) over six weeks, with exports and
SendGrid events arriving between them as they would in a shop. Every mail that goes out is written out
below by hand — when, which campaign and step, to which address — and compared with the ledger; a few
decisions on the way (caps, deferrals, dormancy, consent) are checked at the tick they happen.

Berlin is UTC+1 throughout. Ticks (UTC):
  T1  Mon 16 Nov 09:00   T1b Mon 16 Nov 11:00   T2  Tue 17 Nov 09:30   T3  Mon 23 Nov 10:00
  T4  Sun 20 Dec 10:00   T5  Mon 21 Dec 07:30   T6  Wed 23 Dec 11:00   T7  Fri 25 Dec 10:30 (holiday)
  T8  Mon 28 Dec 08:00
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from nachfass.cli.main import run_job
from nachfass.core.campaigns import assign_variant, load_campaigns
from nachfass.core.mail.message import make_send_id
from tests.dbt_helpers import write_exports

pytestmark = pytest.mark.slow


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


H = timedelta(hours=1)
D = timedelta(days=1)
T1, T1b, T2, T3 = utc(11, 16, 9), utc(11, 16, 11), utc(11, 17, 9, 30), utc(11, 23, 10)
T4, T5, T6, T7, T8 = utc(12, 20, 10), utc(12, 21, 7, 30), utc(12, 23, 11), utc(12, 25, 10, 30), utc(12, 28, 8)
TICKS = [T1, T1b, T2, T3, T4, T5, T6, T7, T8]

EXPERIMENTS = [c.experiment for c in load_campaigns().values() if c.experiment]
PRODUCTS = [  # one category per product except garden (bestsellers fill other orders' recommendations)
    ("P1", "Hochbeet", "garden"),
    ("P2", "Pflanzkelle", "garden"),
    ("P3", "Brotkasten", "kitchen"),
    ("P4", "Astschere", "tools"),
    ("P5", "Gartenbuch", "books"),
]


def customer_id(name: str) -> str:
    """An id in no experiment's holdout, so every expected mail really goes out."""
    for n in range(1000):
        candidate = f"C_{name}_{n}"
        if all(assign_variant(candidate, experiment) != "holdout" for experiment in EXPERIMENTS):
            return candidate
    raise AssertionError("no id found")


class Shop:
    """Writes export files and SendGrid event files into the landing folder, one batch per call."""

    def __init__(self, landing: Path) -> None:
        self.landing = landing
        self.ids: dict[str, str] = {}
        self.emails: dict[str, str] = {}
        self.batch: dict[str, list[dict]] = {}
        self.n = 0
        self.files = 0

    def _next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def add(self, table: str, **row: object) -> None:
        self.batch.setdefault(table, []).append(row)

    def flush(self) -> None:
        """The shop's export of everything added since the last flush: one new file per table."""
        self.files += 1
        write_exports(self.landing, self.batch, name=f"export-{self.files:03d}.csv")
        self.batch = {}

    def customer(self, name: str, *, consent: tuple[str, ...] = ("confirmed",), at: datetime = T1 - 300 * D):
        cid, email = customer_id(name), f"{name}@example.com"
        self.ids[name], self.emails[name] = cid, email
        self.add(
            "customers",
            customer_id=cid,
            email=email,
            first_name=name.title(),
            last_name="Muster",
            salutation="Frau",
            locale="de-DE",
            timezone="Europe/Berlin",
            is_guest=False,
            created_at=at,
        )
        for offset, event in enumerate(consent):
            self.consent(name, event, at + offset * H)
        return cid

    def consent(self, name: str, event: str, at: datetime, email: str | None = None) -> None:
        self.add(
            "consents",
            consent_event_id=self._next("K"),
            customer_id=self.ids[name],
            email=email or self.emails[name],
            purpose="marketing_email",
            event=event,
            source="checkout",
            occurred_at=at,
        )

    def cart(self, name: str, at: datetime, *, checkout: bool = False) -> str:
        cart_id = self._next(f"cart_{name}_")
        events = ["add_to_cart"] + (["checkout_started"] if checkout else [])
        for offset, event_type in enumerate(events):
            self.add(
                "session_events",
                event_id=self._next("E"),
                session_id=f"S_{cart_id}",
                customer_id=self.ids[name],
                is_logged_in=True,
                event_type=event_type,
                cart_id=cart_id,
                product_id="P1",
                quantity=1,
                unit_price="24.90",
                currency="EUR",
                occurred_at=at + offset * timedelta(minutes=10),
            )
        return cart_id

    def order(
        self,
        name: str,
        placed: datetime,
        product: str,
        *,
        status: str = "placed",
        shipped: datetime | None = None,
        delivered: datetime | None = None,
    ) -> str:
        order_id = self._next("O")
        self.add(
            "orders",
            order_id=order_id,
            customer_id=self.ids[name],
            status=status,
            total_amount="24.90",
            currency="EUR",
            placed_at=placed,
            updated_at=placed,
        )
        self.add(
            "order_items", order_id=order_id, line_no=1, product_id=product, quantity=1, unit_price="24.90"
        )
        if shipped:
            self.shipment(order_id, shipped, delivered)
        return order_id

    def shipment(self, order_id: str, shipped: datetime, delivered: datetime | None = None) -> None:
        self.add(
            "shipments",
            shipment_id=f"SH_{order_id}",
            order_id=order_id,
            carrier="DHL",
            tracking_url="https://dhl.example/t",
            shipped_at=shipped,
            delivered_at=delivered,
        )

    def event(self, name: str, kind: str, campaign: str, step: str, trigger_key: str, at: datetime) -> None:
        """A SendGrid event for one of our mails, as the web service stores it."""
        folder = self.landing / "sendgrid_events"
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "sg_event_id": self._next("sg"),
            "event": kind,
            "email": self.emails[name],
            "timestamp": int(at.timestamp()),
            "send_id": make_send_id(campaign, step, trigger_key),
            "campaign": campaign,
            "step": step,
            "sg_message_id": "msg.filter0001",
            "sg_machine_open": False,
        }
        (folder / f"{self.n:05d}.ndjson").write_text(json.dumps(record) + "\n", encoding="utf-8")


def snapshot(warehouse: Path) -> dict[tuple[str, str, str], tuple[str, str, datetime | None]]:
    """mail_candidates after a run: (customer, campaign, step) → (decision, reason, deferred_until)."""
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = conn.execute(
            "select customer_id, campaign, step, trigger_key, decision, reason, deferred_until "
            "from eligibility.mail_candidates"
        ).fetchall()
    finally:
        conn.close()
    return {(c, campaign, step, key): (d, r, until) for c, campaign, step, key, d, r, until in rows}


def decision(snap: dict, cid: str, campaign: str, step: str, key: str | None = None) -> tuple:
    found = [
        v
        for (c, cam, s, k), v in snap.items()
        if c == cid and cam == campaign and s == step and (key is None or k == key)
    ]
    assert len(found) == 1, (cid, campaign, step, key, found)
    return found[0]


def test_six_weeks_of_runs_send_exactly_what_live_runs_would(workspace, dbt_manifest) -> None:
    shop = Shop(workspace["landing"])
    for product_id, name, category in PRODUCTS:
        shop.add(
            "products",
            product_id=product_id,
            name=name,
            category=category,
            price="24.90",
            currency="EUR",
            url=f"https://shop.example/p/{product_id}",
            in_stock=True,
        )
    keys: dict[str, str] = {}
    snaps: dict[datetime, dict] = {}

    def tick(at: datetime) -> None:
        shop.flush()
        assert run_job(at.isoformat()), f"run as of {at} failed"
        snaps[at] = snapshot(workspace["warehouse"])

    # --- before T1 ---------------------------------------------------------------------------------------
    for name in ("anna", "ben", "carla", "dora", "emil", "eva"):
        shop.customer(name)
    shop.consent("emil", "frequency_weekly", T1 - 200 * D)  # "fewer mails": one marketing mail per 7 days
    keys["anna"] = shop.cart("anna", T1 - 3 * H)
    keys["ben"] = shop.cart("ben", T1 - 3 * H)
    keys["carla"] = shop.cart("carla", T1 - 3 * H)
    keys["dora1"] = shop.cart("dora", T1 - 3 * H)
    keys["dora2"] = shop.cart("dora", T1 - 30 * timedelta(minutes=1))
    keys["emil"] = shop.cart("emil", T1 - 3 * H)
    keys["eva_old"] = shop.cart("eva", T1 - 3 * H)
    keys["emil_order"] = shop.order(
        "emil", utc(11, 8, 9), "P3", status="delivered", shipped=utc(11, 9, 9), delivered=utc(11, 10, 9)
    )
    # reactivation: one order 120 days before T1 each; inactive exactly at T1
    for name in ("rita", "rolf", "rudi"):
        shop.customer(name, at=T1 - 400 * D)
        keys[name] = f"{shop.ids[name]}:{shop.order(name, T1 - 120 * D, 'P5', status='delivered')}"
    shop.customer("willi")
    keys["willi_order"] = shop.order(
        "willi", utc(11, 6, 9), "P5", status="delivered", shipped=utc(11, 8, 9), delivered=utc(11, 10, 9, 30)
    )
    shop.customer("cleo")
    keys["cleo_order"] = shop.order(
        "cleo", utc(10, 28, 9), "P1", status="delivered", shipped=utc(10, 30, 9), delivered=utc(11, 2, 9)
    )
    shop.customer("otto", consent=())
    keys["otto_order"] = shop.order("otto", T1 - H, "P5")
    tick(T1)
    # --- T1b: Dora's second cart is due, but she got a marketing mail two hours ago ------------------------
    tick(T1b)
    assert decision(snaps[T1b], shop.ids["dora"], "abandoned_cart", "1", keys["dora2"])[:2] == (
        "skip",
        "frequency_cap",
    )
    # --- before T2 ---------------------------------------------------------------------------------------
    shop.event("ben", "click", "abandoned_cart", "1", keys["ben"], T1 + H)
    keys["carla_order"] = shop.order("carla", T1 + 2 * H, "P3")
    shop.shipment(keys["otto_order"], T1 + 5 * H)
    shop.consent("willi", "withdrawn", utc(11, 16, 12))
    shop.customer("kai")
    keys["kai"] = shop.cart("kai", T2 - 130 * timedelta(minutes=1), checkout=True)
    shop.customer("olga")
    keys["olga_order"] = shop.order("olga", T2 - H, "P4")
    tick(T2)
    me = shop.ids
    assert not [k for k in snaps[T2] if k[0] == me["ben"] and k[2] == "2"]  # clicked step 1: no step 2
    assert decision(snaps[T2], me["carla"], "abandoned_cart", "2")[:2] == ("skip", "purchased")
    assert decision(snaps[T2], me["dora"], "abandoned_cart", "2", keys["dora1"])[:2] == (
        "skip",
        "frequency_cap",
    )
    assert decision(snaps[T2], me["emil"], "abandoned_cart", "2")[:2] == ("skip", "frequency_cap")
    assert decision(snaps[T2], me["emil"], "review_request", "1")[:2] == ("skip", "frequency_cap")
    assert decision(snaps[T2], me["willi"], "review_request", "1")[:2] == ("skip", "no_consent")
    assert decision(snaps[T2], me["kai"], "abandoned_cart", "1")[:2] == ("skip", "already_reminded")
    # --- before T3 ---------------------------------------------------------------------------------------
    shop.event("rita", "open", "reactivation", "1", keys["rita"], T1 + D)
    shop.event("rolf", "open", "reactivation", "1", keys["rolf"], T1 + D)
    shop.event("rolf", "click", "reactivation", "1", keys["rolf"], T1 + D + H)
    shop.event("rudi", "open", "reactivation", "1", keys["rudi"], T1 + D)
    shop.order("rudi", utc(11, 20, 10), "P5")  # back as a customer: no second reactivation mail
    shop.consent("willi", "confirmed", utc(11, 20, 10))
    shop.shipment(keys["otto_order"], T1 + 5 * H, utc(11, 19, 10))
    shop.shipment(keys["olga_order"], utc(11, 18, 10), utc(11, 20, 10))
    # Eva changes her address (and confirms marketing mail for the new one)
    shop.add(
        "customers",
        customer_id=me["eva"],
        email="eva.neu@example.com",
        first_name="Eva",
        last_name="Muster",
        salutation="Frau",
        locale="de-DE",
        timezone="Europe/Berlin",
        is_guest=False,
        created_at=T1 - 300 * D,
        updated_at=utc(11, 20, 10),
    )
    shop.consent("eva", "confirmed", utc(11, 20, 10), email="eva.neu@example.com")
    keys["eva_new"] = shop.cart("eva", T3 - 3 * H)
    shop.customer("sam", consent=())
    shop.add(
        "support_tickets",
        ticket_id="T1",
        customer_id=me["sam"],
        topic="Lieferung",
        status="solved",
        opened_at=utc(11, 19, 9),
        closed_at=utc(11, 21, 10),
        updated_at=utc(11, 21, 10),
    )
    tick(T3)
    assert decision(snaps[T3], me["rudi"], "reactivation", "2")[:2] == ("skip", "purchased")
    assert not [k for k in snaps[T3] if k[0] == me["rolf"] and k[2] == "2"]  # clicked: no step 2
    # --- before T4: a Sunday ------------------------------------------------------------------------------
    shop.add(
        "orders",
        order_id=keys["olga_order"],
        customer_id=me["olga"],
        status="returned",
        total_amount="24.90",
        currency="EUR",
        placed_at=T2 - H,
        updated_at=utc(12, 1, 10),
    )
    shop.customer("sofia")
    keys["sofia"] = shop.cart("sofia", utc(12, 19, 18, 30))  # Saturday 19:30 in Berlin: due after 20:00
    shop.customer("hugo", consent=("objection_notice_given",))
    keys["hugo_order"] = shop.order(
        "hugo", utc(12, 15, 10), "P4", status="delivered", shipped=utc(12, 16, 10), delivered=utc(12, 18, 10)
    )
    tick(T4)
    assert decision(snaps[T4], me["sofia"], "abandoned_cart", "1") == (
        "defer",
        "quiet_hours",
        utc(12, 21, 7).replace(tzinfo=None),
    )
    assert decision(snaps[T4], me["olga"], "review_request", "1")[:2] == ("skip", "order_returned")
    # --- before T5: an order export that arrives late (placed Sunday 08:00, exported Monday) -----------
    shop.customer("lena", consent=())
    keys["lena_order"] = shop.order("lena", utc(12, 20, 8), "P5")
    tick(T5)
    # --- before T6: Rita, dormant since 30 days after her unanswered second reactivation mail ------------
    shop.cart("rita", T6 - 3 * H)
    tick(T6)
    assert decision(snaps[T6], me["rita"], "abandoned_cart", "1")[:2] == ("skip", "dormant")
    tick(T7)  # Christmas Day: Hugo's review request (due today) waits for Monday
    assert decision(snaps[T7], me["hugo"], "review_request", "1") == (
        "defer",
        "quiet_hours",
        utc(12, 28, 7).replace(tzinfo=None),
    )
    tick(T8)

    # --- every mail that went out, by hand -----------------------------------------------------------------
    e = shop.emails
    expected = Counter(
        {
            (T1, "abandoned_cart", "1", e["anna"]): 1,
            (T1, "abandoned_cart", "1", e["ben"]): 1,
            (T1, "abandoned_cart", "1", e["carla"]): 1,
            (T1, "abandoned_cart", "1", e["dora"]): 1,  # her first cart; the second one is capped
            (T1, "abandoned_cart", "1", e["emil"]): 1,
            (T1, "abandoned_cart", "1", e["eva"]): 1,  # her old address
            (T1, "reactivation", "1", e["rita"]): 1,
            (T1, "reactivation", "1", e["rolf"]): 1,
            (T1, "reactivation", "1", e["rudi"]): 1,
            (T1, "review_request", "1", e["cleo"]): 1,  # wins over her cross-sell (priority)
            (T1, "order_thanks", "1", e["otto"]): 1,
            (T2, "abandoned_cart", "2", e["anna"]): 1,  # 24.5 h after step 1, not clicked
            (T2, "abandoned_cart", "2", e["eva"]): 1,  # still the old address on 17 Nov
            (T2, "abandoned_cart", "1", e["dora"]): 1,  # the capped second cart, now allowed
            (T2, "cross_sell", "1", e["cleo"]): 1,  # skipped at T1/T1b for the cap, sent now
            (T2, "checkout_recovery", "1", e["kai"]): 1,
            (T2, "order_thanks", "1", e["carla"]): 1,
            (T2, "order_thanks", "1", e["olga"]): 1,
            (T2, "shipping_update", "shipped", e["otto"]): 1,
            (T3, "reactivation", "2", e["rita"]): 1,  # opened, did not click; 7 days after step 1
            (T3, "review_request", "1", e["emil"]): 1,  # 7 days and 1 hour after his last marketing mail
            (T3, "review_request", "1", e["willi"]): 1,  # re-confirmed after his withdrawal
            (T3, "abandoned_cart", "1", "eva.neu@example.com"): 1,
            (T3, "support_followup", "1", e["sam"]): 1,
            (T4, "shipping_update", "delivered", e["hugo"]): 1,  # transactional: Sundays are fine
            (T5, "abandoned_cart", "1", e["sofia"]): 1,  # deferred over Sunday to Monday 08:00
            (T5, "order_thanks", "1", e["lena"]): 1,  # exported late, still within 48 h
            # cross-sell for the two with consent, due 14 days after delivery (24 Nov) and valid 30 days:
            # the next run is Sunday 20 Dec (T4, deferred), so Monday's slot
            (T5, "cross_sell", "1", e["emil"]): 1,
            (T5, "cross_sell", "1", e["willi"]): 1,
            (T8, "review_request", "1", e["hugo"]): 1,  # deferred over the holidays and Sunday
        }
    )
    conn = duckdb.connect(str(workspace["warehouse"]), read_only=True)
    try:
        sent = conn.execute(
            "select as_of, campaign, step, email from mail.sends where status = 'sent'"
        ).fetchall()
        twice = conn.execute(
            "select campaign, step, trigger_key from mail.sends group by all having count(*) > 1"
        ).fetchall()
    finally:
        conn.close()
    got = Counter((as_of.replace(tzinfo=UTC), campaign, step, email) for as_of, campaign, step, email in sent)
    assert got == expected, {"missing": expected - got, "unexpected": got - expected}
    assert not twice
    assert len(list(workspace["outbox"].glob("*.json"))) == sum(expected.values())  # nothing mailed twice
    assert {campaign for _, campaign, _, _ in expected} == set(load_campaigns())  # all eight campaigns
