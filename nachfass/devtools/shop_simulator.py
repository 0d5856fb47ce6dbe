"""Demo only: the shop's side of the loop. Some customers who clicked a mail come back and order; their
orders arrive as an ordinary export file, so attribution and conversions work as they would in a shop."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

ORDER_COLUMNS = [
    "order_id",
    "customer_id",
    "cart_id",
    "session_id",
    "status",
    "total_amount",
    "currency",
    "placed_at",
    "updated_at",
]


def _fraction(*parts: object) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def simulate_orders(
    warehouse: Path, landing: Path, *, conversion_rates: dict[str, float] | None = None, seed: int = 1
) -> int:
    """Write `<landing>/orders/zz-demo-orders-<ts>.csv` with an order for a deterministic share of the
    clickers (per variant, default control 35 %, others 50 %), placed 1–20 h after the click. Returns the
    number of orders written."""
    rates = {"control": 0.35, **(conversion_rates or {})}
    clicks: dict[str, datetime] = {}
    for path in sorted((landing / "sendgrid_events").glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event.get("event") == "click" and event.get("send_id"):
                at = datetime.fromtimestamp(int(event["timestamp"]), UTC)
                clicks[event["send_id"]] = min(at, clicks.get(event["send_id"], at))
    if not clicks:
        return 0
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        sends = conn.execute(
            "select send_id, customer_id, variant from mail.sends where send_id in (select unnest(?))",
            [sorted(clicks)],
        ).fetchall()
    finally:
        conn.close()
    rows = []
    for send_id, customer_id, variant in sorted(sends):
        if customer_id is None or _fraction(seed, send_id) >= rates.get(variant, 0.5):
            continue
        placed = clicks[send_id] + timedelta(hours=1 + 19 * _fraction(seed, send_id, "delay"))
        amount = 20 + round(180 * _fraction(seed, send_id, "amount"), 2)
        order_id = f"DEMO-{send_id[2:14]}"
        stamp = placed.strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append([order_id, customer_id, "", "", "paid", f"{amount:.2f}", "EUR", stamp, stamp])
    folder = landing / "orders"
    folder.mkdir(parents=True, exist_ok=True)
    # named after the last order's logical time: the same clicks give the same file, on any day
    latest = max(row[7] for row in rows) if rows else "none"
    final = folder / f"zz-demo-orders-{latest.replace(':', '').replace('-', '')}.csv"
    temporary = folder / f".{final.name}.tmp"
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ORDER_COLUMNS)
        writer.writerows(rows)
    temporary.replace(final)
    return len(rows)
