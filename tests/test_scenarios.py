"""End to end through dbt: a hand-written export set with one customer per rule, loaded with the real loader,
earlier sends and SendGrid events inserted by hand, one `dbt build`, then the exact decision and reason of
every customer's mail in eligibility.mail_candidates.

as_of is Tuesday 2026-11-24 10:00 UTC = 11:00 in Berlin (inside the send window); customers in
America/Los_Angeles are at 02:00 (quiet hours).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from nachfass.core.campaigns import assign_variant, load_campaigns
from tests.dbt_helpers import (
    candidates,
    copy_dbt_project,
    days,
    hours,
    insert_events,
    insert_sends,
    load_exports,
    run_dbt,
    write_exports,
)

pytestmark = [pytest.mark.slow, pytest.mark.clock]

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CART_EXPERIMENT = load_campaigns()["abandoned_cart"].experiment


def _customer_id(base: str, *, holdout: bool = False) -> str:
    """A customer id whose A/B bucket in the cart experiment is (or is not) the holdout."""
    for n in range(1000):
        candidate = base if n == 0 else f"{base}_{n}"
        if (assign_variant(candidate, CART_EXPERIMENT) == "holdout") == holdout:
            return candidate
    raise AssertionError("no id found")


class World:
    """Builds the export rows; each `customer()` call adds one customer with the given facts."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {
            t: []
            for t in (
                "customers",
                "consents",
                "session_events",
                "orders",
                "order_items",
                "shipments",
                "products",
                "support_tickets",
            )
        }
        self.later_rows: dict[str, list[dict]] = {}  # a second export file per table
        self.ids: dict[str, str] = {}
        self.sends: list[dict] = []
        self.events: list[dict] = []
        self._n = 0
        for number, (category, in_stock, guide) in enumerate(
            [
                ("garden", True, "https://shop.example/guide/spade"),
                ("garden", True, None),
                ("garden", False, None),
                ("kitchen", True, None),
            ],
            start=1,
        ):
            self.rows["products"].append(
                {
                    "product_id": f"P{number}",
                    "name": f"Produkt {number}",
                    "category": category,
                    "price": "10.00",
                    "currency": "EUR",
                    "url": f"https://shop.example/p/P{number}",
                    "in_stock": in_stock,
                    "guide_url": guide,
                }
            )

    def _next(self) -> int:
        self._n += 1
        return self._n

    def customer(
        self,
        rule: str,
        *,
        consent: tuple[str, ...] = ("confirmed",),
        holdout: bool = False,
        timezone: str = "Europe/Berlin",
        is_guest: bool = False,
    ) -> tuple[str, str]:
        customer_id = _customer_id(f"C_{rule}", holdout=holdout)
        email = f"{rule.replace('_', '.')}@example.com"
        self.ids[rule] = customer_id
        self.rows["customers"].append(
            {
                "customer_id": customer_id,
                "email": email,
                "first_name": "Erika",
                "last_name": "Muster",
                "salutation": "Frau",
                "locale": "de-DE",
                "timezone": timezone,
                "is_guest": is_guest,
                "created_at": AS_OF - days(400),
            }
        )
        for offset, event in enumerate(consent):
            self.rows["consents"].append(
                {
                    "consent_event_id": f"K{self._next()}",
                    "customer_id": customer_id,
                    "email": email,
                    "purpose": "marketing_email",
                    "event": event,
                    "source": "checkout",
                    "occurred_at": AS_OF - days(300) + hours(offset),
                }
            )
        return customer_id, email

    def cart(
        self,
        customer_id: str,
        at: datetime,
        *,
        events: tuple[str, ...] = ("add_to_cart",),
        logged_in: bool = True,
    ) -> str:
        cart_id = f"cart_{customer_id}_{self._next()}"
        for offset, event_type in enumerate(events):
            self.rows["session_events"].append(
                {
                    "event_id": f"E{self._next()}",
                    "session_id": f"S_{cart_id}",
                    "customer_id": customer_id,
                    "is_logged_in": logged_in,
                    "event_type": event_type,
                    "cart_id": cart_id,
                    "product_id": "P1",
                    "quantity": 1,
                    "unit_price": "10.00",
                    "currency": "EUR",
                    "occurred_at": at + hours(offset * 0.1),
                }
            )
        return cart_id

    def version(self, table: str, key: str, **changes: object) -> None:
        """A later version of an exported row (same key, new values), in a later export file."""
        key_column = {"orders": "order_id", "customers": "customer_id"}[table]
        latest = [row for row in self.rows[table] if row[key_column] == key][-1]
        self.later_rows.setdefault(table, []).append({**latest, **changes})

    def order(
        self,
        customer_id: str,
        placed_at: datetime,
        *,
        status: str = "placed",
        products: tuple[str, ...] = ("P4",),
        shipped_at: datetime | None = None,
        delivered_at: datetime | None = None,
    ) -> str:
        order_id = f"O{self._next()}"
        self.rows["orders"].append(
            {
                "order_id": order_id,
                "customer_id": customer_id,
                "status": status,
                "total_amount": "10.00",
                "currency": "EUR",
                "placed_at": placed_at,
                "updated_at": placed_at,
            }
        )
        for line_no, product_id in enumerate(products, start=1):
            self.rows["order_items"].append(
                {
                    "order_id": order_id,
                    "line_no": line_no,
                    "product_id": product_id,
                    "quantity": 1,
                    "unit_price": "10.00",
                }
            )
        if shipped_at:
            self.rows["shipments"].append(
                {
                    "shipment_id": f"SH{order_id}",
                    "order_id": order_id,
                    "carrier": "DHL",
                    "tracking_url": "https://dhl.example/t/1",
                    "shipped_at": shipped_at,
                    "delivered_at": delivered_at,
                }
            )
        return order_id


