"""Benchmark the dbt project: full build on N customers (~31 session events each), then one more day.

    python bench/bench_dbt.py --customers 1000000 --workdir /tmp/nachfass_bench

Stages (each reuses the work dir, so a second invocation skips what is there already):

1. generate ``days`` (90) of exports with ``generate_exports`` (parquet) and load them with ``load_landing``;
2. ``dbt build`` at ``as_of`` (full: incremental models are rebuilt with ``--full-refresh``);
3. write a one-day delta (the last day's events, orders, shipments and tickets shifted by one day under new
   keys, as new files), load it, and time ``dbt build --exclude tag:full_history`` at ``as_of + 1 day`` (the
   daily run: the whole-history data tests of the big incremental staging tables are left to the full
   build and CI), then time those skipped tests on their own (``dbt test --select tag:full_history``);
4. compile the project and run the compiled SQL of the heavy models straight in DuckDB, so the dbt overhead
   shows as a ratio.

Targets on the 2-core machine: full build ≤ 120 s, daily run ≤ 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
DBT_DIR = REPO / "dbt"
sys.path.insert(0, str(REPO))

from nachfass.core.dbt import dbt_vars_arg  # noqa: E402

# The models whose SQL is timed directly in DuckDB (the bulk of the work), in dependency order.
DIRECT_MODELS = [
    "stg_session_events",
    "int_carts",
    "int_orders",
    "int_customer_order_gaps",
    "int_product_pairs",
    "int_product_recommendations",
    "int_recommendation_lists",
    "int_order_lines",
    "abandoned_cart",
    "checkout_recovery",
    "cross_sell",
    "reactivation",
    "mail_candidates",
]

# The daily run's extra arguments (what the Dagster daily job passes): the data tests tagged full_history
# (whole-history checks of the big incremental staging tables) run in the full build and CI only.
DAILY_ARGS = ["--exclude", "tag:full_history"]

# The delta day: event tables get new rows; keys are prefixed so they never collide with the history.
DELTA_SQL = {
    "session_events": """
        select 'd{n}_' || event_id as event_id, 'd{n}_' || session_id as session_id, customer_id,
            is_logged_in, event_type, case when cart_id is not null then 'd{n}_' || cart_id end as cart_id,
            product_id, quantity, unit_price, currency, occurred_at + interval 1 day as occurred_at
        from raw.session_events where occurred_at > '{since}' and occurred_at <= '{until}'
    """,
    "orders": """
        select 'd{n}_' || order_id as order_id, customer_id,
            case when cart_id is not null then 'd{n}_' || cart_id end as cart_id, session_id, status,
            total_amount, currency, placed_at + interval 1 day as placed_at,
            updated_at + interval 1 day as updated_at
        from raw.orders where placed_at > '{since}' and placed_at <= '{until}'
    """,
    "order_items": """
        select 'd{n}_' || items.order_id as order_id, line_no, product_id, quantity, unit_price
        from raw.order_items as items
        inner join raw.orders as orders on items.order_id = orders.order_id
        where orders.placed_at > '{since}' and orders.placed_at <= '{until}'
    """,
    "shipments": """
        select 'd{n}_' || shipment_id as shipment_id, order_id, carrier, tracking_url,
            shipped_at + interval 1 day as shipped_at, delivered_at + interval 1 day as delivered_at
        from raw.shipments where shipped_at > '{since}' and shipped_at <= '{until}'
    """,
    "support_tickets": """
        select 'd{n}_' || ticket_id as ticket_id, customer_id, topic, status,
            opened_at + interval 1 day as opened_at, closed_at + interval 1 day as closed_at,
            updated_at + interval 1 day as updated_at
        from raw.support_tickets where opened_at > '{since}' and opened_at <= '{until}'
    """,
}


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare(workdir: Path, customers: int, as_of: datetime, days: int) -> dict:
    from nachfass.core.ingest import load_landing
    from nachfass.core.schema import prepare_warehouse
    from nachfass.devtools.datagen.generate import generate_exports

    landing, warehouse = workdir / "landing", workdir / "warehouse.duckdb"
    stats: dict = {}
    if not (workdir / "loaded.ok").exists():
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        started = time.perf_counter()
        stats["rows"] = generate_exports(
            landing, customers=customers, seed=7, as_of=as_of, days=days, file_format="parquet"
        )
        stats["generate_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        conn = duckdb.connect(str(warehouse))
        try:
            prepare_warehouse(conn)
            _ensure_optional_schemas(conn)
            load_landing(conn, landing)
        finally:
            conn.close()
        stats["load_s"] = round(time.perf_counter() - started, 1)
        (workdir / "loaded.ok").write_text(json.dumps(stats))
    else:
        stats = json.loads((workdir / "loaded.ok").read_text())
    return stats


def _ensure_optional_schemas(conn: duckdb.DuckDBPyConnection) -> None:
    """Tables other parts of the project create (erasures) when their module is there."""
    try:
        from nachfass.core.schema import ensure_erasure_schema
    except ImportError:
        return
    ensure_erasure_schema(conn)


def write_delta(workdir: Path, as_of: datetime, n: int = 1) -> dict[str, int]:
    """A one-day delta for the day after ``as_of``: the day up to ``as_of`` replayed one day later under new
    keys, as new files (about 1/90 of the history, like a real day)."""
    since, until = as_of - timedelta(days=1), as_of
    counts = {}
    conn = duckdb.connect(str(workdir / "warehouse.duckdb"))
    try:
        conn.execute("set TimeZone = 'UTC'")
        for table, sql in DELTA_SQL.items():
            folder = workdir / "landing" / table
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"delta_{n:03d}.parquet"
            query = sql.format(n=n, since=since.replace(tzinfo=None), until=until.replace(tzinfo=None))
            conn.execute(f"copy ({query}) to '{path}' (format parquet)")
            counts[table] = conn.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
    finally:
        conn.close()
    return counts


def load_delta(workdir: Path) -> float:
    from nachfass.core.ingest import load_landing

    started = time.perf_counter()
    conn = duckdb.connect(str(workdir / "warehouse.duckdb"))
    try:
        load_landing(conn, workdir / "landing")
    finally:
        conn.close()
    return time.perf_counter() - started


def dbt(workdir: Path, command: str, as_of: datetime, *extra: str) -> float:
    env = {**os.environ, "NACHFASS_WAREHOUSE": str(workdir / "warehouse.duckdb")}
    args = [
        str(Path(sys.executable).parent / "dbt"),
        command,
        "--profiles-dir",
        ".",
        "--target-path",
        str(workdir / "target"),
        *dbt_vars_arg(iso(as_of)),
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=DBT_DIR, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-2000:])
        raise SystemExit(f"dbt {command} failed")
    (workdir / f"dbt_{command}_{iso(as_of)}.log").write_text(result.stdout)
    return elapsed


def model_timings(workdir: Path) -> dict[str, float]:
    run_results = json.loads((workdir / "target" / "run_results.json").read_text())
    return {
        r["unique_id"].split(".")[-1]: round(r["execution_time"], 2)
        for r in run_results["results"]
        if r["unique_id"].startswith("model.")
    }


def direct_duckdb(workdir: Path) -> dict[str, float]:
    """Run the compiled SQL of the heavy models (from the last run's run_results.json) straight in DuckDB,
    as `create or replace table`, in dependency order."""
    run_results = json.loads((workdir / "target" / "run_results.json").read_text())
    compiled = {
        r["unique_id"].split(".")[-1]: r["compiled_code"]
        for r in run_results["results"]
        if r["unique_id"].startswith("model.") and r.get("compiled_code")
    }
    timings = {}
    conn = duckdb.connect(str(workdir / "warehouse.duckdb"))
    try:
        conn.execute("create schema if not exists bench")
        for model in DIRECT_MODELS:
            started = time.perf_counter()
            conn.execute(f"create or replace table bench.{model} as {compiled[model]}")
            timings[model] = round(time.perf_counter() - started, 2)
        conn.execute("drop schema bench cascade")
    finally:
        conn.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--as-of", default="2026-11-24T10:00:00Z")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_bench"))
    parser.add_argument("--prepare-only", action="store_true", help="generate and load, then stop")
    args = parser.parse_args(argv)
    as_of = datetime.fromisoformat(args.as_of.replace("Z", "+00:00"))
    workdir = args.workdir / str(args.customers)

    report: dict = {"customers": args.customers, "cores": os.cpu_count()}
    report.update(prepare(workdir, args.customers, as_of, args.days))
    print(json.dumps(report), flush=True)
    if args.prepare_only:
        return 0

    report["full_build_s"] = round(dbt(workdir, "build", as_of, "--full-refresh"), 1)
    report["full_build_models_s"] = model_timings(workdir)
    print(f"full dbt build: {report['full_build_s']} s (target ≤ 120 s)", flush=True)

    report["direct_duckdb_s"] = direct_duckdb(workdir)
    report["direct_duckdb_total_s"] = round(sum(report["direct_duckdb_s"].values()), 1)

    next_day = as_of + timedelta(days=1)
    delta_files = sorted((workdir / "landing").rglob("delta_*.parquet"))
    n = len({p.name for p in delta_files}) + 1
    report["delta_rows"] = write_delta(workdir, as_of, n)
    report["delta_load_s"] = round(load_delta(workdir), 1)
    report["daily_build_s"] = round(dbt(workdir, "build", next_day, *DAILY_ARGS), 1)
    report["daily_build_models_s"] = model_timings(workdir)
    print(f"daily dbt build: {report['daily_build_s']} s (target ≤ 20 s)", flush=True)
    report["daily_skipped_tests_s"] = round(dbt(workdir, "test", next_day, "--select", "tag:full_history"), 1)
    print(f"the daily run's skipped tests on their own: {report['daily_skipped_tests_s']} s", flush=True)
    report["dbt_overhead_ratio_full"] = round(
        report["full_build_s"] / max(report["direct_duckdb_total_s"], 0.1), 2
    )
    print(json.dumps(report, indent=2))
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
