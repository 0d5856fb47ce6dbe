"""Shared helpers for the sending tests: rendered-mail fixtures and the shop settings they go out under.

Built here rather than with the renderer so these tests do not depend on templates (written in parallel).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nachfass.core.mail.message import RenderedMail, make_send_id
from nachfass.core.shop import Address, Contact, Impressum, ShopSettings

SPEC_PATH = Path("/work/shared/sendgrid/tsg_mail_v3.json")
API_KEY = "SG.test-key-that-must-never-leak.0123456789abcdef"

SHOP = ShopSettings(
    shop_name="Gartenglück Versand",
    timezone="Europe/Berlin",
    default_locale="de-DE",
    currency="EUR",
    shop_base_url="https://www.gartenglueck.example",
    service_base_url="https://mail.gartenglueck.example",
    sender=Address(email="service@gartenglueck.example", name="Gartenglück Versand"),
    reply_to=Address(email="kundenservice@gartenglueck.example", name="Gartenglück Kundenservice"),
    unsubscribe_mailto="abmelden@gartenglueck.example",
    contact=Contact(email="kundenservice@gartenglueck.example", phone="+49 30 1234567-0", hours="Mo–Fr 9–17"),
    impressum=Impressum(
        company="Gartenglück Versand GmbH",
        street="Beispielstraße 12",
        postal_code="10115",
        city="Berlin",
        country="Deutschland",
        managing_directors="Erika Musterfrau",
        register="HRB 123456 B",
        vat_id="DE123456789",
    ),
    utm_source="nachfass",
    link_ttl_days=14,
)


def make_mail(
    i: int = 0, *, campaign: str = "abandoned_cart", step: str = "reminder_1", **overrides: Any
) -> RenderedMail:
    trigger_key = overrides.pop("trigger_key", f"cart-{i:06d}")
    fields: dict[str, Any] = dict(
        send_id=make_send_id(campaign, step, trigger_key),
        campaign=campaign,
        step=step,
        variant="A" if i % 2 == 0 else "B",
        trigger_key=trigger_key,
        customer_id=f"cust-{i:06d}",
        to_email=f"kunde{i}@beispiel.example",
        to_name=f"Jörg Müller {i}",
        subject="Ihr Warenkorb wartet – Gartenschere & Co.",
        html=f"<html><body><p>Hallo Jörg,</p><p>Ihr Warenkorb {i} wartet.</p></body></html>",
        text=f"Hallo Jörg,\n\nIhr Warenkorb {i} wartet.\n",
        headers={
            "List-Unsubscribe": f"<mailto:abmelden@gartenglueck.example?subject=u-{i}>, "
            f"<https://mail.gartenglueck.example/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        categories=["marketing"],
        is_marketing=True,
        experiment_id=None,
    )
    fields.update(overrides)
    return RenderedMail(**fields)


def mails(n: int, start: int = 0, **overrides: Any) -> list[RenderedMail]:
    return [make_mail(i, **overrides) for i in range(start, start + n)]


def resolve_refs(node: Any, root: dict) -> Any:
    """Inline local ``#/...`` $refs (the mail schema has no recursive refs)."""
    if isinstance(node, dict):
        if "$ref" in node and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
            target: Any = root
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve_refs(target, root)
        return {k: resolve_refs(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, root) for v in node]
    return node


def mail_send_schema() -> dict | None:
    """The request schema of POST /v3/mail/send with the documented custom_args fix, or None if absent."""
    if not SPEC_PATH.exists():
        return None
    doc = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    schema = doc["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]["schema"]
    schema = resolve_refs(schema, doc)
    schema["properties"]["custom_args"] = {"type": "object", "additionalProperties": {"type": "string"}}
    return schema