def build_world() -> World:
    world = World()
    now = AS_OF

    # abandoned cart: due, no consent, holdout, purchased, expired, already sent
    cid, _ = world.customer("cart_due")
    world.cart(cid, now - hours(2))
    cid, _ = world.customer("cart_no_consent", consent=("requested",))
    world.cart(cid, now - hours(2))
    cid, _ = world.customer("cart_withdrawn", consent=("confirmed", "withdrawn"))
    world.cart(cid, now - hours(2))
    cid, _ = world.customer("cart_reconfirmed", consent=("confirmed", "withdrawn", "confirmed"))
    world.cart(cid, now - hours(2))
    cid, _ = world.customer("cart_holdout", holdout=True)
    world.cart(cid, now - hours(2))
    cid, _ = world.customer("cart_purchased")
    world.cart(cid, now - hours(3))
    world.order(cid, now - hours(1.5))
    cid, _ = world.customer("cart_expired")
    world.cart(cid, now - hours(73))
    cid, email = world.customer("cart_already_sent")
    cart = world.cart(cid, now - hours(5))
    world.sends.append(
        {
            "campaign": "abandoned_cart",
            "step": "1",
            "trigger_key": cart,
            "customer_id": cid,
            "email": email,
            "sent_at": now - days(8),
        }
    )
    cid, _ = world.customer("cart_anonymous_session")
    world.cart(cid, now - hours(2), logged_in=False)
    cid, _ = world.customer("cart_emptied")
    world.cart(cid, now - hours(2), events=("add_to_cart", "remove_from_cart"))

    # step 2: a day after step 1, only if step 1 was not clicked
    for rule, clicked in (("cart_step2", False), ("cart_step2_clicked", True)):
        cid, email = world.customer(rule)
        cart = world.cart(cid, now - hours(30))
        step_1 = {"campaign": "abandoned_cart", "step": "1", "trigger_key": cart}
        world.sends.append({**step_1, "customer_id": cid, "email": email, "sent_at": now - hours(28)})
        if clicked:
            world.events.append({**step_1, "event": "click", "email": email, "occurred_at": now - hours(27)})

    # always: suppressed and invalid addresses
    cid, email = world.customer("cart_suppressed")
    world.cart(cid, now - hours(2))
    world.events.append({"event": "spamreport", "email": email, "occurred_at": now - days(20)})
    cid, email = world.customer("cart_invalid")
    world.cart(cid, now - hours(2))
    world.events.append(
        {
            "event": "dropped",
            "email": email,
            "occurred_at": now - days(20),
            "reason": "Invalid SMTPAPI header",
        }
    )

    # quiet hours: 02:00 in Los Angeles → deferred to 08:00 local; a cart that expires before then → expired
    cid, _ = world.customer("quiet_hours", timezone="America/Los_Angeles")
    world.cart(cid, now - hours(2))
    cid, _ = world.customer("quiet_expired", timezone="America/Los_Angeles")
    world.cart(cid, now - hours(71))

    # frequency: a marketing mail 5 h ago; weekly preference with one 3 days ago; priority between campaigns
    cid, email = world.customer("cap_24h")
    world.cart(cid, now - hours(2))
    world.sends.append(
        {
            "campaign": "cross_sell",
            "step": "1",
            "trigger_key": "O_old_1",
            "customer_id": cid,
            "email": email,
            "sent_at": now - hours(5),
        }
    )
    cid, email = world.customer("cap_weekly", consent=("confirmed", "frequency_weekly"))
    world.cart(cid, now - hours(2))
    world.sends.append(
        {
            "campaign": "cross_sell",
            "step": "1",
            "trigger_key": "O_old_2",
            "customer_id": cid,
            "email": email,
            "sent_at": now - days(3),
        }
    )
    # priority: a cart reminder (priority 2) and a review request (3) for one address in one run
    cid, _ = world.customer("cap_priority", consent=("confirmed", "objection_notice_given"))
    world.cart(cid, now - hours(2))
    world.order(cid, now - days(10), status="delivered", shipped_at=now - days(9), delivered_at=now - days(8))

    # one cart, one series: a checkout recovery for the cart (this run, or an earlier one) ends its reminders
    cid, _ = world.customer("series_same_run")
    world.cart(cid, now - hours(2), events=("add_to_cart", "checkout_started"))
    cid, email = world.customer("series_earlier_run")
    cart = world.cart(cid, now - hours(3), events=("add_to_cart", "checkout_started"))
    world.sends.append(
        {
            "campaign": "checkout_recovery",
            "step": "1",
            "trigger_key": cart,
            "customer_id": cid,
            "email": email,
            "sent_at": now - hours(2),
        }
    )

    # transactional mails: no consent needed
    cid, _ = world.customer("order_thanks", consent=())
    world.order(cid, now - hours(1))
    cid, _ = world.customer("order_cancelled", consent=())
    world.order(cid, now - hours(1), status="cancelled")
    cid, _ = world.customer("order_returned", consent=("objection_notice_given",))
    world.order(cid, now - days(20), status="delivered")  # bought before: the review request may go
    world.order(cid, now - days(12), status="returned", shipped_at=now - days(11), delivered_at=now - days(8))

    # logical time: versions stamped after as_of are not seen yet (a return, a changed address)
    cid, _ = world.customer("later_return", consent=())
    order = world.order(cid, now - hours(1))
    world.version("orders", order, status="returned", updated_at=now + days(3))
    cid, _ = world.customer("later_address")
    world.cart(cid, now - hours(2))
    world.version("customers", cid, email="new.address@example.com", updated_at=now + hours(1))
    cid, _ = world.customer("shipping", consent=())
    world.order(
        cid,
        now - days(3),
        status="delivered",
        products=("P1", "P4"),
        shipped_at=now - hours(3),
        delivered_at=now - hours(1),
    )
    cid, _ = world.customer("support", consent=())
    world.rows["support_tickets"].append(
        {
            "ticket_id": "T1",
            "customer_id": cid,
            "topic": "Lieferung",
            "status": "solved",
            "opened_at": now - days(5),
            "closed_at": now - days(2) - hours(1),
            "updated_at": now - days(2) - hours(1),
        }
    )

    # review request (existing_customer): bought before + objection notice; without it; guest
    for rule, consent, guest in (
        ("review_existing", ("objection_notice_given",), False),
        ("review_no_objection", (), False),
        ("review_guest", ("objection_notice_given",), True),
    ):
        cid, _ = world.customer(rule, consent=consent, is_guest=guest)
        world.order(
            cid, now - days(10), status="delivered", shipped_at=now - days(9), delivered_at=now - days(8)
        )

    # cross-sell: P1 bought together with P2 (in stock) and P3 (sold out) by two other customers (a pair
    # needs at least two buyers to count as "bought together")
    for other in ("other_buyer", "other_buyer_2"):
        cid, _ = world.customer(other, consent=())
        world.order(cid, now - days(300), status="delivered", products=("P1", "P2", "P3"))
    cid, email = world.customer("cross_sell")
    order = world.order(
        cid,
        now - days(17),
        status="delivered",
        products=("P1",),
        shipped_at=now - days(16),
        delivered_at=now - days(15),
    )
    world.sends.append(
        {
            "campaign": "review_request",
            "step": "1",
            "trigger_key": order,
            "customer_id": cid,
            "email": email,
            "sent_at": now - days(8),
        }
    )

    # reactivation: 120 days; own cadence (every 100 days → 200 days); not yet inactive; ordered again
    cid, _ = world.customer("react_fixed")
    world.order(cid, now - days(125), status="delivered")
    cid, _ = world.customer("react_cadence")
    for ago in (405, 305, 205):
        world.order(cid, now - days(ago), status="delivered")
    cid, _ = world.customer("react_not_yet")
    for ago in (400, 300, 150):
        world.order(cid, now - days(ago), status="delivered")
    cid, _ = world.customer("react_purchased")
    world.order(cid, now - days(130), status="delivered")
    world.order(cid, now - days(1), status="delivered")
    cid, email = world.customer("react_step2")
    order = world.order(cid, now - days(128), status="delivered")
    step_1 = {"campaign": "reactivation", "step": "1", "trigger_key": f"{cid}:{order}"}
    world.sends.append({**step_1, "customer_id": cid, "email": email, "sent_at": now - days(7) - hours(1)})
    world.events.append({**step_1, "event": "open", "email": email, "occurred_at": now - days(6)})

    # dormant: both reactivation mails of an old episode, nothing opened in the 30 days after the second
    cid, email = world.customer("dormant")
    world.cart(cid, now - hours(2))
    for step, ago in (("1", 80), ("2", 73)):
        world.sends.append(
            {
                "campaign": "reactivation",
                "step": step,
                "trigger_key": f"{cid}:O_old",
                "customer_id": cid,
                "email": email,
                "sent_at": now - days(ago),
            }
        )
    return world


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World]:
    root = tmp_path_factory.mktemp("scenario")
    world = build_world()
    write_exports(root / "landing", world.rows)
    write_exports(root / "landing", world.later_rows, name="export-later.csv")
    warehouse = root / "warehouse.duckdb"
    load_exports(warehouse, root / "landing")
    insert_sends(warehouse, world.sends)
    insert_events(warehouse, world.events)
    run_dbt(["build"], warehouse=warehouse, target_path=root / "target", as_of=AS_OF)
    return warehouse, world


