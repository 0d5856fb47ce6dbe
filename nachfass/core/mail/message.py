"""The shapes that travel between the stages: a mail to render, a rendered mail, a send result.

``MailJob`` is one row of the dbt model ``mail_candidates`` with ``decision = 'send'``. Its ``payload`` is
the campaign-specific data the template needs, built in dbt as JSON (docs/templates.md: what templates see):

    items:            [{product_id, name, quantity, unit_price, currency, image_url, url,
                        content_amount, content_unit}]            cart/order lines (content: unit price)
    cart_id:          str            abandoned_cart, checkout_recovery
    order_id:         str            order_thanks, shipping_update, review_request, cross_sell
    placed_at:        ISO timestamp  order mails
    total_amount:     number, currency: str
    shipment:         {shipment_id, carrier, tracking_url, tracking_number, shipped_at,
                       expected_delivery_date, delivered_at}
    ticket:           {ticket_id, topic, opened_at, closed_at}
    recommendations:  [{product_id, name, unit_price, currency, image_url, url, category, content_amount,
                        content_unit, reason: {kind, product_name, category}}]
                                     abandoned_cart, cross_sell, reactivation (int_recommendation_lists)
    guides:           [{product_id, name, guide_url}]                               shipping_update delivered
    last_order_at:    ISO timestamp  reactivation

Missing keys are simply absent; a template that needs one and does not get it fails the whole batch
before anything is sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

ConsentPolicy = Literal["none", "required", "existing_customer"]
MARKETING_POLICIES: frozenset[str] = frozenset({"required", "existing_customer"})


def make_send_id(campaign: str, step: str, trigger_key: str) -> str:
    """Opaque, deterministic id of one (campaign, step, trigger key).

    Deterministic so that a re-render after a crash produces the same id (the ledger's primary key), and
    opaque (a hash) so that SendGrid, which keeps ``custom_args`` forever, learns no personal data.
    """
    digest = hashlib.sha256(f"{campaign}\x1f{step}\x1f{trigger_key}".encode()).hexdigest()
    return f"s_{digest[:24]}"


@dataclass(frozen=True)
class MailJob:
    campaign: str
    step: str
    variant: str
    trigger_key: str
    customer_id: str
    email: str
    first_name: str | None
    last_name: str | None
    salutation: str | None  # 'Herr' | 'Frau' | 'divers' | None
    locale: str  # BCP 47, e.g. 'de-DE'
    consent_policy: ConsentPolicy
    has_marketing_consent: bool  # confirmed double opt-in, not withdrawn
    payload: dict[str, Any] = field(default_factory=dict)
    experiment_id: str | None = None

    @property
    def send_id(self) -> str:
        return make_send_id(self.campaign, self.step, self.trigger_key)

    @property
    def is_marketing(self) -> bool:
        return self.consent_policy in MARKETING_POLICIES


@dataclass(frozen=True)
class RenderedMail:
    send_id: str
    campaign: str
    step: str
    variant: str
    trigger_key: str
    customer_id: str
    to_email: str
    to_name: str | None
    subject: str
    html: str
    text: str
    headers: dict[str, str]  # extra headers, e.g. List-Unsubscribe; never To/From/Subject
    categories: list[str]
    is_marketing: bool
    experiment_id: str | None = None
    preheader: str = ""  # the inbox preview line (also in the HTML); not stored in mail.outgoing


SendStatus = Literal["sent", "failed", "unknown"]


@dataclass(frozen=True)
class SendResult:
    status: SendStatus
    message_id: str | None = None  # SendGrid X-Message-Id; None in outbox mode
    error: str | None = None  # human-readable, never contains the API key
