"""`nachfass run` on DuckDB and on PostgreSQL, from the same exports at the same as_of: the same decisions
with the same reasons, the same mails byte for byte, the same ledger. Everything real on both sides: the
ingest (on PostgreSQL: parsed in the DuckDB staging file, then copied), dbt through dagster-dbt with the
engine's target, rendering, the outbox and the ledger."""

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

pytestmark = [pytest.mark.slow, pytest.mark.clock]

AS_OF = "2026-11-24T10:00:00Z"
DECISIONS = (
    "select campaign, step, trigger_key, customer_id, variant, decision, reason, deferred_until "
    "from eligibility.mail_candidates order by campaign, step, trigger_key"
)
LEDGER = (
    "select send_id, campaign, step, trigger_key, customer_id, email_hash, variant, status, transport, as_of "
    "from mail.sends order by send_id"
)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"from nachfass.cli.main import main; raise SystemExit(main(['run', '--as-of', {AS_OF!r}]))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def _outbox(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_run_decides_and_sends_the_same_on_duckdb_and_postgres(
    tmp_path: Path, postgres_server, dbt_manifest
) -> None:
    landing = tmp_path / "landing"
    generate_exports(landing, customers=400, seed=11, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NACHFASS_", "SENDGRID_"))} | {
        "NACHFASS_LANDING": str(landing)
    }
    runs = {}
    for engine in ("duckdb", "postgres"):
        env = base | {
            "NACHFASS_ENGINE": engine,
            "NACHFASS_DATA": str(tmp_path / engine),
            "NACHFASS_WAREHOUSE": str(tmp_path / engine / "warehouse.duckdb"),
            "NACHFASS_OUTBOX": str(tmp_path / engine / "outbox"),
        }
        if engine == "postgres":
            postgres_server.drop_database("e2e")
            env |= postgres_server.env(postgres_server.create_database("e2e"))
        runs[engine] = _run(env)
        assert runs[engine].returncode == 0, runs[engine].stdout[-3000:] + runs[engine].stderr[-3000:]
    with duckdb.connect(str(tmp_path / "duckdb" / "warehouse.duckdb"), read_only=True) as duck:
        duck_decisions = duck.execute(DECISIONS).fetchall()
        duck_ledger = duck.execute(LEDGER).fetchall()
    with PgConnection.open(_settings(postgres_server)) as pg:
        pg_decisions = pg.execute(DECISIONS).fetchall()
        pg_ledger = pg.execute(LEDGER).fetchall()
    sends = [row for row in duck_decisions if row[5] == "send"]
    assert len(sends) > 20 and len({row[0] for row in sends}) >= 5  # a real run: many mails, many campaigns
    assert pg_decisions == duck_decisions
    assert pg_ledger == duck_ledger
    assert _outbox(tmp_path / "postgres" / "outbox") == _outbox(tmp_path / "duckdb" / "outbox")
    assert "PostgreSQL postgresql://postgres@127.0.0.1" in runs["postgres"].stdout  # the summary says where


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