@pytest.fixture(scope="module")
def rows(scenario: tuple[Path, World]) -> dict:
    return candidates(scenario[0])


def decision(rows: dict, world: World, rule: str, campaign: str, step: str = "1") -> tuple[str, str]:
    row = rows[(world.ids[rule], campaign, step)]
    return row["decision"], row["reason"]


CASES = [
    ("cart_due", "abandoned_cart", "1", ("send", "due")),
    ("cart_no_consent", "abandoned_cart", "1", ("skip", "no_consent")),
    ("cart_withdrawn", "abandoned_cart", "1", ("skip", "no_consent")),
    ("cart_reconfirmed", "abandoned_cart", "1", ("send", "due")),
    ("cart_holdout", "abandoned_cart", "1", ("skip", "holdout")),
    ("cart_purchased", "abandoned_cart", "1", ("skip", "purchased")),
    ("cart_expired", "abandoned_cart", "1", ("skip", "expired")),
    ("cart_already_sent", "abandoned_cart", "1", ("skip", "already_sent")),
    ("cart_step2", "abandoned_cart", "2", ("send", "due")),
    ("cart_suppressed", "abandoned_cart", "1", ("skip", "suppressed")),
    ("cart_invalid", "abandoned_cart", "1", ("skip", "invalid_address")),
    ("quiet_hours", "abandoned_cart", "1", ("defer", "quiet_hours")),
    ("quiet_expired", "abandoned_cart", "1", ("skip", "expired")),
    ("cap_24h", "abandoned_cart", "1", ("skip", "frequency_cap")),
    ("cap_weekly", "abandoned_cart", "1", ("skip", "frequency_cap")),
    ("cap_priority", "abandoned_cart", "1", ("send", "due")),
    ("cap_priority", "review_request", "1", ("skip", "frequency_cap")),
    ("series_same_run", "checkout_recovery", "1", ("send", "due")),
    ("series_same_run", "abandoned_cart", "1", ("skip", "already_reminded")),
    ("series_earlier_run", "abandoned_cart", "1", ("skip", "already_reminded")),
    ("order_thanks", "order_thanks", "1", ("send", "due")),
    ("order_cancelled", "order_thanks", "1", ("skip", "order_cancelled")),
    ("order_returned", "review_request", "1", ("skip", "order_returned")),
    ("later_return", "order_thanks", "1", ("send", "due")),
    ("later_address", "abandoned_cart", "1", ("send", "due")),
    ("shipping", "shipping_update", "shipped", ("send", "due")),
    ("shipping", "shipping_update", "delivered", ("send", "due")),
    ("shipping", "order_thanks", "1", ("skip", "expired")),
    ("support", "support_followup", "1", ("send", "due")),
    ("review_existing", "review_request", "1", ("send", "due")),
    ("review_no_objection", "review_request", "1", ("skip", "no_consent")),
    ("review_guest", "review_request", "1", ("skip", "no_consent")),
    ("cross_sell", "cross_sell", "1", ("send", "due")),
    ("cross_sell", "review_request", "1", ("skip", "already_sent")),
    ("react_fixed", "reactivation", "1", ("send", "due")),
    ("react_cadence", "reactivation", "1", ("send", "due")),
    ("react_purchased", "reactivation", "1", ("skip", "purchased")),
    ("react_step2", "reactivation", "2", ("send", "due")),
    ("react_step2", "reactivation", "1", ("skip", "already_sent")),
    ("dormant", "abandoned_cart", "1", ("skip", "dormant")),
    # near misses: the campaign's own rule rejects the trigger, the row says which (spec: "Clarifications")
    ("cart_anonymous_session", "abandoned_cart", "1", ("skip", "not_logged_in")),
    ("cart_emptied", "abandoned_cart", "1", ("skip", "empty_cart")),
    ("react_not_yet", "reactivation", "1", ("skip", "not_inactive_yet")),
]


