"""stg_session_events keeps the newest version of each event id: a re-exported event loaded later wins, in
an incremental build and in a full refresh, whichever load is the largest (its rows are taken as they are
where no other load has their event id; macro latest_version_of_loads)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from tests.dbt_helpers import load_exports, prepare_all, run_dbt, write_exports

AS_OF = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _event(n: int, **changes) -> dict:
    return {
        "event_id": f"EV{n:03d}",
        "session_id": f"S{n % 3}",
        "customer_id": "C001",
        "is_logged_in": True,
        "event_type": "add_to_cart",
        "cart_id": "CART1",
        "product_id": f"P{n}",
        "quantity": 1,
        "unit_price": "9.90",
        "currency": "EUR",
        "occurred_at": AS_OF - timedelta(hours=10 - n),
        **changes,
    }


def _rows(warehouse: Path) -> dict[str, tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.execute(
            "select event_id, product_id, quantity, occurred_at from staging.stg_session_events"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _compiled(target: Path) -> str:
    return next(target.glob("run/**/stg_session_events.sql")).read_text()


def test_a_reexported_event_replaces_its_earlier_version(tmp_path: Path) -> None:
    warehouse, landing, target = tmp_path / "w.duckdb", tmp_path / "landing", tmp_path / "target"
    with duckdb.connect(str(warehouse)) as conn:
        prepare_all(conn)
    select = ["build", "--select", "stg_session_events", "--exclude-resource-type", "unit_test"]

    # the first export, every event once
    write_exports(landing, {"session_events": [_event(n) for n in range(5)]}, name="first.csv")
    load_exports(warehouse, landing)
    run_dbt([*select, "--full-refresh"], warehouse=warehouse, target_path=target, as_of=AS_OF)
    assert "first.csv" in _compiled(target)  # the largest load, taken as it is
    assert _rows(warehouse) == {
        f"EV{n:03d}": (f"P{n}", 1, (AS_OF - timedelta(hours=10 - n)).replace(tzinfo=None)) for n in range(5)
    }

    # a later, smaller export repeats EV002 with another quantity and adds EV005
    write_exports(landing, {"session_events": [_event(2, quantity=4), _event(5)]}, name="second.csv")
    load_exports(warehouse, landing)
    run_dbt(select, warehouse=warehouse, target_path=target, as_of=AS_OF)
    incremental = _rows(warehouse)
    assert len(incremental) == 6
    assert incremental["EV002"][1] == 4

    # rebuilt from both: the larger, older load contests EV002 with the newer one, which wins
    run_dbt([*select, "--full-refresh"], warehouse=warehouse, target_path=target, as_of=AS_OF)
    assert _rows(warehouse) == incremental

    # a third export, now the largest, repeats EV002 and EV005 again and adds EV006 and EV007
    third = [_event(2, quantity=7), _event(5, product_id="P55"), *(_event(n) for n in (6, 7, 3, 4, 1))]
    write_exports(landing, {"session_events": third}, name="third.csv")
    load_exports(warehouse, landing)
    run_dbt(select, warehouse=warehouse, target_path=target, as_of=AS_OF)
    after_third = _rows(warehouse)
    assert len(after_third) == 8
    assert after_third["EV002"][1] == 7 and after_third["EV005"][0] == "P55"
    run_dbt([*select, "--full-refresh"], warehouse=warehouse, target_path=target, as_of=AS_OF)
    assert "third.csv" in _compiled(target)
    assert _rows(warehouse) == after_third
