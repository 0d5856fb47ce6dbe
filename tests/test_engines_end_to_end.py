"""`nachfass run` on DuckDB and on PostgreSQL, from the same exports at the same as_of: the same decisions
with the same reasons, the same mails byte for byte, the same ledger. Everything real on each side: the
ingest (on PostgreSQL: parsed in the DuckDB staging file, then copied), dbt through dagster-dbt with the
engine's target, rendering, the outbox and the ledger. Spark: tests/test_engines_end_to_end_spark.py."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from engines_e2e_support import (
    AS_OF,
    DECISIONS,
    LEDGER,
    engine_env,
    outbox_files,
    pg_settings,
    run_cli,
)
from tests_support import REPO_ROOT

from nachfass.core.pgconn import PgConnection
from nachfass.devtools.datagen.generate import generate_exports

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_run(duckdb_run: dict, postgres_server) -> dict:
    """`nachfass run` with NACHFASS_ENGINE=postgres from the same exports."""
    postgres_server.drop_database("e2e")
    env = engine_env(duckdb_run["root"], "postgres")
    env |= postgres_server.env(postgres_server.create_database("e2e"))
    run = run_cli(env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"env": env, "run": run}


@pytest.mark.clock
def test_a_run_decides_and_sends_the_same_on_duckdb_and_postgres(
    duckdb_run: dict, postgres_run: dict, postgres_server
) -> None:
    run = postgres_run["run"]
    with PgConnection.open(pg_settings(postgres_server)) as pg:
        pg_decisions = pg.execute(DECISIONS).fetchall()
        pg_ledger = pg.execute(LEDGER).fetchall()
    assert pg_decisions == duckdb_run["decisions"]
    assert pg_ledger == duckdb_run["ledger"]
    assert outbox_files(duckdb_run["root"] / "postgres" / "outbox") == duckdb_run["outbox"]
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
    for env in (engine_env(duckdb_run["root"], "duckdb"), postgres_run["env"]):
        events = run_cli(env, "--job", "events_job", as_of="2026-11-25T10:00:00Z")
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
    settings = pg_settings(postgres_server)
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