@pytest.mark.parametrize(
    ("rule", "campaign", "step", "expected"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES]
)
def test_decision_and_reason(
    rows: dict, scenario: tuple[Path, World], rule: str, campaign: str, step: str, expected: tuple[str, str]
) -> None:
    assert decision(rows, scenario[1], rule, campaign, step) == expected


def test_every_reason_is_covered() -> None:
    reasons = {expected[1] for *_, expected in CASES}
    assert reasons == {
        "due",
        "no_consent",
        "suppressed",
        "frequency_cap",
        "quiet_hours",
        "already_sent",
        "already_reminded",
        "purchased",
        "order_cancelled",
        "order_returned",
        "expired",
        "holdout",
        "invalid_address",
        "dormant",
        "not_logged_in",
        "empty_cart",
        "not_inactive_yet",
    }


def test_no_row_when_the_trigger_does_not_hold(rows: dict, scenario: tuple[Path, World]) -> None:
    world = scenario[1]
    keys = {(customer, campaign, step) for customer, campaign, step in rows}
    # clicked step 1 → no step 2 (step 2's trigger is an unclicked step 1); an anonymous cart has no step 2
    assert (world.ids["cart_step2_clicked"], "abandoned_cart", "2") not in keys
    assert (world.ids["cart_anonymous_session"], "abandoned_cart", "2") not in keys


