"""stg_session_events keeps the newest version of each event id: a re-exported event loaded later wins, in
an incremental build and in a full refresh. Rows that all come from one loaded file (the ingest quarantines
a key's repeats within a file) are taken as they are, without numbering the versions."""

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

    # the first export: one file, every event once; taken as it is
    write_exports(landing, {"session_events": [_event(n) for n in range(5)]}, name="first.csv")
    load_exports(warehouse, landing)
    run_dbt([*select, "--full-refresh"], warehouse=warehouse, target_path=target, as_of=AS_OF)
    assert "row_number()" not in _compiled(target)
    assert _rows(warehouse) == {
        f"EV{n:03d}": (f"P{n}", 1, (AS_OF - timedelta(hours=10 - n)).replace(tzinfo=None)) for n in range(5)
    }

    # a later export repeats EV002 with another quantity and adds EV005
    write_exports(landing, {"session_events": [_event(2, quantity=4), _event(5)]}, name="second.csv")
    load_exports(warehouse, landing)
    run_dbt(select, warehouse=warehouse, target_path=target, as_of=AS_OF)
    incremental = _rows(warehouse)
    assert len(incremental) == 6
    assert incremental["EV002"][1] == 4

    # rebuilt from both files: the versions are numbered, and the same event wins
    run_dbt([*select, "--full-refresh"], warehouse=warehouse, target_path=target, as_of=AS_OF)
    assert "row_number()" in _compiled(target)
    assert _rows(warehouse) == incremental
