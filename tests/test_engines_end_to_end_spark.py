"""`nachfass run` on Spark from the same exports as the DuckDB reference run, at the same as_of: the same
decisions with the same reasons, the same mails byte for byte, the same ledger. dbt-spark builds in local
mode, its sources copied from PostgreSQL (where the ledger stays) and the models the Python steps read
copied back; then `nachfass erase` and the incremental push on the same Spark warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engines_e2e_support import (
    DECISIONS,
    LEDGER,
    SCANNED_SCHEMAS,
    engine_env,
    outbox_files,
    pg_settings,
    run_cli,
)
from tests_support import REPO_ROOT

from nachfass.core.pgconn import PgConnection

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark_run(duckdb_run: dict, postgres_server, spark_runtime: dict[str, str]) -> dict:
    """`nachfass run` with NACHFASS_ENGINE=spark from the same exports: dbt on Spark, the ledger in
    PostgreSQL beside it (nachfass/core/warehouse/spark.py)."""
    from nachfass.core.warehouse.spark import SettingsError, jdbc_jar

    try:
        jdbc_jar()
    except SettingsError as exc:
        if os.environ.get("NACHFASS_REQUIRE_SPARK") == "1":
            raise
        pytest.skip(str(exc))
    postgres_server.drop_database("e2e_spark")
    env = engine_env(duckdb_run["root"], "spark") | spark_runtime
    env |= postgres_server.env(postgres_server.create_database("e2e_spark"))
    run = run_cli(env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    settings = pg_settings(postgres_server)
    return {
        "env": env,
        "run": run,
        "settings": type(settings)(**{**settings.__dict__, "dbname": "e2e_spark"}),
    }


def test_a_run_decides_and_sends_the_same_on_duckdb_and_spark(duckdb_run: dict, spark_run: dict) -> None:
    """Not in the shifted-clock pass (its clock path is the PostgreSQL engine's,
    tests/test_engines_end_to_end.py); a Spark build takes minutes."""
    with PgConnection.open(spark_run["settings"]) as pg:
        spark_decisions = pg.execute(DECISIONS).fetchall()  # built on Spark, copied back
        spark_ledger = pg.execute(LEDGER).fetchall()
        # dbt built on Spark, not here: PostgreSQL holds only the models the Python steps read
        segments_in_pg = pg.execute(
            "select count(*) from information_schema.tables where table_schema = 'segments'"
        ).fetchone()[0]
    assert spark_decisions == duckdb_run["decisions"]
    assert spark_ledger == duckdb_run["ledger"]
    assert outbox_files(duckdb_run["root"] / "spark" / "outbox") == duckdb_run["outbox"]
    assert "Spark (dbt) with PostgreSQL postgresql://postgres@127.0.0.1" in spark_run["run"].stdout
    assert segments_in_pg == 0
    warehouse_dir = Path(spark_run["env"]["NACHFASS_SPARK_WAREHOUSE_DIR"])
    assert list((warehouse_dir / "eligibility.db" / "mail_candidates").glob("*.parquet"))


def _rows_naming(tables: dict, email: str, customer_id: str) -> dict[str, int]:
    """{schema.table: rows} of the Spark tables (as read back) whose row, as text, holds the address or the
    customer id (as a whole token); the pseudonymised ledger and the erasure bookkeeping are exempt."""
    import re

    token = re.compile(rf"(^|[^0-9A-Za-z]){re.escape(customer_id)}([^0-9A-Za-z]|$)")
    found = {}
    for name, (_, rows) in tables.items():
        if name in ("mail.sends", "mail.erasures"):
            continue
        n = sum(1 for row in rows if email in repr(row).lower() or token.search(repr(row)))
        if n:
            found[name] = n
    return found


def test_erasure_on_spark_replaces_sparks_copies(duckdb_run: dict, spark_run: dict, tmp_path: Path) -> None:
    """`nachfass erase` on the Spark engine erases in PostgreSQL (as on `postgres`) and then replaces what
    Spark holds: the sources pushed again, every model rebuilt. Afterwards no Spark table names the person,
    while the same scan finds another customer who also got a mail everywhere they were."""
    from tests.spark_support import read_spark_tables

    with PgConnection.open(spark_run["settings"]) as pg:
        (erased_id, erased_email), (kept_id, kept_email) = pg.execute(
            "select s.customer_id, lower(c.email) from mail.sends as s join raw.customers as c "
            "on c.customer_id = s.customer_id where s.status = 'sent' "
            "group by 1, 2 order by min(s.send_id) limit 2"
        ).fetchall()
        # Spark's mail_candidates, as pulled: the person is in them before the erasure
        assert pg.execute(
            "select count(*) from eligibility.mail_candidates where customer_id = ?", [erased_id]
        ).fetchone()[0]
    env = spark_run["env"]
    erase = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nachfass.cli.main import main; raise SystemExit(main("
            f"['erase', '--email', {erased_email!r}, '--as-of', '2026-11-25T09:00:00Z']))",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert erase.returncode == 0, erase.stdout[-3000:] + erase.stderr[-3000:]
    assert "Spark: " in erase.stdout and "every model rebuilt as of 2026-11-24 10:00:00+00:00" in erase.stdout
    tables = read_spark_tables(env, SCANNED_SCHEMAS, tmp_path / "tables.pickle")
    assert _rows_naming(tables, erased_email, erased_id) == {}
    kept = _rows_naming(tables, kept_email, kept_id)  # the scan finds a person where they are
    assert {"raw.customers", "staging.stg_customers", "eligibility.mail_candidates"} <= set(kept), kept
    with PgConnection.open(spark_run["settings"]) as pg:
        assert not pg.execute(
            "select count(*) from raw.customers where customer_id = ?", [erased_id]
        ).fetchone()[0]


def test_the_next_push_appends_only_the_new_loads(spark_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the run (and the erasure above, which copied everything whole), a push copies only what
    changed: a new load of the orders export is appended, a table with a row deleted in PostgreSQL is
    copied whole, the other exports are left alone, and every Spark table then holds PostgreSQL's rows."""
    from nachfass.core.warehouse import spark

    for name, value in spark_run["env"].items():
        monkeypatch.setenv(name, value)
    with PgConnection.open(spark_run["settings"]) as pg:
        # a new load: the rows of the first orders file again, under a new path, time and order ids
        pg.execute(
            "create temporary table new_orders as select * from raw.orders "
            "where _file = (select min(_file) from raw.orders)"
        )
        pg.execute(
            "update new_orders set _file = 'landing/orders-new.csv', "
            "_loaded_at = timestamp '2026-11-25 09:00:00', order_id = order_id || '-new'"
        )
        new_rows = pg.execute("insert into raw.orders select * from new_orders").rowcount
        # a row deleted from a load Spark already holds
        pg.execute("delete from raw.support_tickets where ctid = (select min(ctid) from raw.support_tickets)")
        tables = spark.source_tables()
        in_postgres = {
            f"{s}.{t}": pg.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] for s, t in tables
        }
    assert new_rows > 0

    pushed = spark.push_sources()

    assert pushed.modes["raw.orders"] == "appended" and pushed.appended == {"raw.orders": new_rows}
    assert pushed.modes["raw.support_tickets"] == "copied"
    assert "differs" in pushed.reasons["raw.support_tickets"]
    assert pushed.modes["raw.customers"] == pushed.modes["raw.session_events"] == "unchanged"
    assert pushed.modes["mail.sends"] == "copied"  # updated in place: always whole
    assert pushed.rows == in_postgres
    assert f"1 with {new_rows:,} new rows appended" in pushed.describe()