def test_a_version_stamped_after_as_of_is_not_seen_yet(rows: dict, scenario: tuple[Path, World]) -> None:
    row = rows[(scenario[1].ids["later_address"], "abandoned_cart", "1")]
    assert row["email"] == "later.address@example.com"  # the address changes an hour after as_of


def test_quiet_hours_defer_to_eight_in_the_morning_local_time(
    rows: dict, scenario: tuple[Path, World]
) -> None:
    row = rows[(scenario[1].ids["quiet_hours"], "abandoned_cart", "1")]
    assert row["deferred_until"] == datetime(2026, 11, 24, 16, 0)  # 08:00 PST


def test_payloads_carry_what_the_templates_need(rows: dict, scenario: tuple[Path, World]) -> None:
    world = scenario[1]
    cross_sell = json.loads(rows[(world.ids["cross_sell"], "cross_sell", "1")]["payload"])
    assert [r["product_id"] for r in cross_sell["recommendations"]] == ["P2", "P4"][
        : len(cross_sell["recommendations"])
    ]
    assert "P3" not in {r["product_id"] for r in cross_sell["recommendations"]}  # sold out
    assert "P1" not in {r["product_id"] for r in cross_sell["recommendations"]}  # already in the order
    delivered = json.loads(rows[(world.ids["shipping"], "shipping_update", "delivered")]["payload"])
    assert delivered["guides"] == [
        {"product_id": "P1", "name": "Produkt 1", "guide_url": "https://shop.example/guide/spade"}
    ]
    assert delivered["shipment"]["carrier"] == "DHL"
    cart = json.loads(rows[(world.ids["cart_due"], "abandoned_cart", "1")]["payload"])
    assert cart["items"][0]["quantity"] == 1 and cart["cart_id"].startswith("cart_")
    ticket = json.loads(rows[(world.ids["support"], "support_followup", "1")]["payload"])
    assert ticket["ticket"]["ticket_id"] == "T1"
    react = json.loads(rows[(world.ids["react_fixed"], "reactivation", "1")]["payload"])
    assert "last_order_at" in react


