"""The recommendation model against the popularity baseline, on generated sample data (dbt, real DuckDB).

The offline benchmark (bench/bench_recommendations.py) at a size that fits the test suite: the model,
built at a cutoff 30 days before the data's as_of, must name a product of the customer's next order in
its top 3 more often than the three bestsellers the customer has not bought yet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_recommendations.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_recommendations", BENCH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("reco")
    return workdir, _bench_module().evaluate(workdir, customers=5000, seed=42, k=3)


@pytest.mark.slow
def test_model_beats_popularity_at_3(evaluated: tuple[Path, dict]) -> None:
    _, result = evaluated
    assert result["evaluated_customers"] > 300, result
    assert result["model_hit_rate"] > result["baseline_hit_rate"], result
    # all three sources contribute to the top 3
    assert set(result["reasons_in_top_k"]) == {"bought_together", "category", "popular"}, result


@pytest.mark.slow
def test_recommendations_exclude_bought_and_out_of_stock(evaluated: tuple[Path, dict]) -> None:
    workdir, _ = evaluated
    with duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True) as conn:
        bought = conn.execute(
            """
            select count(*) from intermediate.int_product_recommendations as recommendations
            inner join staging.stg_orders as orders on recommendations.customer_id = orders.customer_id
            inner join staging.stg_order_items as items
                on orders.order_id = items.order_id and recommendations.product_id = items.product_id
            where orders.placed_at <= timestamp '2026-10-25 10:00:00' and not orders.is_cancelled_or_returned
            """
        ).fetchone()[0]
        out_of_stock = conn.execute(
            """
            select count(*) from intermediate.int_product_recommendations
            inner join staging.stg_products using (product_id)
            where not is_in_stock
            """
        ).fetchone()[0]
        readable = conn.execute(
            """
            select count(*) from intermediate.int_product_recommendations
            where (reason = 'bought_together' and reason_product_name is null)
               or (reason = 'category' and reason_category is null)
            """
        ).fetchone()[0]
    assert (bought, out_of_stock, readable) == (0, 0, 0)
