"""Hand-shaped scenario customers: one deterministic case per campaign trigger and per skip reason.

The bulk generator produces realistic volume, but whether a 200-customer sample happens to contain a
payment failure 3 hours before ``as_of`` would be luck. These customers (ids ``C0000001`` …) make every
case exist at any size; their times are relative to ``as_of``. The bulk generator never touches them.

Rows use the generator's internal representation: timestamps as UTC epoch seconds, money in cents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from nachfass.devtools.datagen.vocab import (
    CARRIER_TRACKING_URLS,
    CARRIERS,
    TRACKING_DIGITS,
    email_address,
)

HOUR = 3600
DAY = 86400

# Timezones tried, in order, for the quiet-hours case: the first where ``as_of`` falls between 20:00 and
# 08:00 local time wins, so the case exists whatever ``as_of`` is.
_NIGHT_ZONE_CANDIDATES = (
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Asia/Kolkata",
    "Europe/Berlin",
)


def night_timezone(as_of: datetime) -> str:
    """A timezone in which ``as_of`` is inside the 20:00–08:00 quiet hours."""
    for name in _NIGHT_ZONE_CANDIDATES:
        hour = as_of.astimezone(ZoneInfo(name)).hour
        if hour >= 20 or hour < 8:
            return name
    return "Asia/Tokyo"  # unreachable: the candidates span more than 12 hours of offsets


@dataclass
class ScenarioWorld:
    """Collects scenario rows per table, plus a description per scenario customer for the docs/tests."""

    as_of: int  # epoch seconds
    prices: dict[int, int]  # product index -> price in cents
    guide_products: list[int]  # product indexes that have a guide_url
    rows: dict[str, list[dict]] = field(default_factory=dict)
    cases: dict[str, str] = field(default_factory=dict)  # customer_id -> scenario description
    _n: dict[str, int] = field(default_factory=dict)

    def _next(self, kind: str) -> int:
        self._n[kind] = self._n.get(kind, 0) + 1
        return self._n[kind]

    def _add(self, table: str, row: dict) -> None:
        self.rows.setdefault(table, []).append(row)

    def ago(self, hours: float) -> int:
        return self.as_of - round(hours * HOUR)

    # -- customers and consents -------------------------------------------------------------------------
    def customer(
        self,
        case: str,
        first: str | None,
        last: str | None,
        salutation: str | None,
        *,
        email: str | None = None,
        locale: str | None = "de-DE",
        timezone: str | None = "Europe/Berlin",
        guest: bool = False,
    ) -> tuple[str, str]:
        n = self._next("customer")
        cid = f"C{n:07d}"
        if email is None:
            email = email_address(first, last, n, "example.de")
        created = self.ago(24 * (400 + 7 * n))
        self._add(
            "customers",
            {
                "customer_id": cid,
                "email": email,
                "first_name": first,
                "last_name": last,
                "salutation": salutation,
                "locale": locale,
                "timezone": timezone,
                "is_guest": guest,
                "created_at": created,
                "updated_at": created + DAY,
            },
        )
        self.cases[cid] = case
        return cid, email

    def consent(self, cid: str | None, email: str, event: str, hours_ago: float, source: str) -> None:
        n = self._next("consent")
        self._add(
            "consents",
            {
                "consent_event_id": f"CS{n:06d}",
                "customer_id": cid,
                "email": email,
                "purpose": "marketing_email",
                "event": event,
                "source": source,
                "occurred_at": self.ago(hours_ago),
            },
        )

    def opt_in(self, cid: str | None, email: str, days_ago: float = 200) -> None:
        """Double opt-in: form sent, link clicked 20 minutes later."""
        self.consent(cid, email, "requested", days_ago * 24, "newsletter_form")
        self.consent(cid, email, "confirmed", days_ago * 24 - 1 / 3, "mail_link")

    # -- sessions, carts, orders ------------------------------------------------------------------------
    def session(
        self,
        cid: str | None,
        *,
        logged_in: bool,
        last_hours_ago: float,
        cart: list[tuple[int, int]] | None = None,
        remove_last: bool = False,
        tail: tuple[str, ...] = (),
    ) -> tuple[str, str]:
        """A session whose last event happens ``last_hours_ago`` before as_of.

        ``cart`` = [(product index, quantity)] added one by one; ``tail`` = trailing events such as
        ("checkout_started", "payment_failed") or ("checkout_started", "purchase").
        """
        n = self._next("session")
        sid, cart_id = f"SS{n:05d}", f"KS{n:05d}"
        steps: list[tuple[str, int | None, int | None]] = [("page_view", None, None)]
        for p, _ in cart or []:
            steps.append(("product_view", p, None))
        for p, q in cart or []:
            steps.append(("add_to_cart", p, q))
        if remove_last and cart:
            steps.append(("remove_from_cart", cart[-1][0], cart[-1][1]))
        steps.extend((t, None, None) for t in tail)
        end = self.ago(last_hours_ago)
        for i, (etype, p, q) in enumerate(steps):
            is_cart = etype in (
                "add_to_cart",
                "remove_from_cart",
                "checkout_started",
                "payment_failed",
                "purchase",
            )
            has_price = etype in ("add_to_cart", "remove_from_cart")
            self._event(
                session_id=sid,
                customer_id=cid,
                is_logged_in=logged_in,
                event_type=etype,
                cart_id=cart_id if is_cart else None,
                product_id=_pid(p) if p else None,
                quantity=q if has_price else None,
                unit_price=self.prices[p] if has_price and p else None,
                currency="EUR" if has_price else None,
                occurred_at=end - (len(steps) - 1 - i) * 75,
            )
        return sid, cart_id

    def _event(self, *, bad_ts: bool = False, **row: object) -> None:
        n = self._next("event")
        self._add("session_events", {"event_id": f"ES{n:06d}", **row, "_bad_ts": bad_ts})

    def order(
        self,
        cid: str,
        items: list[tuple[int, int]],
        *,
        placed_hours_ago: float,
        status: str,
        shipped_hours_ago: float | None = None,
        delivered_hours_ago: float | None = None,
        session_id: str | None = None,
        cart_id: str | None = None,
    ) -> str:
        n = self._next("order")
        oid = f"O3{n:08d}"
        subtotal = sum(self.prices[p] * q for p, q in items)
        shipping = 0 if subtotal >= 5000 else 495  # free shipping from 50 EUR
        placed = self.ago(placed_hours_ago)
        times = [placed] + [self.ago(h) for h in (shipped_hours_ago, delivered_hours_ago) if h is not None]
        self._add(
            "orders",
            {
                "order_id": oid,
                "customer_id": cid,
                "cart_id": cart_id,
                "session_id": session_id,
                "status": status,
                "total_amount": subtotal + shipping,
                "currency": "EUR",
                "placed_at": placed,
                "updated_at": max(times) + (2 * HOUR if status in ("cancelled", "returned") else 0),
            },
        )
        for line, (p, q) in enumerate(items, start=1):
            self._add(
                "order_items",
                {
                    "order_id": oid,
                    "line_no": line,
                    "product_id": _pid(p),
                    "quantity": q,
                    "unit_price": self.prices[p],
                },
            )
        if shipped_hours_ago is not None:
            carrier = CARRIERS[n % len(CARRIERS)]
            digits = TRACKING_DIGITS[carrier]
            code = str(700000000 + n * 7919).rjust(digits, "0")
            shipped = self.ago(shipped_hours_ago)
            self._add(
                "shipments",
                {
                    "shipment_id": f"SH3{n:08d}",
                    "order_id": oid,
                    "carrier": carrier,
                    # every other carrier export has no URL: the mail builds it from the number
                    "tracking_url": CARRIER_TRACKING_URLS[carrier].format(tracking_number=code)
                    if n % 2
                    else None,
                    "shipped_at": shipped,
                    "delivered_at": self.ago(delivered_hours_ago)
                    if delivered_hours_ago is not None
                    else None,
                    "tracking_number": code,
                    "expected_delivery_date": shipped + 2 * DAY,
                },
            )
        return oid

    def delivered_order(self, cid: str, delivered_days_ago: float, status: str = "delivered") -> str:
        p = self.guide_products[0]
        return self.order(
            cid,
            [(p, 1), (3, 2)],
            placed_hours_ago=24 * (delivered_days_ago + 3),
            status=status,
            shipped_hours_ago=24 * (delivered_days_ago + 2),
            delivered_hours_ago=24 * delivered_days_ago,
        )

    def ticket(
        self, cid: str, topic: str, status: str, opened_hours_ago: float, closed_hours_ago: float | None
    ) -> None:
        n = self._next("ticket")
        closed = self.ago(closed_hours_ago) if closed_hours_ago is not None else None
        self._add(
            "support_tickets",
            {
                "ticket_id": f"TS{n:05d}",
                "customer_id": cid,
                "topic": topic,
                "status": status,
                "opened_at": self.ago(opened_hours_ago),
                "closed_at": closed,
                "updated_at": closed if closed is not None else self.ago(opened_hours_ago / 2),
            },
        )


def _pid(p: int) -> str:
    return f"P{p:05d}"


def build_scenarios(as_of: datetime, prices: dict[int, int], guide_products: list[int]) -> ScenarioWorld:
    """All scenario customers and their rows. Product indexes 1..200 always exist (≥ 200 products)."""
    w = ScenarioWorld(as_of=int(as_of.timestamp()), prices=prices, guide_products=guide_products)
    night_tz = night_timezone(as_of)

    # --- abandoned_cart -----------------------------------------------------------------------------
    c, e = w.customer("abandoned_cart step 1 due (cart 2 h old, consent)", "Jürgen", "Müller", "Herr")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=2, cart=[(12, 1), (40, 2)])
    c, e = w.customer("abandoned_cart step 2 due (cart 30 h old, consent)", "Sabine", "Weiß", "Frau")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=30, cart=[(7, 1)])
    c, e = w.customer("abandoned_cart near expiry (cart 70 h old)", "Björn", "Schäfer", "Herr")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=70, cart=[(55, 1)])
    c, e = w.customer("skip expired: abandoned cart 5 days old", "Käthe", "Groß", "Frau")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=120, cart=[(9, 3)])
    c, e = w.customer("skip no_consent: cart, no consent events at all", "Uwe", "Krüger", "Herr")
    w.session(c, logged_in=True, last_hours_ago=3, cart=[(21, 1)])
    c, e = w.customer("skip no_consent: cart, consent only requested", "Petra", "Schröder", "Frau")
    w.consent(c, e, "requested", 24 * 10, "newsletter_form")
    w.session(c, logged_in=True, last_hours_ago=4, cart=[(22, 1)])
    c, e = w.customer("skip no_consent: cart, consent withdrawn", "Günter", "Köhler", "Herr")
    w.opt_in(c, e, days_ago=300)
    w.consent(c, e, "withdrawn", 24 * 20, "mail_link")
    w.session(c, logged_in=True, last_hours_ago=5, cart=[(23, 2)])
    c, e = w.customer("abandoned_cart: consent confirmed again after withdrawal", "Renée", "Jäger", "Frau")
    w.opt_in(c, e, days_ago=300)
    w.consent(c, e, "withdrawn", 24 * 100, "support")
    w.consent(c, e, "confirmed", 24 * 30, "account")
    w.session(c, logged_in=True, last_hours_ago=6, cart=[(24, 1)])
    c, e = w.customer("skip purchased: cart 10 h old, then ordered 2 h ago", "Ömer", "Öztürk", "Herr")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=10, cart=[(25, 1)])
    sid, kid = w.session(
        c, logged_in=True, last_hours_ago=2, cart=[(25, 1)], tail=("checkout_started", "purchase")
    )
    w.order(c, [(25, 1)], placed_hours_ago=2, status="paid", session_id=sid, cart_id=kid)
    c, e = w.customer(
        f"skip quiet_hours: cart 3 h old, customer in {night_tz}",
        "Emily",
        "Walker",
        "Frau",
        locale="en-GB",
        timezone=night_tz,
    )
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=3, cart=[(26, 1)])
    c, e = w.customer("no candidate: cart of a known but not logged-in visitor", "Klaus", "Bauer", "Herr")
    w.opt_in(c, e)
    w.session(c, logged_in=False, last_hours_ago=3, cart=[(27, 1)])
    c, e = w.customer("no candidate: cart emptied (add then remove)", "Lea", "Vogel", "Frau")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=3, cart=[(28, 1)], remove_last=True)
    c, e = w.customer("abandoned_cart: neutral salutation (no name)", None, None, None)
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=2.5, cart=[(29, 1)])
    c, e = w.customer(
        "abandoned_cart: salutation divers, de-AT, Vienna",
        "Kim",
        "Huber",
        "divers",
        locale="de-AT",
        timezone="Europe/Vienna",
    )
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=8, cart=[(30, 1), (31, 1)])
    c, e = w.customer(
        "abandoned_cart: de-CH, Zurich, name with markup/quotes (escaping)",
        "Eva <b>",
        'Schmidt "Schmiddi", jun.',
        "Frau",
        locale="de-CH",
        timezone="Europe/Zurich",
    )
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=9, cart=[(32, 1)])
    c, e = w.customer("no candidate: guest cart (guests never log in)", "Paul", "Lange", "Herr", guest=True)
    w.session(c, logged_in=False, last_hours_ago=3, cart=[(33, 1)])
    # Anonymous visitor: a cart nobody can be mailed about.
    w.session(None, logged_in=False, last_hours_ago=2, cart=[(34, 1)])

    # --- checkout_recovery ----------------------------------------------------------------------------
    c, e = w.customer("checkout_recovery: checkout_started 3 h ago, no purchase", "Andrea", "Keller", "Frau")
    w.opt_in(c, e)
    w.session(c, logged_in=True, last_hours_ago=3, cart=[(35, 1)], tail=("checkout_started",))
    c, e = w.customer("checkout_recovery: payment_failed 1 h ago", "Tobias", "Fuchs", "Herr")
    w.opt_in(c, e)
    w.session(
        c, logged_in=True, last_hours_ago=1, cart=[(36, 1)], tail=("checkout_started", "payment_failed")
    )
    c, e = w.customer("skip expired: payment_failed 40 h ago", "Monika", "Roth", "Frau")
    w.opt_in(c, e)
    w.session(
        c, logged_in=True, last_hours_ago=40, cart=[(37, 1)], tail=("checkout_started", "payment_failed")
    )
    c, e = w.customer("no candidate: checkout then purchase within minutes", "Felix", "Kaiser", "Herr")
    w.opt_in(c, e)
    sid, kid = w.session(
        c, logged_in=True, last_hours_ago=5, cart=[(38, 1)], tail=("checkout_started", "purchase")
    )
    w.order(c, [(38, 1)], placed_hours_ago=5, status="paid", session_id=sid, cart_id=kid)
    c, e = w.customer("skip no_consent: checkout_started 6 h ago", "Birgit", "Hartmann", "Frau")
    w.session(c, logged_in=True, last_hours_ago=6, cart=[(39, 1)], tail=("checkout_started",))

    # --- order_thanks / shipping_update ---------------------------------------------------------------
    c, e = w.customer("order_thanks: order placed 20 min ago", "Stefan", "Lehmann", "Herr")
    w.order(c, [(41, 1), (42, 1)], placed_hours_ago=1 / 3, status="placed")
    c, e = w.customer("order_thanks: order placed 30 h ago (paid)", "Julia", "Neumann", "Frau")
    w.order(c, [(43, 2)], placed_hours_ago=30, status="paid")
    c, e = w.customer(
        "shipping_update shipped: shipped 2 h ago (order_thanks expired)", "Frank", "Braun", "Herr"
    )
    w.order(c, [(44, 1)], placed_hours_ago=72, status="shipped", shipped_hours_ago=2)
    c, e = w.customer(
        "shipping_update delivered: delivered 1 h ago, product with guide", "Ursula", "Krause", "Frau"
    )
    w.order(
        c,
        [(guide_products[0], 1)],
        placed_hours_ago=96,
        status="delivered",
        shipped_hours_ago=50,
        delivered_hours_ago=1,
    )
    c, e = w.customer("no mail: order cancelled 5 h ago", "Dieter", "Wolf", "Herr")
    w.order(c, [(45, 1)], placed_hours_ago=5, status="cancelled")

    # --- review_request (existing_customer) -----------------------------------------------------------
    c, e = w.customer("review_request: delivered 7 days ago, consent", "Claudia", "Richter", "Frau")
    w.opt_in(c, e)
    w.delivered_order(c, 7)
    c, e = w.customer(
        "review_request via § 7 (3) UWG: buyer, objection notice, no opt-in", "Matthias", "Koch", "Herr"
    )
    w.consent(c, e, "objection_notice_given", 24 * 10, "checkout")
    w.delivered_order(c, 7)
    c, e = w.customer(
        "skip guest: guest delivered 7 days ago, objection notice but no opt-in",
        "Hannah",
        "Scholz",
        "Frau",
        guest=True,
    )
    w.consent(c, e, "objection_notice_given", 24 * 10, "checkout")
    w.delivered_order(c, 7)
    c, e = w.customer("skip no_consent: delivered 7 days ago, withdrawn", "Wolfgang", "Schwarz", "Herr")
    w.consent(c, e, "objection_notice_given", 24 * 10, "checkout")
    w.consent(c, e, "withdrawn", 24 * 8, "mail_link")
    w.delivered_order(c, 7)
    c, e = w.customer("review_request: shipped 11 days ago, delivered_at unknown", "Gisela", "Peters", "Frau")
    w.opt_in(c, e)
    w.order(c, [(46, 1)], placed_hours_ago=24 * 12, status="shipped", shipped_hours_ago=24 * 11)
    c, e = w.customer("no mail: delivered 7 days ago, then returned", "Sören", "Lang", "Herr")
    w.opt_in(c, e)
    w.delivered_order(c, 7, status="returned")
    c, e = w.customer("skip expired: review request for delivery 45 days ago", "Anja", "Beck", "Frau")
    w.opt_in(c, e)
    w.delivered_order(c, 45)

    # --- cross_sell ------------------------------------------------------------------------------------
    c, e = w.customer("cross_sell: delivered 14 days ago, consent", "Maximilian", "König", "Herr")
    w.opt_in(c, e)
    w.delivered_order(c, 14)
    c, e = w.customer(
        "cross_sell: delivered 14 days ago, chose fewer mails (frequency_weekly)", "Bärbel", "Möller", "Frau"
    )
    w.opt_in(c, e)
    w.consent(c, e, "frequency_weekly", 24 * 60, "mail_link")
    w.delivered_order(c, 14)

    # --- competing marketing mails ----------------------------------------------------------------------
    c, e = w.customer(
        "skip frequency_cap: cart 2 h old and review request due the same run", "Lukas", "Wagner", "Herr"
    )
    w.opt_in(c, e)
    w.delivered_order(c, 7)
    w.session(c, logged_in=True, last_hours_ago=2, cart=[(47, 1)])

    # --- reactivation ----------------------------------------------------------------------------------
    c, e = w.customer("reactivation: single order 125 days ago (> 120 days)", "Jörg", "Hofmann", "Herr")
    w.opt_in(c, e, days_ago=400)
    w.delivered_order(c, 125)
    c, e = w.customer(
        "reactivation: orders 400/300/201 days ago (2 x median gap = 199)", "Elisabeth", "Meier", "Frau"
    )
    w.opt_in(c, e, days_ago=500)
    for d in (400, 300, 201):
        w.delivered_order(c, d)
    c, e = w.customer(
        "not inactive: orders 450/150 days ago (2 x median gap = 600)", "Andreas", "Lehmann", "Herr"
    )
    w.opt_in(c, e, days_ago=500)
    for d in (450, 150):
        w.delivered_order(c, d)
    c, e = w.customer("skip no_consent: single order 130 days ago", "Jutta", "Hermann", "Frau")
    w.delivered_order(c, 130)

    # --- support_followup ------------------------------------------------------------------------------
    c, e = w.customer("support_followup: ticket closed 2 days ago", "Karl-Heinz", "Große-Brömer", "Herr")
    w.ticket(c, "Lieferung", "closed", 24 * 5, 48)
    c, e = w.customer("support_followup: ticket solved 2 days 3 h ago", "Zoë", "von Bülow", "Frau")
    w.ticket(c, "Rücksendung", "solved", 24 * 4, 51)
    c, e = w.customer("skip expired: ticket closed 10 days ago", "René", "Nowak", "Herr")
    w.ticket(c, "Rechnung", "closed", 24 * 12, 24 * 10)
    c, e = w.customer("no mail: ticket still open", "Charlotte", "Zimmermann", "Frau")
    w.ticket(c, "Produktfrage", "open", 20, None)

    # --- contract violations (deliberate; the loader must quarantine them) -----------------------------
    c, e = w.customer("invalid email (quarantine): 'max@'", "Max", "Mustermann", "Herr", email="max@")
    c, e = w.customer(
        "invalid email (quarantine): no @", "Erika", "Mustermann", "Frau", email="kein-at-zeichen.example"
    )
    sid = "SS99999"
    w._event(
        session_id=sid,
        customer_id=None,
        is_logged_in=False,
        event_type="page_view",
        cart_id=None,
        product_id=None,
        quantity=None,
        unit_price=None,
        currency=None,
        occurred_at=w.ago(5),
        bad_ts=True,
    )
    w._event(
        session_id=sid,
        customer_id=None,
        is_logged_in=False,
        event_type="kart",
        cart_id=None,
        product_id=None,
        quantity=None,
        unit_price=None,
        currency=None,
        occurred_at=w.ago(5),
    )

    # Newsletter sign-up before an account exists: consent rows without customer_id.
    w.opt_in(None, "gartenfreundin@example.org", days_ago=30)
    w.consent(None, "nur-angefragt@example.net", "requested", 24 * 3, "newsletter_form")
    return w
