"""Offline relevance of the recommendation model: does it name what the customer buys next?

    python bench/bench_recommendations.py [--customers 20000] [--seed 42] [--holdout-days 30] [--k 3]

1. generate sample exports (``nachfass generate``: themed baskets, deterministic per seed) and load them;
2. build the recommendation model (dbt, ``+int_product_recommendations``) at a cutoff ``holdout_days``
   before the data's as_of, for every customer with an order before it
   (``--vars '{recommendation_targets: all_customers}'``): the model sees nothing after the cutoff;
3. for every customer who ordered before the cutoff and again after it, take the first order after the
   cutoff: a **hit** if any of its products is among the customer's top k recommendations;
4. the same for the **popularity baseline**: the k in-stock bestsellers of the 90 days before the cutoff
   that the customer has not bought yet (the model never recommends bought products either, so both
   face the same candidates).

Prints hit rate@k of both, their ratio and the dbt time; ``evaluate()`` is what the test calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
DBT_DIR = REPO / "dbt"
sys.path.insert(0, str(REPO))

from nachfass.core.dbt import dbt_vars  # noqa: E402
from nachfass.core.ingest import load_landing  # noqa: E402
from nachfass.core.schema import prepare_warehouse  # noqa: E402
from nachfass.devtools.datagen.generate import DEFAULT_AS_OF, generate_exports  # noqa: E402

DBT = str(Path(sys.executable).parent / "dbt")

HITS_SQL = """
with cutoff as (select cast(? as timestamp) as cutoff_at, cast(? as timestamp) as as_of),
orders as (
    select orders.order_id, orders.customer_id, orders.placed_at
    from staging.stg_orders as orders
    where not orders.is_cancelled_or_returned
),
history as (
    select distinct orders.customer_id, items.product_id
    from orders
    inner join staging.stg_order_items as items on orders.order_id = items.order_id
    where orders.placed_at <= (select cutoff_at from cutoff)
),
next_orders as (
    select customer_id, order_id
    from orders
    where placed_at > (select cutoff_at from cutoff) and placed_at <= (select as_of from cutoff)
        and customer_id in (select customer_id from history)
    qualify row_number() over (partition by customer_id order by placed_at, order_id) = 1
),
next_products as (
    select distinct next_orders.customer_id, items.product_id
    from next_orders
    inner join staging.stg_order_items as items on next_orders.order_id = items.order_id
),
model as (
    select target_id as customer_id, product_id
    from main.bench_recommendations
    where target_type = 'customer' and recommendation_rank <= ?
),
bestsellers as (
    select items.product_id, count(distinct orders.customer_id) as n_buyers
    from orders
    inner join staging.stg_order_items as items on orders.order_id = items.order_id
    inner join staging.stg_products as products on items.product_id = products.product_id
    where orders.placed_at <= (select cutoff_at from cutoff)
        and orders.placed_at > (select cutoff_at from cutoff) - interval 90 day
        and products.is_in_stock
    group by items.product_id
),
baseline as (
    select customers.customer_id, bestsellers.product_id
    from (select distinct customer_id from next_orders) as customers
    cross join bestsellers
    left join history
        on customers.customer_id = history.customer_id and bestsellers.product_id = history.product_id
    where history.product_id is null
    qualify row_number() over (
        partition by customers.customer_id order by bestsellers.n_buyers desc, bestsellers.product_id
    ) <= ?
),
per_customer as (
    select
        next_orders.customer_id,
        exists (
            select 1 from model inner join next_products using (customer_id, product_id)
            where model.customer_id = next_orders.customer_id
        ) as model_hit,
        exists (
            select 1 from baseline inner join next_products using (customer_id, product_id)
            where baseline.customer_id = next_orders.customer_id
        ) as baseline_hit
    from next_orders
)
select
    count(*) as n_customers,
    count(*) filter (where model_hit) as model_hits,
    count(*) filter (where baseline_hit) as baseline_hits
