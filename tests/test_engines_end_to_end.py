"""`nachfass run` on DuckDB, on PostgreSQL and on Spark, from the same exports at the same as_of: the same
decisions with the same reasons, the same mails byte for byte, the same ledger. Everything real on each side:
the ingest (on PostgreSQL: parsed in the DuckDB staging file, then copied), dbt through dagster-dbt with the
engine's target (on Spark: dbt-spark in local mode, its sources copied from PostgreSQL and the models the
Python steps read copied back), rendering, the outbox and the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from tests_support import REPO_ROOT

from nachfass.core.pgconn import PgConnection
from nachfass.devtools.datagen.generate import generate_exports

pytestmark = pytest.mark.slow
SCANNED_SCHEMAS = ("raw", "staging", "intermediate", "segments", "eligibility", "analytics", "mail")

AS_OF = "2026-11-24T10:00:00Z"
DECISIONS = (
    "select campaign, step, trigger_key, customer_id, variant, decision, reason, deferred_until "
    "from eligibility.mail_candidates order by campaign, step, trigger_key"
)
LEDGER = (
    "select send_id, campaign, step, trigger_key, customer_id, email_hash, variant, status, transport, as_of "
    "from mail.sends order by send_id"
)


def _run(env: dict[str, str], *extra: str, as_of: str = AS_OF) -> subprocess.CompletedProcess:
    args = ["run", "--as-of", as_of, *extra]
    code = f"from nachfass.cli.main import main; raise SystemExit(main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def _outbox(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _env(root: Path, engine: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NACHFASS_", "SENDGRID_"))} | {
        "NACHFASS_LANDING": str(root / "landing"),
        "NACHFASS_ENGINE": engine,
        "NACHFASS_DATA": str(root / engine),
        "NACHFASS_WAREHOUSE": str(root / engine / "warehouse.duckdb"),
        "NACHFASS_OUTBOX": str(root / engine / "outbox"),
    }


@pytest.fixture(scope="module")
def duckdb_run(tmp_path_factory: pytest.TempPathFactory, dbt_manifest) -> dict:
    """The reference: one `nachfass run` on DuckDB from the exports the other engines get too."""
    root = tmp_path_factory.mktemp("engines_e2e")
    generate_exports(root / "landing", customers=400, seed=11, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    run = _run(_env(root, "duckdb"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with duckdb.connect(str(root / "duckdb" / "warehouse.duckdb"), read_only=True) as duck:
        decisions = duck.execute(DECISIONS).fetchall()
        ledger = duck.execute(LEDGER).fetchall()
    sends = [row for row in decisions if row[5] == "send"]
    assert len(sends) > 20 and len({row[0] for row in sends}) >= 5  # a real run: many mails, many campaigns
    return {
        "root": root,
        "decisions": decisions,
        "ledger": ledger,
        "outbox": _outbox(root / "duckdb" / "outbox"),
    }


@pytest.fixture(scope="module")
def postgres_run(duckdb_run: dict, postgres_server) -> dict:
    """`nachfass run` with NACHFASS_ENGINE=postgres from the same exports."""
    postgres_server.drop_database("e2e")
    env = _env(duckdb_run["root"], "postgres") | postgres_server.env(postgres_server.create_database("e2e"))
    run = _run(env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"env": env, "run": run}


@pytest.mark.clock
def test_a_run_decides_and_sends_the_same_on_duckdb_and_postgres(
    duckdb_run: dict, postgres_run: dict, postgres_server
) -> None:
    run = postgres_run["run"]
    with PgConnection.open(_settings(postgres_server)) as pg:
        pg_decisions = pg.execute(DECISIONS).fetchall()
        pg_ledger = pg.execute(LEDGER).fetchall()
    assert pg_decisions == duckdb_run["decisions"]
    assert pg_ledger == duckdb_run["ledger"]
    assert _outbox(duckdb_run["root"] / "postgres" / "outbox") == duckdb_run["outbox"]
    assert "PostgreSQL postgresql://postgres@127.0.0.1" in run.stdout  # the summary says where


def test_the_report_and_the_backtest_read_the_postgres_warehouse(
    duckdb_run: dict, postgres_run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the postgres engine (and beside Spark) the analytics live in PostgreSQL: `nachfass report` draws
    them from there, and the backtest's estimates take their rates from there, with the same figures as
    from the DuckDB run of the same exports."""
    from nachfass.core import report
    from nachfass.core.backtest import LIVE_WAREHOUSE, history_rates

    # a day later the analytics are rebuilt (the events job), now with the run's sends in them
    for env in (_env(duckdb_run["root"], "duckdb"), postgres_run["env"]):
        events = _run(env, "--job", "events_job", as_of="2026-11-25T10:00:00Z")
        assert events.returncode == 0, events.stdout[-3000:] + events.stderr[-3000:]
    duckdb_file = duckdb_run["root"] / "duckdb" / "warehouse.duckdb"
    with duckdb.connect(str(duckdb_file), read_only=True) as duck:
        duck_figures = report.key_figures(duck)
        duck_daily = report.daily_figures(duck, report.read_settings(duck)["as_of"], 28)
    duck_rates = history_rates(duckdb_file)
    assert duck_figures["mails_sent_7d"] > 20 and len(duck_rates) >= 5

    for name in [k for k in os.environ if k.startswith(("PG", "NACHFASS_"))]:
        monkeypatch.delenv(name)
    for name, value in postgres_run["env"].items():
        monkeypatch.setenv(name, value)
    assert history_rates(LIVE_WAREHOUSE) == duck_rates
    with PgConnection.open() as pg:
        assert report.key_figures(pg) == duck_figures
        pg_daily = report.daily_figures(pg, report.read_settings(pg)["as_of"], 28)
    assert pg_daily.to_dict("records") == duck_daily.to_dict("records")

    out = duckdb_run["root"] / "postgres" / "report"
    code = f"from nachfass.cli.main import main; raise SystemExit(main(['report', '--out', {str(out)!r}]))"
    made = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=postgres_run["env"], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    sent = report._number(duck_figures["mails_sent_7d"])
    assert f'<div class="value">{sent}</div><div class="label">Mails sent</div>' in page


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
    env = _env(duckdb_run["root"], "spark") | spark_runtime
    env |= postgres_server.env(postgres_server.create_database("e2e_spark"))
    run = _run(env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    settings = _settings(postgres_server)
    return {
        "env": env,
        "run": run,
        "settings": type(settings)(**{**settings.__dict__, "dbname": "e2e_spark"}),
    }


def test_a_run_decides_and_sends_the_same_on_duckdb_and_spark(duckdb_run: dict, spark_run: dict) -> None:
    """Not in the shifted-clock pass (its clock path is the PostgreSQL engine's, tested above); a Spark
    build takes minutes."""
    with PgConnection.open(spark_run["settings"]) as pg:
        spark_decisions = pg.execute(DECISIONS).fetchall()  # built on Spark, copied back
        spark_ledger = pg.execute(LEDGER).fetchall()
        # dbt built on Spark, not here: PostgreSQL holds only the models the Python steps read
        segments_in_pg = pg.execute(
            "select count(*) from information_schema.tables where table_schema = 'segments'"
        ).fetchone()[0]
    assert spark_decisions == duckdb_run["decisions"]
    assert spark_ledger == duckdb_run["ledger"]
    assert _outbox(duckdb_run["root"] / "spark" / "outbox") == duckdb_run["outbox"]
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


def _settings(server):
    from nachfass.core.warehouse.settings import PostgresSettings

    return PostgresSettings(host=server.host, port=server.port, user=server.user, dbname="e2e")


def test_two_runs_at_once_on_postgres_neither_fails_nor_sends_twice(
    tmp_path: Path, postgres_server, dbt_manifest
) -> None:
    """The one-writer rule is DuckDB's: on PostgreSQL two scheduled runs may overlap (a long daily run and
    a 15-minute tick). Both succeed; the second decides after the first rendered (decision lock) and
    finds its mails in the ledger; every mail is sent once."""
    landing = tmp_path / "landing"
    generate_exports(landing, customers=300, seed=5, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    postgres_server.drop_database("overlap")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NACHFASS_", "SENDGRID_"))} | {
        "NACHFASS_ENGINE": "postgres",
        "NACHFASS_LANDING": str(landing),
        "NACHFASS_DATA": str(tmp_path / "data"),
        "NACHFASS_OUTBOX": str(tmp_path / "outbox"),
        **postgres_server.env(postgres_server.create_database("overlap")),
    }
    code = f"from nachfass.cli.main import main; raise SystemExit(main(['run', '--as-of', {AS_OF!r}]))"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(out[-3000:] for out in outputs)
    settings = _settings(postgres_server)
    with PgConnection.open(type(settings)(**{**settings.__dict__, "dbname": "overlap"})) as pg:
        total, distinct, sent = pg.execute(
            "select count(*), count(distinct (campaign, step, trigger_key)), count(*) filter "
            "(where status = 'sent') from mail.sends"
        ).fetchone()
        runs_recorded = pg.execute("select count(*) from mail.runs").fetchone()[0]
    assert total == distinct and sent > 20
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == sent  # one file per mail: none written twice
    assert runs_recorded == 2
    assert sum("waiting for it to finish rendering" in out for out in outputs) == 1  # the second one waited
