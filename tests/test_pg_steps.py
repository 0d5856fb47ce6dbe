"""The render and send steps on the PostgreSQL engine give the same mails and ledger as on DuckDB.

The decisions come from one dbt build of the scenario world on DuckDB; the same candidate rows are put
into PostgreSQL, and both engines then run the steps exactly as the Dagster assets do (render into the
per-run queue, holdouts, claims, outbox, outcomes). Two runs overlap on PostgreSQL: nothing is sent twice.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import insert_events, insert_sends, load_exports, run_dbt, write_exports
from test_scenarios import AS_OF, build_world

from nachfass.core.links import LinkSigner
from nachfass.core.mail.render import MailRenderer
from nachfass.core.mail.steps import render_due_mails, send_queued_mails
from nachfass.core.mail.transport import OutboxTransport
from nachfass.core.pgconn import PgConnection
from nachfass.core.shop import load_shop_settings

pytestmark = pytest.mark.slow

LEDGER_COLUMNS = (
    "send_id, campaign, step, trigger_key, customer_id, email_hash, variant, status, transport, as_of"
)


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pgsteps")
    world = build_world()
    write_exports(root / "landing", world.rows)
    warehouse = root / "warehouse.duckdb"
    load_exports(warehouse, root / "landing")
    insert_sends(warehouse, world.sends)
    insert_events(warehouse, world.events)
    run_dbt(["build"], warehouse=warehouse, target_path=root / "target", as_of=AS_OF)
    return warehouse


def _copy_candidates(duck_path: Path, conn: PgConnection) -> None:
    """eligibility.mail_candidates and the ledger's earlier sends, as dbt and the steps left them."""
    with duckdb.connect(str(duck_path), read_only=True) as duck:
        candidates = duck.sql("select * from eligibility.mail_candidates").to_arrow_table()
        sends = duck.sql("select * from mail.sends").to_arrow_table()
    conn.prepare_schema()
    conn.register("_candidates", candidates)
    conn.execute("create schema if not exists eligibility")
    conn.execute("create table eligibility.mail_candidates as select * from _candidates")
    conn.register("_sends", sends)
    conn.execute("insert into mail.sends select * from _sends")


def _renderer() -> MailRenderer:
    return MailRenderer(load_shop_settings(), LinkSigner(b"k" * 32), now=AS_OF)


def _run(conn, outbox: Path, run_id: str, as_of: datetime = AS_OF):
    render_due_mails(conn, _renderer(), run_id=run_id, as_of=as_of, campaigns=[])
    return send_queued_mails(
        conn,
        OutboxTransport(outbox, shop=load_shop_settings(), as_of=as_of),
        run_id=run_id,
        as_of=as_of,
        campaigns=[],
    )


def _files(outbox: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(outbox.iterdir())}


def test_the_same_decisions_give_the_same_mails_and_ledger_on_both_engines(
    decided: Path, pg_env: dict[str, str], tmp_path: Path
) -> None:
    duck_path = tmp_path / "duck.duckdb"
    duck_path.write_bytes(decided.read_bytes())
    with duckdb.connect(str(duck_path)) as duck:
        duck_outcome = _run(duck, tmp_path / "outbox-duckdb", "run-1")
        duck_ledger = duck.execute(f"select {LEDGER_COLUMNS} from mail.sends order by send_id").fetchall()
    with PgConnection.open() as conn:
        _copy_candidates(decided, conn)
        pg_outcome = _run(conn, tmp_path / "outbox-postgres", "run-1")
        pg_ledger = conn.execute(f"select {LEDGER_COLUMNS} from mail.sends order by send_id").fetchall()
        queued = conn.execute("select count(*) from mail.outgoing").fetchone()[0]
    assert duck_outcome.report.sent > 10 and duck_outcome.holdouts > 0
    assert (pg_outcome.report.sent, pg_outcome.holdouts) == (duck_outcome.report.sent, duck_outcome.holdouts)
    assert pg_ledger == duck_ledger
    assert _files(tmp_path / "outbox-postgres") == _files(tmp_path / "outbox-duckdb")
    assert queued == 0  # the run's queue is gone once it is sent


def test_two_overlapping_runs_on_postgres_send_every_mail_once(
    decided: Path, pg_env: dict[str, str], tmp_path: Path
) -> None:
    with PgConnection.open() as conn:
        _copy_candidates(decided, conn)
        before = conn.execute("select count(*) from mail.sends").fetchone()[0]
        due = conn.execute(
            "select count(*) from eligibility.mail_candidates where decision = 'send'"
        ).fetchone()[0]
    outcomes: dict[str, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def one_run(run_id: str) -> None:
        try:
            with PgConnection.open() as conn:
                start.wait()
                outcomes[run_id] = _run(conn, tmp_path / "outbox", run_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one_run, args=(f"run-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    with PgConnection.open() as conn:
        per_trigger = conn.execute(
            "select count(*), count(distinct (campaign, step, trigger_key)) from mail.sends"
        ).fetchone()
        sent = conn.execute("select count(*) from mail.sends where status = 'sent'").fetchone()[0]
    assert per_trigger[0] == per_trigger[1]  # no trigger twice
    sent_by_runs = sum(o.report.sent for o in outcomes.values())
    assert sent_by_runs == due  # every due mail sent, by one run or the other
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == due
    assert sent == due + conn_sent_before(before, decided)


def conn_sent_before(before: int, decided: Path) -> int:
    with duckdb.connect(str(decided), read_only=True) as duck:
        return duck.execute("select count(*) from mail.sends where status = 'sent'").fetchone()[0]