from per_customer
"""


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_model(
    warehouse: Path, cutoff: datetime, target_path: Path, select: str = "+int_product_recommendations"
) -> float:
    """dbt run of ``select`` (the recommendation model and what it needs) at ``cutoff``; returns seconds."""
    env = {**os.environ, "NACHFASS_WAREHOUSE": str(warehouse), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    variables = {"as_of": _iso(cutoff), "recommendation_targets": "all_customers"}
    args = [
        DBT, "run", "--select", select,
        "--profiles-dir", ".", "--target-path", str(target_path), "--log-path", str(target_path / "logs"),
        "--vars", json.dumps(dbt_vars(**variables)),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(args, cwd=DBT_DIR, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"dbt failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def evaluate(
    workdir: Path,
    *,
    customers: int = 20000,
    seed: int = 42,
    as_of: datetime = DEFAULT_AS_OF,
    holdout_days: int = 30,
    k: int = 3,
) -> dict[str, float]:
    """Generate, load, build at the cutoff and score; returns the figures (see the module docstring)."""
    landing = workdir / "landing"
    warehouse = workdir / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    started = time.perf_counter()
    generate_exports(landing, customers=customers, seed=seed, as_of=as_of, file_format="parquet")
    conn = duckdb.connect(str(warehouse))
    try:
        prepare_warehouse(conn)
        load_landing(conn, landing)
    finally:
        conn.close()
    prepared = time.perf_counter() - started
    cutoff = as_of - timedelta(days=holdout_days)
    dbt_seconds = build_model(warehouse, cutoff, workdir / "dbt_target")
    # Staging is versioned by as_of: at the cutoff it holds no later orders. Keep the model's lists,
    # then rebuild the order staging at the data's as_of to see what the customers bought next.
    conn = duckdb.connect(str(warehouse))
    try:
        conn.execute(
            "create or replace table main.bench_recommendations as "
            "select * from intermediate.int_product_recommendations"
        )
    finally:
        conn.close()
    build_model(warehouse, as_of, workdir / "dbt_target", select="stg_orders stg_order_items stg_products")
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        naive = [cutoff.astimezone(UTC).replace(tzinfo=None), as_of.astimezone(UTC).replace(tzinfo=None)]
        n, model_hits, baseline_hits = conn.execute(HITS_SQL, [*naive, k, k]).fetchone()
        reasons = dict(
            conn.execute(
                "select reason, count(*) from main.bench_recommendations "
                "where target_type = 'customer' and recommendation_rank <= ? group by reason",
                [k],
            ).fetchall()
        )
    finally:
        conn.close()
    return {
        "customers": customers,
        "seed": seed,
        "k": k,
        "holdout_days": holdout_days,
        "evaluated_customers": n,
        "model_hit_rate": model_hits / n if n else 0.0,
        "baseline_hit_rate": baseline_hits / n if n else 0.0,
        "model_hits": model_hits,
        "baseline_hits": baseline_hits,
        "reasons_in_top_k": reasons,
        "prepare_seconds": prepared,
        "dbt_seconds": dbt_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout-days", type=int, default=30)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nachfass_reco_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = evaluate(
            workdir, customers=args.customers, seed=args.seed, holdout_days=args.holdout_days, k=args.k
        )
    k = result["k"]
    print(
        f"customers {result['customers']:,}, seed {result['seed']}, "
        f"cutoff {result['holdout_days']} days before as_of"
    )
    print(f"evaluated: {result['evaluated_customers']:,} customers who ordered before and after the cutoff")
    print(f"hit rate@{k}  model      {result['model_hit_rate']:.3f} ({result['model_hits']:,})")
    print(f"hit rate@{k}  popularity {result['baseline_hit_rate']:.3f} ({result['baseline_hits']:,})")
    if result["baseline_hit_rate"]:
        print(f"ratio model / popularity: {result['model_hit_rate'] / result['baseline_hit_rate']:.2f}")
    print(f"reasons in the model's top {k}: {result['reasons_in_top_k']}")
    print(
        f"generate + load {result['prepare_seconds']:.1f} s, "
        f"dbt run of the model and its inputs {result['dbt_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
