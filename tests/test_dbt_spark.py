"""The same dbt project on Apache Spark gives DuckDB's results: the scenario world of tests/test_scenarios.py
is loaded into DuckDB, its source tables (raw, mail) are copied to Spark parquet tables, and one `dbt build`
(seeds, models, data tests and unit tests) with the same vars runs on each engine. Every model's rows are
then compared row by row with tests/test_dbt_engines.py's helpers (only their representation normalised).

Spark runs in local mode inside each process that needs it (tests/spark_support.py): the copy, dbt, and the
read-back each start a JVM of their own, one after the other (the embedded metastore allows one at a time).
Skips without java or pyspark unless NACHFASS_REQUIRE_SPARK=1 (conftest.py ``spark_runtime``).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.dbt_helpers import insert_events, insert_sends, load_exports, run_dbt, write_exports
from tests.spark_support import copy_warehouse_to_spark, read_spark_tables
from tests.test_dbt_engines import MODEL_SCHEMAS, MUST_HAVE_ROWS, compare_with_duckdb
from tests.test_dbt_unit import UNIT_TESTS
from tests.test_scenarios import AS_OF, build_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark_engines(tmp_path_factory: pytest.TempPathFactory, spark_runtime: dict[str, str]) -> dict:
    root = tmp_path_factory.mktemp("spark_engines")
    world = build_world()
    write_exports(root / "landing", world.rows)
    write_exports(root / "landing", world.later_rows, name="export-later.csv")
    warehouse = root / "warehouse.duckdb"
    load_exports(warehouse, root / "landing")
    insert_sends(warehouse, world.sends)
    insert_events(warehouse, world.events)

    timings = {}
    started = time.perf_counter()
    copy_warehouse_to_spark(warehouse, spark_runtime, root / "parquet", schemas=("raw", "mail"))
    timings["copy"] = time.perf_counter() - started
    started = time.perf_counter()
    run_dbt(["build"], warehouse=warehouse, target_path=root / "target_duckdb", as_of=AS_OF)
    timings["duckdb"] = time.perf_counter() - started
    started = time.perf_counter()
    spark_build = run_dbt(
        ["build"], warehouse=warehouse, target_path=root / "target_spark", as_of=AS_OF, env=spark_runtime
    )
    timings["spark"] = time.perf_counter() - started
    started = time.perf_counter()
    spark_tables = read_spark_tables(spark_runtime, MODEL_SCHEMAS, root / "spark_tables.pickle")
    timings["read"] = time.perf_counter() - started
    print(
        "dbt build: DuckDB {duckdb:.1f} s, Spark {spark:.1f} s (copy {copy:.1f} s, read {read:.1f} s)".format(
            **timings
        )
    )
    return {"warehouse": warehouse, "tables": spark_tables, "build": spark_build, "timings": timings}


def _spark_rows(tables: dict[str, tuple[list, list]], table: str, columns: list[str]) -> list[tuple]:
    if table not in tables:
        return [("<missing on Spark>",)]
    spark_columns, rows = tables[table]
    if sorted(spark_columns) != sorted(columns):
        return [("<columns on Spark>", *spark_columns)]
    at = [spark_columns.index(c) for c in columns]
    return [tuple(row[i] for i in at) for row in rows]


def test_every_model_has_the_same_rows_on_spark(spark_engines: dict) -> None:
    tables = spark_engines["tables"]
    differences, empty, counts = compare_with_duckdb(
        spark_engines["warehouse"], lambda table, columns: _spark_rows(tables, table, columns), "spark"
    )
    assert set(counts) >= MUST_HAVE_ROWS, MUST_HAVE_ROWS - set(counts)
    assert not differences, json.dumps(differences, default=str, indent=1)[:20000]
    assert not (MUST_HAVE_ROWS & set(empty)), sorted(MUST_HAVE_ROWS & set(empty))


def test_data_and_unit_tests_pass_on_spark(spark_engines: dict) -> None:
    """`dbt build` on Spark ran every data test and unit test (it fails the fixture on any error)."""
    stdout = spark_engines["build"].stdout
    passed = {
        line.split("::")[1].split(" ")[0] for line in stdout.splitlines() if " PASS " in line and "::" in line
    }
    assert not UNIT_TESTS - passed, stdout[-3000:]
    assert " ERROR=0 " in stdout, stdout[-3000:]


def test_mail_candidates_decide_the_same_on_spark(spark_engines: dict) -> None:
    """The comparison above means something: Spark's candidates span sends, deferrals and skips, and the
    A/B variants are assigned (the hex bucket gives NULL on Spark if cast as DuckDB does)."""
    columns, rows = spark_engines["tables"]["eligibility.mail_candidates"]
    decision, variant = columns.index("decision"), columns.index("variant")
    assert {row[decision] for row in rows} == {"send", "defer", "skip"}
    assert all(row[variant] is not None for row in rows)
