"""Attribution (last touch, 5-day window) and the A/B table on hand-written sends and orders, checked
against figures computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import days, insert_sends, load_exports, run_dbt, write_exports
from statsmodels.stats.proportion import proportions_ztest

from nachfass.core.mail.message import make_send_id

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
pytestmark = pytest.mark.slow


def customer(cid: str) -> dict:
    return {"customer_id": cid, "email": f"{cid.lower()}@example.de", "created_at": AS_OF - days(400)}


def order(oid: str, cid: str, at: datetime, amount: str, status: str = "paid") -> dict:
    return {
        "order_id": oid,
        "customer_id": cid,
        "status": status,
        "total_amount": amount,
        "currency": "EUR",
        "placed_at": at,
    }


def send(campaign: str, key: str, cid: str, at: datetime, status: str = "sent") -> dict:
    return {
        "campaign": campaign,
        "step": "1",
        "trigger_key": key,
        "customer_id": cid,
        "email": f"{cid.lower()}@example.de",
        "sent_at": at,
        "status": status,
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("attribution")
    warehouse, landing = tmp / "w.duckdb", tmp / "landing"
    write_exports(
        landing,
        {
            "customers": [customer(c) for c in ("CA", "CB", "CC", "CD", "CE")],
            "orders": [
                order("O-A1", "CA", AS_OF - days(2), "50.00"),  # after both of CA's mails: the later one wins
                order("O-A2", "CA", AS_OF - days(5), "30.00"),  # between them: the first mail
                order("O-B1", "CB", AS_OF - days(2), "80.00"),  # 6 days after the mail: outside the window
                order("O-C1", "CC", AS_OF - days(1), "70.00"),  # holdout customer: counts for the holdout
                order("O-D1", "CD", AS_OF - days(2), "40.00"),  # after a transactional mail only
                order("O-E1", "CE", AS_OF - days(3), "60.00", status="cancelled"),
            ],
        },
    )
    load_exports(warehouse, landing)
    insert_sends(
        warehouse,
        [
            send("abandoned_cart", "K-A", "CA", AS_OF - days(6)),
            send("review_request", "R-A", "CA", AS_OF - days(3)),
            send("abandoned_cart", "K-B", "CB", AS_OF - days(8)),
            send("abandoned_cart", "K-C", "CC", AS_OF - days(3), status="holdout"),
            send("order_thanks", "T-D", "CD", AS_OF - days(3)),
            send("abandoned_cart", "K-E", "CE", AS_OF - days(4)),
        ],
    )
    conn = duckdb.connect(str(warehouse))
    conn.execute(
        "update mail.sends set experiment_id = 'exp', variant = case customer_id "
        "when 'CC' then 'holdout' when 'CB' then 'b' else 'control' end "
        "where campaign = 'abandoned_cart'"
    )
    conn.close()
    run_dbt(
        ["build", "--select", "+ab_results", "+campaign_performance"],
        warehouse=warehouse,
        target_path=tmp / "target",
        as_of=AS_OF,
    )
    return warehouse


def performance(warehouse: Path) -> dict[str, tuple]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    rows = conn.execute(
        "select send_id, n_attributed_orders, attributed_revenue from analytics.mail_performance"
    )
    result = {send_id: (n, float(revenue)) for send_id, n, revenue in rows.fetchall()}
    conn.close()
    return result


def test_last_touch_within_the_window(built) -> None:
    perf = performance(built)
    sid = lambda campaign, key: make_send_id(campaign, "1", key)  # noqa: E731
    assert perf[sid("review_request", "R-A")] == (1, 50.0)  # O-A1: the newest touch before it
    assert perf[sid("abandoned_cart", "K-A")] == (1, 30.0)  # O-A2: placed before the second mail
    assert perf[sid("abandoned_cart", "K-B")] == (0, 0.0)  # 6 days > 5-day window
    assert perf[sid("abandoned_cart", "K-C")] == (1, 70.0)  # holdout records attract orders too
    assert perf[sid("order_thanks", "T-D")] == (0, 0.0)  # transactional mails earn nothing
    assert perf[sid("abandoned_cart", "K-E")] == (0, 0.0)  # cancelled orders are not conversions


def test_ab_results_on_hand_computed_numbers(built) -> None:
    conn = duckdb.connect(str(built), read_only=True)
    cursor = conn.execute("select * from analytics.ab_results where experiment_id = 'exp'")
    names = [d[0] for d in cursor.description]
    rows = {r["variant"]: r for r in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())}
    conn.close()
    control, b, holdout = rows["control"], rows["b"], rows["holdout"]
    # control: CA (converted, 30 €) and CE (cancelled order: not converted) → 1 / 2
    assert (control["n_assigned"], control["n_sent"], control["n_converted"]) == (2, 2, 1)
    assert float(control["revenue"]) == 30.0 and control["conversion_rate"] == 0.5
    assert (b["n_assigned"], b["n_converted"]) == (1, 0)
    assert (holdout["n_assigned"], holdout["n_sent"], holdout["n_converted"]) == (1, 0, 1)
    # b is compared with control, control with the holdout
    assert b["baseline_variant"] == "control" and control["baseline_variant"] == "holdout"
    assert b["lift"] == pytest.approx(0 / 1 / 0.5 - 1)
    z, p = proportions_ztest([0, 1], [1, 2])
    assert b["p_value"] == pytest.approx(p, abs=1e-6)
    assert not any(r["is_winner"] for r in rows.values())  # far below 500 per variant
