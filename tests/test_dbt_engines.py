"""The same dbt project on DuckDB and on PostgreSQL gives identical results: the scenario world of
tests/test_scenarios.py is loaded into DuckDB, its source tables (raw, mail) are copied to PostgreSQL, and
one `dbt build` with the same vars runs on each engine. Every model's rows are then compared row by row,
only their representation normalised (JSON text vs parsed json, numbers inside JSON). The dbt unit tests
run on PostgreSQL too.

Runs on the session's throwaway PostgreSQL (or NACHFASS_TEST_PG_DSN, see tests/pg_support.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from nachfass.core.ingest import load_landing
from tests.dbt_helpers import (
    insert_events,
    insert_sends,
    iso,
    load_exports,
    prepare_all,
    run_dbt,
    write_exports,
)
from tests.pg_support import (  # noqa: F401 (pg_dsn_from_env is a fixture)
    copy_warehouse_to_postgres,
    create_test_database,
    libpq_env,
    pg_dsn_from_env,
)
from tests.test_ab_results import build_ab_warehouse
from tests.test_dbt_unit import UNIT_TESTS
from tests.test_scenarios import AS_OF, build_world

# Not in the shifted-clock pass of CI: this compares the engines on fixed as_of values; the clock itself is
# covered there by the scenarios on DuckDB and by the DuckDB/PostgreSQL run of test_engines_end_to_end.
pytestmark = pytest.mark.slow

# the schemas dbt writes; every table and view in them is compared
MODEL_SCHEMAS = ("staging", "intermediate", "segments", "eligibility", "analytics", "quality")
# the tables that must have rows in the scenario (an empty table compares equal to anything empty)
MUST_HAVE_ROWS = {
    "eligibility.mail_candidates",
    "segments.abandoned_cart",
    "segments.checkout_recovery",
    "segments.order_thanks",
    "segments.shipping_update",
    "segments.review_request",
    "segments.cross_sell",
    "segments.reactivation",
    "segments.support_followup",
    "analytics.mail_performance",
    "analytics.campaign_performance",
    "analytics.suppressions",
    "analytics.build_settings",
}
PG_DATABASE = "nachfass_engines"


def _plain(value: object, nested: bool = False) -> object:
    """A value in one representation: JSON text parsed, numbers inside JSON as float, lists and dicts
    recursively; top-level decimals stay exact."""
    if isinstance(value, str) and nested is False and value[:1] in "[{":
        try:
            return _plain(json.loads(value), nested=True)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _plain(v, nested=True) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, nested=True) for v in value]
    if nested and isinstance(value, (Decimal, int)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def _sort_key(row: tuple) -> str:
    return json.dumps(row, default=str, sort_keys=True)


def _duckdb_tables(warehouse: Path) -> dict[str, list[str]]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = conn.execute(
            "select table_schema, table_name, list(column_name order by ordinal_position) "
            "from information_schema.columns where table_schema in ? group by all",
            [list(MODEL_SCHEMAS)],
        ).fetchall()
    finally:
        conn.close()
    return {f"{schema}.{table}": columns for schema, table, columns in rows}


def _duckdb_rows(warehouse: Path, table: str, columns: list[str]) -> list[tuple]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        names = ", ".join(f'"{c}"' for c in columns)
        return conn.execute(f"select {names} from {table}").fetchall()
    finally:
        conn.close()


def _pg_rows(dsn: str, table: str, columns: list[str]) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            names = ", ".join(f'"{c}"' for c in columns)
            cur.execute(f"select {names} from {table}")
            return cur.fetchall()
    finally:
        conn.close()


def _normalised(rows: list[tuple]) -> list[tuple]:
    return sorted((tuple(_plain(v) for v in row) for row in rows), key=_sort_key)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, pg_dsn_from_env: str) -> dict:  # noqa: F811
    root = tmp_path_factory.mktemp("engines")
    world = build_world()
    write_exports(root / "landing", world.rows)
    write_exports(root / "landing", world.later_rows, name="export-later.csv")
    warehouse = root / "warehouse.duckdb"
    load_exports(warehouse, root / "landing")
    insert_sends(warehouse, world.sends)
    insert_events(warehouse, world.events)

    dsn = create_test_database(pg_dsn_from_env, PG_DATABASE)
    copy_warehouse_to_postgres(warehouse, dsn, schemas=("raw", "mail"))
    pg_env = {"NACHFASS_ENGINE": "postgres", **libpq_env(dsn)}

    timings = {}
    started = time.perf_counter()
    run_dbt(
        ["build"],
        warehouse=warehouse,
        target_path=root / "target_duckdb",
        as_of=AS_OF,
        env={"NACHFASS_ENGINE": "duckdb"},
    )
    timings["duckdb"] = time.perf_counter() - started
    started = time.perf_counter()
    run_dbt(["build"], warehouse=warehouse, target_path=root / "target_postgres", as_of=AS_OF, env=pg_env)
    timings["postgres"] = time.perf_counter() - started
    print(f"dbt build: DuckDB {timings['duckdb']:.1f} s, PostgreSQL {timings['postgres']:.1f} s")
    return {"warehouse": warehouse, "dsn": dsn, "pg_env": pg_env, "root": root, "timings": timings}


def _differences(warehouse: Path, dsn: str) -> tuple[dict, list[str], dict[str, int]]:
    """Per model whose rows differ: a few rows found on one engine only; the empty models; rows per model."""
    return compare_with_duckdb(warehouse, lambda table, columns: _pg_rows(dsn, table, columns), "postgres")


def compare_with_duckdb(
    warehouse: Path, other_rows: Callable[[str, list[str]], list[tuple]], other: str
) -> tuple[dict, list[str], dict[str, int]]:
    """Every model of the DuckDB file against the same model on the engine `other` (its rows of a table in
    DuckDB's column order from `other_rows`): per model whose rows differ, a few rows found on one engine
    only; the empty models; rows per model."""
    tables = _duckdb_tables(warehouse)
    differences, empty, counts = {}, [], {}
    for table, columns in sorted(tables.items()):
        on_duckdb = _normalised(_duckdb_rows(warehouse, table, columns))
        on_other = _normalised(other_rows(table, columns))
        counts[table] = len(on_duckdb)
        if not on_duckdb:
            empty.append(table)
        if on_duckdb != on_other:
            differences[table] = {
                "columns": columns,
                "only_duckdb": [r for r in on_duckdb if r not in on_other][:3],
                f"only_{other}": [r for r in on_other if r not in on_duckdb][:3],
                "n": (len(on_duckdb), len(on_other)),
            }
    return differences, empty, counts


def test_every_model_has_the_same_rows_on_both_engines(engines: dict) -> None:
    differences, empty, counts = _differences(engines["warehouse"], engines["dsn"])
    assert set(counts) >= MUST_HAVE_ROWS, MUST_HAVE_ROWS - set(counts)
    assert not differences, json.dumps(differences, default=str, indent=1)[:20000]
    assert not (MUST_HAVE_ROWS & set(empty)), sorted(MUST_HAVE_ROWS & set(empty))


def test_ab_results_are_the_same_on_both_engines(
    tmp_path: Path,
    pg_dsn_from_env: str,  # noqa: F811
) -> None:
    """analytics.ab_results with three competing variants, a holdout and a sample-ratio mismatch
    (tests/test_ab_results.py's experiments): every statistic identical, not only close."""
    warehouse, project, command = build_ab_warehouse(tmp_path)
    dsn = create_test_database(pg_dsn_from_env, PG_DATABASE + "_ab")
    copy_warehouse_to_postgres(warehouse, dsn, schemas=("raw", "mail"))
    run_dbt(
        command,
        warehouse=warehouse,
        target_path=tmp_path / "duckdb",
        project_dir=project,
        env={"NACHFASS_ENGINE": "duckdb"},
    )
    run_dbt(
        command,
        warehouse=warehouse,
        target_path=tmp_path / "postgres",
        project_dir=project,
        env={"NACHFASS_ENGINE": "postgres", **libpq_env(dsn)},
    )
    differences, _, counts = _differences(warehouse, dsn)
    assert counts["analytics.ab_results"] == 8, counts  # 4 cart arms, 2 cart step-2 arms, 2 review arms
    assert not differences, json.dumps(differences, default=str, indent=1)[:20000]


def test_mail_candidates_cover_every_decision(engines: dict) -> None:
    """The comparison above means something: the scenario's candidates span sends, deferrals and skips."""
    rows = _pg_rows(engines["dsn"], "eligibility.mail_candidates", ["decision", "deferred_until"])
    assert {decision for decision, _ in rows} == {"send", "defer", "skip"}
    assert any(isinstance(deferred, (datetime, date)) for _, deferred in rows)


def test_unit_tests_pass_on_postgres(engines: dict) -> None:
    result = run_dbt(
        ["test", "--select", "test_type:unit"],
        warehouse=engines["warehouse"],
        target_path=engines["root"] / "unit_postgres",
        as_of=AS_OF,
        env=engines["pg_env"],
    )
    ran = {
        line.split("::")[1].split(" ")[0]
        for line in result.stdout.splitlines()
        if " PASS " in line and "::" in line
    }
    assert not UNIT_TESTS - ran, result.stdout[-3000:]


def test_generated_shop_is_the_same_on_both_engines(
    tmp_path: Path,
    pg_dsn_from_env: str,  # noqa: F811
) -> None:
    """The sample shop of `nachfass generate` (5,000 customers, 90 days): realistic volumes bring what the
    hand-made scenario does not (customers with many orders, shipment dates, near-tied scores)."""
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    nachfass = str(Path(sys.executable).parent / "nachfass")
    subprocess.run(
        [
            nachfass,
            "generate",
            "--customers",
            "5000",
            "--seed",
            "7",
            "--landing",
            str(landing),
            "--as-of",
            iso(AS_OF),
        ],
        check=True,
        capture_output=True,
    )
    conn = duckdb.connect(str(warehouse))
    try:
        prepare_all(conn)
        load_landing(conn, landing)
    finally:
        conn.close()
    dsn = create_test_database(pg_dsn_from_env, PG_DATABASE + "_shop")
    copy_warehouse_to_postgres(warehouse, dsn, schemas=("raw", "mail"))
    run_dbt(
        ["build"],
        warehouse=warehouse,
        target_path=tmp_path / "duckdb",
        as_of=AS_OF,
        env={"NACHFASS_ENGINE": "duckdb"},
    )
    run_dbt(
        ["build"],
        warehouse=warehouse,
        target_path=tmp_path / "postgres",
        as_of=AS_OF,
        env={"NACHFASS_ENGINE": "postgres", **libpq_env(dsn)},
    )
    differences, _, counts = _differences(warehouse, dsn)
    assert counts["eligibility.mail_candidates"] > 1000, counts
    assert not differences, json.dumps(differences, default=str, indent=1)[:20000]
