"""The co-purchase pairs are computed once a day (int_product_pairs: an incremental table with a `cutoff`):
the first run of a day computes them from the orders placed before the day began, the day's later runs keep
them, the next day's first run replaces them, and a table from before the cutoff column is rebuilt. A real
dbt run on a real DuckDB file at each step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from tests.dbt_helpers import days, hours, load_exports, run_dbt, write_exports
from tests.test_scenarios import World

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PAIRS = (
    "select product_id, related_product_id, n_buyers_both, cutoff from intermediate.int_product_pairs "
    "order by all"
)


def _pairs(warehouse: Path) -> list[tuple]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return conn.execute(PAIRS).fetchall()
    finally:
        conn.close()


def _run(warehouse: Path, root: Path, as_of: datetime, *options: str) -> None:
    run_dbt(
        ["run", "--select", "+int_product_pairs", *options],
        warehouse=warehouse,
        target_path=root / "target",
        as_of=as_of,
    )


def _buyers(world: World, name: str, n: int, products: tuple[str, ...], placed_at: datetime) -> None:
    for number in range(n):
        cid, _ = world.customer(f"{name}_{number}")
        world.order(cid, placed_at, status="delivered", products=products)


def test_the_pairs_follow_the_day_not_the_run(tmp_path: Path, dbt_manifest) -> None:
    warehouse, landing = tmp_path / "warehouse.duckdb", tmp_path / "landing"
    world = World()
    _buyers(world, "early", 3, ("P1", "P2"), AS_OF - days(3))
    _buyers(world, "today", 2, ("P1", "P4"), AS_OF - hours(2))  # 08:00 today: after the day's cutoff
    write_exports(landing, world.rows)
    load_exports(warehouse, landing)
    midnight = datetime(2026, 11, 24)

    _run(warehouse, tmp_path, AS_OF)
    first = [("P1", "P2", 3, midnight), ("P2", "P1", 3, midnight)]
    assert _pairs(warehouse) == first

    # yesterday's orders arrive late, in a second export: the day's later runs keep the day's pairs
    late = World()
    late._n = 1000  # other ids than the first export's
    _buyers(late, "late", 2, ("P2", "P4"), AS_OF - days(1))
    write_exports(landing, late.rows, name="late.csv")
    load_exports(warehouse, landing)
    _run(warehouse, tmp_path, AS_OF + hours(0.25))
    assert _pairs(warehouse) == first

    # `daily_models: recompute` (what `nachfass diff` passes) computes the day's pairs again, once each
    _run(warehouse, tmp_path, AS_OF + hours(0.5), "--vars", json.dumps({"daily_models": "recompute"}))
    assert _pairs(warehouse) == [
        ("P1", "P2", 3, midnight),
        ("P2", "P1", 3, midnight),
        ("P2", "P4", 2, midnight),
        ("P4", "P2", 2, midnight),
    ]

    # the next day's first run computes them anew, from everything before its midnight (today's orders too)
    _run(warehouse, tmp_path, AS_OF + days(1))
    next_midnight = midnight + days(1)
    expected = [
        ("P1", "P2", 3, next_midnight),
        ("P1", "P4", 2, next_midnight),
        ("P2", "P1", 3, next_midnight),
        ("P2", "P4", 2, next_midnight),
        ("P4", "P1", 2, next_midnight),
        ("P4", "P2", 2, next_midnight),
    ]
    assert _pairs(warehouse) == expected

    # a table built before the cutoff column existed is rebuilt, not appended to
    conn = duckdb.connect(str(warehouse))
    try:
        conn.execute("alter table intermediate.int_product_pairs drop column cutoff")
        conn.execute("insert into intermediate.int_product_pairs values ('P9', 'P8', 7, 0.5)")
    finally:
        conn.close()
    _run(warehouse, tmp_path, AS_OF + days(1) + hours(1))
    assert _pairs(warehouse) == expected