def test_changing_settings_changes_who_is_selected(scenario: tuple[Path, World], tmp_path: Path) -> None:
    """Edit the campaign YAML in a copy of the project: a longer cart delay and a consent policy change."""
    warehouse, world = scenario
    project = copy_dbt_project(tmp_path / "dbt")
    cart_yml = project / "models" / "segments" / "abandoned_cart.yml"
    settings = yaml.safe_load(cart_yml.read_text())
    settings["models"][0]["config"]["meta"]["campaign"]["steps"]["1"]["delay_minutes"] = 180
    cart_yml.write_text(yaml.safe_dump(settings, sort_keys=False))
    thanks_yml = project / "models" / "segments" / "order_thanks.yml"
    thanks_yml.write_text(
        thanks_yml.read_text().replace(
            "consent_policy: none", "consent_policy: required\n          priority: 9"
        )
    )

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    run_dbt(
        ["build", "--select", "segments", "mail_candidates", "int_send_windows"],
        warehouse=copy,
        target_path=tmp_path / "target",
        as_of=AS_OF,
        project_dir=project,
    )
    changed = candidates(copy)
    # the cart is 2 h old: due after 1 h, not yet after 3 h
    assert (world.ids["cart_due"], "abandoned_cart", "1") not in changed
    assert changed[(world.ids["order_thanks"], "order_thanks", "1")]["reason"] == "no_consent"
