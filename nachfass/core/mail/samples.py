"""Realistic sample ``MailJob``s for every campaign/step: template previews, the gallery, tests, preflight.

The payloads follow the contract in ``message.py``. Some transactional samples deliberately carry
``recommendations`` (as a careless dbt model might) to prove that the renderer drops them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from nachfass.core.mail.message import MailJob

SHOP = "https://www.gartenglueck.example"

_ITEMS = [
    {
        "product_id": "P-1001",
        "name": "Hochbeet „Kräutergarten“ aus Lärchenholz",
        "quantity": 1,
        "unit_price": "49.90",
        "currency": "EUR",
        "image_url": f"{SHOP}/media/p/P-1001.jpg",
        "url": f"{SHOP}/p/hochbeet-kraeutergarten",
    },
    {
        "product_id": "P-2040",
        "name": "Bio-Kräutererde, 40 l",
        "quantity": 2,
        "unit_price": "8.95",
        "currency": "EUR",
        "image_url": f"{SHOP}/media/p/P-2040.jpg",
        "url": f"{SHOP}/p/bio-kraeutererde-40l",
        # sold by volume: the mail shows the unit price (Grundpreis)
        "content_amount": "40",
        "content_unit": "l",
    },
]

# As int_recommendation_lists delivers them: best first, each with the reason the mail shows.
_RECOMMENDATIONS = [
    {
        "product_id": "P-3300",
        "name": "Gartenschere Profi",
        "unit_price": "24.50",
        "currency": "EUR",
        "image_url": f"{SHOP}/media/p/P-3300.jpg",
        "url": f"{SHOP}/p/gartenschere-profi",
        "category": "Gartenwerkzeug",
        "reason": {"kind": "bought_together", "product_name": "Hochbeet „Kräutergarten“ aus Lärchenholz"},
    },
    {
        "product_id": "P-2210",
        "name": "Hornspäne, 2,5 kg",
        "unit_price": "7.99",
        "currency": "EUR",
        "image_url": f"{SHOP}/media/p/P-2210.jpg",
        "url": f"{SHOP}/p/hornspaene-2-5kg",
        "category": "Erde & Dünger",
        "content_amount": "2.5",
        "content_unit": "kg",
        "reason": {"kind": "bought_together", "product_name": "Bio-Kräutererde, 40 l"},
    },
    {
        "product_id": "P-3410",
        "name": "Pflanzkelle Edelstahl",
        "unit_price": "12.90",
        "currency": "EUR",
        "image_url": f"{SHOP}/media/p/P-3410.jpg",
        "url": f"{SHOP}/p/pflanzkelle-edelstahl",
        "category": "Gartenwerkzeug",
        "reason": {"kind": "category", "category": "Gartenwerkzeug"},
    },
    {
        "product_id": "P-5120",
        "name": 'Solarleuchte "Glühwürmchen"',
        "unit_price": "19.90",
        "currency": "EUR",
        "image_url": f"{SHOP}/media/p/P-5120.jpg",
        "url": f"{SHOP}/p/solarleuchte-gluehwuermchen",
        "category": "Licht & Deko",
        "reason": {"kind": "popular"},
    },
]

_ORDER = {
    "order_id": "100234",
    "placed_at": "2026-11-22T10:15:00+01:00",
    "total_amount": "67.80",
    "currency": "EUR",
    "items": _ITEMS,
}

_SHIPMENT = {
    "shipment_id": "SH-5501",
    "carrier": "DHL",
    "tracking_url": "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode=00340434161234567890",
    "tracking_number": "00340434161234567890",
    "shipped_at": "2026-11-23T14:02:00+01:00",
    "expected_delivery_date": "2026-11-25",
    "delivered_at": None,
}

_PEOPLE = {
    "schmidt": {"first_name": "Anna", "last_name": "Schmidt", "salutation": "Frau"},
    "mueller": {"first_name": "Jonas", "last_name": "Müller", "salutation": "Herr"},
    "divers": {"first_name": "Kim", "last_name": "Schneider", "salutation": "divers"},
    "anonymous": {"first_name": None, "last_name": None, "salutation": None},
}

_SAMPLES: list[tuple[str, str, str, str, str, dict[str, Any]]] = [
    # campaign, step, policy, person, trigger_key, payload
    (
        "abandoned_cart",
        "1",
        "required",
        "schmidt",
        "cart:K-77812",
        {
            "cart_id": "K-77812",
            "items": _ITEMS,
            "total_amount": "67.80",
            "currency": "EUR",
            "recommendations": _RECOMMENDATIONS,
        },
    ),
    (
        "abandoned_cart",
        "2",
        "required",
        "mueller",
        "cart:K-77813",
        {
            "cart_id": "K-77813",
            "items": _ITEMS[:1],
            "total_amount": "49.90",
            "currency": "EUR",
            "recommendations": _RECOMMENDATIONS,
        },
    ),
    (
        "checkout_recovery",
        "1",
        "required",
        "schmidt",
        "cart:K-77814",
        {"cart_id": "K-77814", "items": _ITEMS, "total_amount": "67.80", "currency": "EUR"},
    ),
    (
        "order_thanks",
        "1",
        "none",
        "mueller",
        "order:100234",
        # recommendations here must be dropped: order_thanks is transactional
        {**_ORDER, "recommendations": _RECOMMENDATIONS},
    ),
    (
        "shipping_update",
        "shipped",
        "none",
        "schmidt",
        "shipment:SH-5501:shipped",
        {"order_id": "100234", "items": _ITEMS, "shipment": _SHIPMENT},
    ),
    (
        "shipping_update",
        "delivered",
        "none",
        "divers",
        "shipment:SH-5501:delivered",
        {
            "order_id": "100234",
            "items": _ITEMS,
            "shipment": {**_SHIPMENT, "delivered_at": "2026-11-25T11:40:00+01:00"},
            "guides": [
                {
                    "product_id": "P-1001",
                    "name": "Hochbeet „Kräutergarten“ aus Lärchenholz",
                    "guide_url": f"{SHOP}/ratgeber/hochbeet-aufbauen",
                }
            ],
        },
    ),
    (
        "review_request",
        "1",
        "existing_customer",
        "schmidt",
        "order:100234",
        {**_ORDER, "recommendations": _RECOMMENDATIONS},
    ),
    (
        "cross_sell",
        "1",
        "required",
        "divers",
        "order:100234",
        {**_ORDER, "recommendations": _RECOMMENDATIONS},
    ),
    (
        "reactivation",
        "1",
        "required",
        "mueller",
        "inactive:C1003:2026-11-22",
        {"last_order_at": "2026-06-14T18:30:00+02:00", "recommendations": _RECOMMENDATIONS},
    ),
    (
        "reactivation",
        "2",
        "required",
        "anonymous",
        "inactive:C1004:2026-11-22",
        {"last_order_at": "2026-05-02T09:00:00+02:00", "recommendations": _RECOMMENDATIONS},
    ),
    (
        "support_followup",
        "1",
        "none",
        "anonymous",
        "ticket:T-8812",
        {
            "ticket": {
                "ticket_id": "T-8812",
                "topic": "Lieferung unvollständig",
                "opened_at": "2026-11-18T09:12:00+01:00",
                "closed_at": "2026-11-20T16:45:00+01:00",
            },
            "recommendations": _RECOMMENDATIONS,
        },
    ),
]


# A campaign without a sample of its own (one a marketer just added) previews with every payload key a
# segment may give (message.py), so its templates can use any of them.
_GENERIC = (
    "schmidt",
    {
        **_ORDER,
        "cart_id": "K-77815",
        "shipment": _SHIPMENT,
        "ticket": {
            "ticket_id": "T-8813",
            "topic": "Frage zur Bestellung",
            "opened_at": "2026-11-18T09:12:00+01:00",
            "closed_at": "2026-11-20T16:45:00+01:00",
        },
        "last_order_at": "2026-06-14T18:30:00+02:00",
        "recommendations": _RECOMMENDATIONS,
    },
)


def sample_jobs(campaigns=None, locales: Sequence[str] = ("de-DE", "en-GB")) -> list[MailJob]:
    """One job per campaign/step/variant/locale of the campaign registry (default: the segment YAML
    files), with realistic names and payloads; variants and consent policy come from the registry."""
    if campaigns is None:
        from nachfass.core.campaigns import load_campaigns

        campaigns = load_campaigns()
    known = {(c, s): (person, key, payload) for c, s, _policy, person, key, payload in _SAMPLES}
    jobs: list[MailJob] = []
    for locale in locales:
        n = 0
        for name, settings in campaigns.items():
            experiment = settings.experiment
            variants = list(experiment.variants) if experiment else ["control"]
            for step in settings.steps:
                n += 1
                person, trigger_key, payload = known.get(
                    (name, step), (_GENERIC[0], f"{name}:{step}:sample", _GENERIC[1])
                )
                for variant in variants:
                    jobs.append(
                        MailJob(
                            campaign=name,
                            step=step,
                            variant=variant,
                            trigger_key=trigger_key,
                            customer_id=f"C{1000 + n}",
                            email=f"kunde{1000 + n}@example.org",
                            locale=locale,
                            consent_policy=settings.consent_policy,  # type: ignore[arg-type]
                            has_marketing_consent=settings.consent_policy != "none",
                            payload=copy.deepcopy(payload),
                            experiment_id=experiment.id if experiment else None,
                            **_PEOPLE[person],
                        )
                    )
    return jobs
