"""The export contract (v1.1: v1 plus optional columns) as data: tables, columns, types, keys, allowed values.

This is the project's input interface; ``docs/exports.md`` is its human-readable form and
``../shared/spec/exports.md`` the specification. The loader and the staging models both follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["str", "int", "decimal", "bool", "ts", "email"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = "str"
    required: bool = False
    allowed: tuple[str, ...] = ()  # closed vocabularies (status, event_type …)
    minimum: int | None = None  # numbers: the smallest value allowed
    exclusive_minimum: bool = False  # numbers: ``minimum`` itself is not allowed (quantity > 0)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    updated_at: str | None = None  # newest version of a key wins by this column (else by load order)
    defaults: dict[str, str] = field(default_factory=dict)
    # (column, parent table, parent column): a row whose parent is not (yet) known is loaded but held as
    # an orphan (counted per file, listed in dbt's quality.orphans) until the parent's export arrives.
    parents: tuple[tuple[str, str, str], ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


def C(  # noqa: N802
    name: str,
    type: ColumnType = "str",
    required: bool = False,
    allowed: tuple[str, ...] = (),
    *,
    minimum: int | None = None,
    exclusive_minimum: bool = False,
) -> Column:
    return Column(name, type, required, allowed, minimum, exclusive_minimum)


# Value rules shared by several tables.
POSITIVE = {"minimum": 0, "exclusive_minimum": True}  # quantities
NOT_NEGATIVE = {"minimum": 0}  # prices and amounts
# Timestamps may lie at most this long after the export's arrival (the run's as_of): clocks and time zones
# of shop systems differ by hours, a date years ahead is an error.
MAX_FUTURE = "1 day"
# Longest value of any one field; names, URLs and ids are far shorter, anything longer is a broken export.
MAX_VALUE_CHARS = 10_000


# Units of content_amount (products). The unit price is shown per 1 kg, 1 l, 1 m, 1 m² or 1 m³
# (PAngV § 5); g, ml and cm are converted.
CONTENT_UNITS: tuple[str, ...] = ("g", "kg", "ml", "l", "cm", "m", "m2", "m3")

TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            "customers",
            (
                C("customer_id", required=True),
                C("email", "email", required=True),
                C("first_name"),
                C("last_name"),
                C("salutation", allowed=("Herr", "Frau", "divers")),
                C("locale"),
                C("timezone"),
                C("is_guest", "bool"),
                C("created_at", "ts", required=True),
                C("updated_at", "ts"),
            ),
            key=("customer_id",),
            updated_at="updated_at",
        ),
        Table(
            "consents",
            (
                C("consent_event_id", required=True),
                C("customer_id"),
                C("email", "email", required=True),
                C("purpose", required=True),
                C(
                    "event",
                    required=True,
                    allowed=(
                        "requested",
                        "confirmed",
                        "withdrawn",
                        "objection_notice_given",
                        "frequency_weekly",
                    ),
                ),
                C("source"),
                C("occurred_at", "ts", required=True),
            ),
            key=("consent_event_id",),
        ),
        Table(
            "session_events",
            (
                C("event_id", required=True),
                C("session_id", required=True),
                C("customer_id"),
                C("is_logged_in", "bool"),
                C(
                    "event_type",
                    required=True,
                    allowed=(
                        "page_view",
                        "product_view",
                        "add_to_cart",
                        "remove_from_cart",
                        "checkout_started",
                        "payment_failed",
                        "purchase",
                    ),
                ),
                C("cart_id"),
                C("product_id"),
                C("quantity", "int", **POSITIVE),
                C("unit_price", "decimal", **NOT_NEGATIVE),
                C("currency"),
                C("occurred_at", "ts", required=True),
            ),
            key=("event_id",),
            parents=(("customer_id", "customers", "customer_id"),),
        ),
        Table(
            "orders",
            (
                C("order_id", required=True),
                C("customer_id", required=True),
                C("cart_id"),
                C("session_id"),
                C(
                    "status",
                    required=True,
                    allowed=("placed", "paid", "shipped", "delivered", "cancelled", "returned"),
                ),
                C("total_amount", "decimal", required=True, **NOT_NEGATIVE),
                C("currency"),
                C("placed_at", "ts", required=True),
                C("updated_at", "ts"),
            ),
            key=("order_id",),
            updated_at="updated_at",
            parents=(("customer_id", "customers", "customer_id"),),
        ),
        Table(
            "order_items",
            (
                C("order_id", required=True),
                C("line_no", "int", required=True),
                C("product_id", required=True),
                C("quantity", "int", required=True, **POSITIVE),
                C("unit_price", "decimal", required=True, **NOT_NEGATIVE),
            ),
            key=("order_id", "line_no"),
            parents=(("order_id", "orders", "order_id"),),
        ),
        Table(
            "shipments",
            (
                C("shipment_id", required=True),
                C("order_id", required=True),
                C("carrier"),
                C("tracking_url"),
                C("shipped_at", "ts"),
                C("delivered_at", "ts"),
                # Optional since contract v1.1 (older exports without them still load):
                C("tracking_number"),
                C("expected_delivery_date", "ts"),
            ),
            key=("shipment_id",),
            parents=(("order_id", "orders", "order_id"),),
        ),
        Table(
            "products",
            (
                C("product_id", required=True),
                C("name", required=True),
                C("category"),
                C("price", "decimal", **NOT_NEGATIVE),
                C("currency"),
                C("url"),
                C("image_url"),
                C("guide_url"),
                C("in_stock", "bool"),
                C("updated_at", "ts"),
                # Optional since contract v1.1: net content of goods sold by weight, volume or length,
                # for the unit price (Grundpreis, PAngV) next to advertised prices.
                C("content_amount", "decimal"),
                C("content_unit", allowed=CONTENT_UNITS),
            ),
            key=("product_id",),
            updated_at="updated_at",
        ),
        Table(
            "support_tickets",
            (
                C("ticket_id", required=True),
                C("customer_id", required=True),
                C("topic"),
                C("status", required=True, allowed=("open", "pending", "solved", "closed")),
                C("opened_at", "ts", required=True),
                C("closed_at", "ts"),
                C("updated_at", "ts"),
            ),
            key=("ticket_id",),
            updated_at="updated_at",
            parents=(("customer_id", "customers", "customer_id"),),
        ),
    ]
}

EXPORT_TABLES: tuple[str, ...] = tuple(TABLES)
FILE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet")
