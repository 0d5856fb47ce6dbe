"""A live `dbt build` on DuckDB updates stg_orders, stg_customers, int_carts, int_orders,
int_customer_order_gaps and int_consent_state from the tables the last build left (macro tick_delta,
incremental strategy `tick_delta`) instead of computing them whole, where that build's record fits: after
every build each table must hold exactly the rows computing it whole gives, also when exports arrive late
with timestamps before the last build, when as_of goes back, and when a setting a model reads changes. Real
dbt runs on a real DuckDB file; the whole computation is dbt's --full-refresh on a copy of the warehouse."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from nachfass.core.ingest import load_landing
from nachfass.devtools.datagen.generate import generate_exports
from tests.dbt_helpers import prepare_all, run_dbt

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
MODELS = {
    "stg_orders": ("staging", "models/staging/stg_orders.sql"),
    "stg_customers": ("staging", "models/staging/stg_customers.sql"),
    "int_carts": ("intermediate", "models/intermediate/int_carts.sql"),
    "int_orders": ("intermediate", "models/intermediate/int_orders.sql"),
    "int_customer_order_gaps": ("intermediate", "models/intermediate/int_customer_order_gaps.sql"),
    "int_consent_state": ("intermediate", "models/intermediate/int_consent_state.sql"),
}
SELECT = ["--select", *(f"+{name}" for name in MODELS)]
# every HELD_BACK-th row of these exports arrives in a second file, after the first build
HELD_BACK = 4
LATE_TABLES = ("orders", "customers", "session_events", "products", "shipments", "consents")


def _hold_back(landing: Path, late: Path) -> int:
    """Move every HELD_BACK-th row of the shop's exports of LATE_TABLES into `late` (same layout)."""
    moved = 0
    for table in LATE_TABLES:
        source = landing / table / "shop.csv"
        with source.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields, rows = reader.fieldnames, list(reader)
        kept = [row for number, row in enumerate(rows) if number % HELD_BACK]
        held = [row for number, row in enumerate(rows) if not number % HELD_BACK]
        for path, chunk in ((source, kept), (late / table / "late.csv", held)):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(chunk)
        moved += len(held)
    return moved


def _load(warehouse: Path, landing: Path) -> None:
    """Load what is new in `landing`, as the ingest does (the sample exports' deliberately bad rows go to
    quarantine; rows whose parent is not known yet wait as orphans until it arrives)."""
    conn = duckdb.connect(str(warehouse))
    try:
        prepare_all(conn)
        assert any(report.rows_loaded for report in load_landing(conn, landing))
    finally:
        conn.close()


def _build(warehouse: Path, target: Path, as_of: datetime, *options: str) -> dict[str, str]:
    """Run the models (and what they read) as of `as_of`; how each was written: 'delta' (keys deleted
    and inserted) or 'whole'."""
    run_dbt(["run", *SELECT, *options], warehouse=warehouse, target_path=target, as_of=as_of)
    ways = {}
    for name, (_, path) in MODELS.items():
        sql = (target / "run" / "nachfass" / path).read_text(encoding="utf-8")
        ways[name] = "delta" if "tick_delta_key" in sql else "whole"
    return ways


def _rows(warehouse: Path) -> dict[str, list[tuple]]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            name: conn.execute(f"select * from {schema}.{name} order by all").fetchall()
            for name, (schema, _) in MODELS.items()
        }
    finally:
        conn.close()


def _whole(warehouse: Path, root: Path, as_of: datetime, *options: str) -> dict[str, list[tuple]]:
    """The tables computed whole as of `as_of`, on a copy of the warehouse."""
    copy = root / f"whole-{as_of:%Y%m%d%H%M}.duckdb"
    shutil.copyfile(warehouse, copy)
    run_dbt(
        ["run", "--full-refresh", "--select", *MODELS, *options],
        warehouse=copy,
        target_path=root / f"target-whole-{as_of:%Y%m%d%H%M}",
        as_of=as_of,
    )
    return _rows(copy)


def _records(warehouse: Path) -> dict[str, dict]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = conn.execute(
            "select table_name, comment from duckdb_tables() where table_name in (select unnest(?))",
            [list(MODELS)],
        ).fetchall()
    finally:
        conn.close()
    prefix = "nachfass delta build: "
    return {name: json.loads(comment[len(prefix) :]) for name, comment in rows if comment}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("live_delta")
    landing, late = root / "landing", root / "late"
    generate_exports(landing, customers=300, seed=11, as_of=AS_OF)
    assert _hold_back(landing, late) > 100
    warehouse = root / "warehouse.duckdb"
    _load(warehouse, landing)
    return root, warehouse


def test_each_build_holds_what_computing_it_whole_gives(world: tuple[Path, Path]) -> None:
    root, warehouse = world
    first, second, third = AS_OF - timedelta(days=2), AS_OF - timedelta(hours=21), AS_OF

    # the first build computes every table whole and records it
    assert set(_build(warehouse, root / "t1", first).values()) == {"whole"}
    records = _records(warehouse)
    assert {name: record["as_of"] for name, record in records.items()} == {
        name: "2026-11-22 10:00:00" for name in MODELS
    }

    # a quarter of the exports arrives late, most of it stamped before the first build's as_of: the next
    # build updates the tables and ends where computing them whole ends
    for table in LATE_TABLES:
        (root / "landing" / table / "late.csv").write_bytes((root / "late" / table / "late.csv").read_bytes())
    _load(warehouse, root / "landing")
    assert set(_build(warehouse, root / "t2", second).values()) == {"delta"}
    at_second = _rows(warehouse)
    assert at_second == _whole(warehouse, root, second)
    assert all(at_second.values())

    # nothing new loaded, 21 hours on: carts leave the window, orders and customers change version
    assert set(_build(warehouse, root / "t3", third).values()) == {"delta"}
    assert _rows(warehouse) == _whole(warehouse, root, third)
    assert _rows(warehouse) != at_second

    # a setting int_carts reads changes: it is computed whole once, the others are still updated
    lookback = ["--vars", json.dumps({"cart_lookback_days": 30})]
    later = third + timedelta(hours=1)
    assert _build(warehouse, root / "t4", later, *lookback) == {
        name: "whole" if name == "int_carts" else "delta" for name in MODELS
    }
    assert _rows(warehouse) == _whole(warehouse, root, later, *lookback)

    # as_of goes back (a backfill): computed whole
    assert set(_build(warehouse, root / "t5", second).values()) == {"whole"}
    assert _rows(warehouse) == at_second

    # a record edited by hand into something that is no timestamp: computed whole, no error
    edited = json.dumps({**_records(warehouse)["stg_orders"], "as_of": "gestern"})
    conn = duckdb.connect(str(warehouse))
    try:
        conn.execute(f"comment on table staging.stg_orders is 'nachfass delta build: {edited}'")
    finally:
        conn.close()
    edited_at = second + timedelta(minutes=5)
    assert _build(warehouse, root / "t6", edited_at)["stg_orders"] == "whole"
    assert _rows(warehouse) == _whole(warehouse, root, edited_at)

    # more than two days on: computed whole
    assert set(_build(warehouse, root / "t7", edited_at + timedelta(days=2, minutes=1)).values()) == {"whole"}
