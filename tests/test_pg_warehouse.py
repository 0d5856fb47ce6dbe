"""The PostgreSQL warehouse of the Python steps (nachfass/core/warehouse/) against a real PostgreSQL server:
settings, DDL, the ledger (the same behaviour as the DuckDB ledger, and at most once with two sessions
claiming at once), and the ingest's push from a DuckDB staging file. Against the session's throwaway
server (conftest.py ``postgres_server``) or, if set, NACHFASS_TEST_PG_DSN (a libpq connection string of a
role that may create databases); every test gets a fresh database of its own."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg2
import psycopg2.extensions
import pytest
from dbt_helpers import write_exports
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sendgrid_fixtures import mails, make_mail

from nachfass.core.events import load_events
from nachfass.core.ingest import load_landing
from nachfass.core.mail import journal as send_journal
from nachfass.core.mail import ledger as duck_ledger
from nachfass.core.mail.message import MailJob, SendResult
from nachfass.core.schema import ALL_TABLES, RAW_TABLES, prepare_warehouse
from nachfass.core.warehouse import pg_ledger, postgres
from nachfass.core.warehouse.settings import PostgresSettings, SettingsError, WarehouseSettings, engine

AS_OF = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


# --- settings (no server needed) ---------------------------------------------------------------------


def test_engine_setting_default_known_and_unknown():
    assert engine({}) == "duckdb"
    assert engine({"NACHFASS_ENGINE": " Postgres "}) == "postgres"
    with pytest.raises(SettingsError) as err:
        engine({"NACHFASS_ENGINE": "oracle"})
    message = str(err.value)
    assert "NACHFASS_ENGINE" in message and "duckdb, postgres" in message and "\n" not in message


def test_postgres_settings_from_libpq_variables_never_show_the_password():
    s = PostgresSettings.from_env({"PGPASSWORD": "hunter2-geheim", "PGPORT": "6543"})
    assert (s.host, s.port, s.user, s.dbname) == ("127.0.0.1", 6543, "postgres", "nachfass")
    assert "hunter2" not in repr(s) and "hunter2" not in s.describe()
    assert s.connect_kwargs()["password"] == "hunter2-geheim"
    assert "hunter2" not in repr(
        WarehouseSettings.from_env({"NACHFASS_ENGINE": "postgres", "PGPASSWORD": "hunter2"})
    )
    with pytest.raises(SettingsError, match="PGPORT"):
        PostgresSettings.from_env({"PGPORT": "x"})


def test_connection_error_names_server_not_password():
    # Nothing listens on port 1: the error must say where, and never the password.
    s = PostgresSettings(host="127.0.0.1", port=1, password="hunter2-geheim")
    with pytest.raises(postgres.WarehouseError) as err:
        postgres.connect(s)
    assert "127.0.0.1:1" in str(err.value) and "hunter2" not in str(err.value)


# --- a fresh database per test -----------------------------------------------------------------------


@pytest.fixture
def pg_dsn(request: pytest.FixtureRequest):
    base = os.environ.get("NACHFASS_TEST_PG_DSN") or request.getfixturevalue("postgres_server").dsn()
    name = f"nachfass_t_{uuid.uuid4().hex[:16]}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}" template template0')
    try:
        yield psycopg2.extensions.make_dsn(base, dbname=name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


@pytest.fixture
def pg(pg_dsn):
    conn = postgres.connect(dsn=pg_dsn)
    postgres.prepare_warehouse(conn)
    yield conn
    conn.close()


def pg_query(conn, query: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


# --- DDL ---------------------------------------------------------------------------------------------


def test_ddl_creates_every_table_idempotently_and_like_duckdb(pg_dsn):
    conn = postgres.connect(dsn=pg_dsn)
    postgres.prepare_warehouse(conn)
    postgres.prepare_warehouse(conn)  # twice: nothing fails, nothing doubles
    assert pg_query(conn, "select count(*) from mail.erasure_salt") == [(1,)]
    duck = duckdb.connect()
    prepare_warehouse(duck)
    from nachfass.core.schema import ensure_erasure_schema

    ensure_erasure_schema(duck)
    for table in ALL_TABLES:
        pg_cols = pg_query(
            conn,
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "order by ordinal_position",
            [table.schema, table.name],
        )
        duck_cols = duck.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position",
            [table.schema, table.name],
        ).fetchall()
        assert [c[0] for c in pg_cols] == [c[0] for c in duck_cols], table.qualified
    types = dict(
        pg_query(
            conn,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'raw' and table_name = 'orders'",
        )
    )
    assert types["total_amount"] == "numeric" and types["placed_at"] == "timestamp without time zone"
    assert (
        dict(
            pg_query(
                conn,
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'raw' and table_name = 'loaded_files'",
            )
        )["unknown_columns"]
        == "ARRAY"
    )
    with pytest.raises(psycopg2.errors.CheckViolation), conn.cursor() as cur:
        cur.execute(
            "insert into mail.sends (send_id, campaign, step, trigger_key, status, as_of, created_at, "
            "updated_at) values ('x', 'c', 's', 't', 'bogus', now(), now(), now())"
        )
    conn.close()


def test_ddl_from_several_sessions_at_once(pg_dsn):
    with ThreadPoolExecutor(4) as pool:  # each worker its own connection: a session of its own
        list(pool.map(_prepare_in_child, [pg_dsn] * 8))
    conn = postgres.connect(dsn=pg_dsn)
    assert pg_query(conn, "select count(*) from mail.erasure_salt") == [(1,)]
    conn.close()


def _prepare_in_child(dsn: str) -> None:
    conn = postgres.connect(dsn=dsn)
    postgres.prepare_warehouse(conn)
    conn.close()


# --- the ledger: the same behaviour as on DuckDB -----------------------------------------------------


class Engine:
    """One ledger module and connection, with a query helper that works on both engines."""

    def __init__(self, name: str, module, conn):
        self.name, self.ledger, self.conn = name, module, conn

    def rows(self) -> dict[str, tuple]:
        query = (
            "select send_id, status, reason, sg_message_id, attempts, transport, run_id, as_of, email_hash, "
            "campaign, step, trigger_key, customer_id, email, experiment_id, variant from mail.sends"
        )
        result = self.conn.execute(query).fetchall() if self.name == "duckdb" else pg_query(self.conn, query)
        return {r[0]: tuple(r[1:]) for r in result}


@pytest.fixture(params=["duckdb", "postgres"])
def eng(request, tmp_path):
    if request.param == "duckdb":
        conn = duckdb.connect(str(tmp_path / "w.duckdb"))
        duck_ledger.ensure_ledger(conn)
        yield Engine("duckdb", duck_ledger, conn)
    else:
        conn = request.getfixturevalue("pg")
        yield Engine("postgres", pg_ledger, conn)
    conn.close()


def holdout_job(i: int) -> MailJob:
    m = make_mail(i)
    return MailJob(
        campaign=m.campaign,
        step=m.step,
        variant="holdout",
        trigger_key=m.trigger_key,
        customer_id=m.customer_id,
        email=m.to_email,
        first_name="Jörg",
        last_name=None,
        salutation=None,
        locale="de-DE",
        consent_policy="required",
        has_marketing_consent=True,
        experiment_id="exp1",
    )


def scenario(e: Engine) -> list:
    """The behaviours test_sender.py asserts on DuckDB, as a script of calls; returns every answer."""
    L, c = e.ledger, e.conn
    out: list = []
    m = make_mail(0)
    out.append(L.claim(c, m, run_id="r", as_of=AS_OF, transport_name="sendgrid"))
    out.append(L.claim(c, m, run_id="r2", as_of=AS_OF, transport_name="sendgrid"))
    out.append(L.finish(c, m.send_id, SendResult("sent", "mid-1")))
    out.append(L.finish(c, m.send_id, SendResult("failed", error="late")))  # the outcome is final
    out.append(L.release_many(c, [m.send_id], run_id="r"))  # only 'sending' rows can be released
    dup = [make_mail(1), make_mail(1), make_mail(2)]
    out.append(
        [x.trigger_key for x in L.claim_many(c, dup, run_id="r", as_of=AS_OF, transport_name="outbox")]
    )
    batch = mails(6, start=10)
    out.append(
        [x.trigger_key for x in L.claim_many(c, batch, run_id="r3", as_of=AS_OF, transport_name="sendgrid")]
    )
    out.append(
        [
            x.trigger_key
            for x in L.claim_many(c, mails(8, start=8), run_id="r4", as_of=AS_OF, transport_name="sendgrid")
        ]
    )
    out.append(
        L.finish_many(
            c,
            [
                (batch[0].send_id, SendResult("sent", "mid-10")),
                (batch[1].send_id, SendResult("failed", error="400: bad request")),
                (batch[2].send_id, SendResult("unknown", error="timeout")),
                ("s_nonexistent", SendResult("sent", "x")),
            ],
        )
    )
    out.append(L.release_many(c, [batch[3].send_id], run_id="other-run"))  # another run's row: untouched
    out.append(L.release_many(c, [batch[3].send_id, batch[3].send_id], run_id="r3"))
    out.append(L.claim(c, batch[3], run_id="r5", as_of=AS_OF, transport_name="sendgrid"))  # free again
    out.append(
        L.record_holdouts(c, [holdout_job(30), holdout_job(30), holdout_job(31)], run_id="h", as_of=AS_OF)
    )
    out.append(L.record_holdout(c, holdout_job(30), "h", AS_OF))
    out.append(L.record_holdout(c, holdout_job(10), "h", AS_OF))  # already claimed for a mail
    out.append(L.status_counts(c))
    out.append(L.status_counts(c, "r3"))
    out.append(L.recover_crashed(c, None))
    out.append(L.recover_crashed(c, None))
    out.append(L.status_counts(c))
    with pytest.raises(ValueError):
        L.claim(c, m, run_id="r", as_of=None, transport_name="sendgrid")
    with pytest.raises(ValueError):
        L.claim(c, m, run_id="r", as_of=AS_OF, transport_name="carrier-pigeon")
    with pytest.raises(ValueError):
        L.finish(c, m.send_id, SendResult("holdout"))  # type: ignore[arg-type]
    L.ensure_ledger(c)  # idempotent
    return out


def test_ledger_behaves_like_the_duckdb_ledger(eng, tmp_path):
    answers = scenario(eng)
    reference = Engine("duckdb", duck_ledger, duckdb.connect(str(tmp_path / "ref.duckdb")))
    duck_ledger.ensure_ledger(reference.conn)
    assert answers == scenario(reference)
    # Same rows, same states, same logical times (the audit clock aside).
    assert eng.rows() == reference.rows()
    assert answers[0] and not answers[1] and answers[2] and not answers[3]
    assert answers[5] == ["cart-000001", "cart-000002"]


@pytest.mark.skipif(send_journal.boot_id() is None, reason="the send journal needs the kernel's boot id")
def test_recover_with_journal_like_duckdb(pg, tmp_path):
    batch = mails(4)
    pg_ledger.claim_many(pg, batch, run_id="crashed", as_of=AS_OF, transport_name="sendgrid")
    folder = tmp_path / "journals"
    journal = send_journal.SendJournal(folder, "crashed")
    journal.dispatched(batch[0].send_id)
    journal.outcome(batch[0].send_id, "sent", "msg-0", None, 1)
    journal.dispatched(batch[1].send_id)  # in flight when the process died
    journal.close(remove=False)  # batch[2] and batch[3] were claimed, never handed to the transport
    recovery = pg_ledger.recover(pg, folder)
    assert (recovery.released, recovery.settled, recovery.unknown) == (2, 1, 1)
    assert dict(pg_query(pg, "select send_id, status from mail.sends")) == {
        batch[0].send_id: "sent",
        batch[1].send_id: "unknown",
    }
    assert list(folder.iterdir()) == []


def test_journal_of_another_boot_proves_nothing(pg, tmp_path):
    pg_ledger.claim_many(pg, mails(3), run_id="crashed", as_of=AS_OF, transport_name="sendgrid")
    folder = tmp_path / "journals"
    folder.mkdir()
    send_journal.journal_path(folder, "crashed").write_text(
        '{"run_id": "crashed", "boot_id": "another-boot"}\n'
    )
    assert pg_ledger.recover(pg, folder).unknown == 3


def test_recovery_leaves_a_run_alive_in_another_process_alone(pg_dsn, pg):
    alive = postgres.connect(dsn=pg_dsn)
    claimed = pg_ledger.claim_many(alive, mails(5), run_id="alive", as_of=AS_OF, transport_name="sendgrid")
    assert len(claimed) == 5
    pg_ledger.claim_many(pg, mails(2, start=100), run_id="dead", as_of=AS_OF, transport_name="sendgrid")
    pg_ledger.end_run(pg, "dead")  # as if its process had gone
    assert pg_ledger.recover_crashed(pg) == 2  # only the dead run's rows
    assert pg_ledger.status_counts(pg, "alive") == {"sending": 5}
    # The live run finishes its mails normally.
    assert pg_ledger.finish_many(alive, [(m.send_id, SendResult("sent", "m")) for m in claimed[:3]]) == 3
    pid = alive.get_backend_pid()
    alive.close()  # the process dies with 2 mails in 'sending'
    _wait_gone(pg, pid)  # its server process exits a moment later, and its locks with it
    assert pg_ledger.recover_crashed(pg) == 2
    assert pg_ledger.status_counts(pg) == {"sent": 3, "unknown": 4}


def _wait_gone(conn, pid: int) -> None:
    for _ in range(500):
        if not pg_query(conn, "select 1 from pg_stat_activity where pid = %s", [pid]):
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} still there")


# --- at most once with two sessions at once (threads, each its own connection and server process) ---

TRIGGERS_PER_PROCESS = 2000
ROUNDS = 5


def _claimer(dsn: str, triggers: list[int], step: str, seed: int, barrier) -> list[str]:
    """Claim the triggers in random order and random batch sizes; return the trigger keys this process got."""
    rng = random.Random(seed)
    order = list(triggers)
    rng.shuffle(order)
    conn = postgres.connect(dsn=dsn)
    got: list[str] = []
    barrier.wait()
    i = 0
    while i < len(order):
        size = rng.randint(1, 200)
        batch = [make_mail(n, step=step) for n in order[i : i + size]]
        i += size
        got += [
            m.trigger_key
            for m in pg_ledger.claim_many(
                conn, batch, run_id=f"run-{seed}", as_of=AS_OF, transport_name="outbox"
            )
        ]
    conn.close()
    return got


def test_two_sessions_claim_overlapping_sets_exactly_once(pg_dsn, pg):
    half = TRIGGERS_PER_PROCESS // 2
    first = list(range(TRIGGERS_PER_PROCESS))
    second = list(range(half, half + TRIGGERS_PER_PROCESS))  # 50 % overlap
    distinct = len(set(first) | set(second))
    totals, seconds = [], []
    with ThreadPoolExecutor(2) as pool:
        for round_no in range(ROUNDS):
            barrier = threading.Barrier(2)
            step = f"step_{round_no}"
            started = time.perf_counter()
            futures = [
                pool.submit(_claimer, pg_dsn, first, step, 2 * round_no, barrier),
                pool.submit(_claimer, pg_dsn, second, step, 2 * round_no + 1, barrier),
            ]
            a, b = (f.result() for f in futures)
            assert not set(a) & set(b), "a trigger claimed by both processes"
            assert len(a) == len(set(a)) and len(b) == len(set(b))
            assert len(a) + len(b) == distinct
            assert len(set(a) | set(b)) == distinct
            # Both processes won part of the overlap (they really ran at once).
            overlap = {f"cart-{n:06d}" for n in set(first) & set(second)}
            totals.append((len(a), len(b), len(overlap & set(a)), len(overlap & set(b))))
            seconds.append(round(time.perf_counter() - started, 2))
    counts = pg_query(pg, "select step, count(*), count(distinct trigger_key) from mail.sends group by step")
    assert sorted(counts) == [(f"step_{r}", distinct, distinct) for r in range(ROUNDS)]
    assert any(a_won and b_won for _, _, a_won, b_won in totals), "the two processes never competed"
    print(
        f"two processes, {ROUNDS} rounds of {distinct} triggers: (a, b, a∩overlap, b∩overlap) = {totals}, "
        f"s/round {seconds}"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(["r1", "r2"]), st.lists(st.integers(0, 30), max_size=12)),
        min_size=1,
        max_size=6,
    )
)
def test_claim_semantics_property(pg, batches):
    """Any sequence of claims: a trigger is handed out at most once, to the first batch that asks for it,
    and exactly the DuckDB ledger's answers."""
    step = f"p{uuid.uuid4().hex[:8]}"  # the database is shared by the examples: a fresh step each
    duck = duckdb.connect()
    duck_ledger.ensure_ledger(duck)
    seen: set[int] = set()
    for run_id, numbers in batches:
        batch = [make_mail(n, step=step) for n in numbers]
        got = pg_ledger.claim_many(pg, batch, run_id=run_id, as_of=AS_OF, transport_name="outbox")
        expected = [make_mail(n, step=step) for n in dict.fromkeys(numbers) if n not in seen]
        seen |= set(numbers)
        assert got == expected
        assert got == duck_ledger.claim_many(duck, batch, run_id=run_id, as_of=AS_OF, transport_name="outbox")
    rows = pg_query(pg, "select trigger_key from mail.sends where step = %s", [step])
    assert Counter(r[0] for r in rows) == Counter(f"cart-{n:06d}" for n in seen)
    duck.close()


# --- the ingest: DuckDB staging, pushed to PostgreSQL ------------------------------------------------


def event(n: int, kind: str = "delivered") -> dict:
    return {
        "sg_event_id": f"ev-{n}",
        "event": kind,
        "email": "Kunde@Example.de",
        "timestamp": 1_795_000_000 + n,
        "sg_message_id": "msg123.filter0001.00001.0",
        "send_id": "s_1",
        "campaign": "abandoned_cart",
        "step": "1",
        "variant": "b",
    }


def write_events(landing: Path, name: str, lines: list) -> None:
    folder = landing / "sendgrid_events"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


def sample_landing(landing: Path) -> None:
    from nachfass.devtools.datagen.generate import generate_exports

    generate_exports(landing, customers=120, seed=3, days=10)
    # Rows that break the contract (quarantine), a file without a required column (rejected), text that
    # needs quoting in CSV (commas, quotes, line breaks, an empty string).
    write_exports(
        landing,
        {
            "customers": [
                {"customer_id": "q-1", "email": "not an address", "created_at": AS_OF, "updated_at": AS_OF},
                {
                    "customer_id": "ok-1",
                    "email": "ok1@beispiel.example",
                    "first_name": 'Anna "Nanni", die\nZweite',
                    "last_name": "",
                    "created_at": AS_OF,
                    "updated_at": AS_OF,
                },
            ]
        },
        name="zz_extra.csv",
    )
    (landing / "orders" / "zz_broken.csv").write_text("nothing,useful\n1,2\n")
    write_events(landing, "a.ndjson", [event(1), event(2, "open"), "{not json", event(1)])
    write_events(landing, "b.ndjson", [event(2, "open"), event(3, "click")])


def table_counts_duck(duck) -> dict[str, int]:
    return {
        t.qualified: duck.execute(f"select count(*) from {t.qualified}").fetchone()[0]
        for t in ALL_TABLES
        if t.schema == "raw"
    }


def table_counts_pg(conn) -> dict[str, int]:
    return {
        t.qualified: pg_query(conn, f"select count(*) from {t.qualified}")[0][0]
        for t in ALL_TABLES
        if t.schema == "raw"
    }


def test_push_tables_copies_a_real_ingest_once(pg, tmp_path):
    landing = tmp_path / "landing"
    sample_landing(landing)
    duck = duckdb.connect(str(tmp_path / "staging.duckdb"))
    prepare_warehouse(duck)
    reports = load_landing(duck, landing, as_of=AS_OF)
    load_events(duck, landing)
    assert any(r.status == "rejected" for r in reports) and any(r.rows_quarantined for r in reports)
    first = postgres.push_tables(duck, pg)
    second = postgres.push_tables(duck, pg)
    expected = table_counts_duck(duck)
    assert table_counts_pg(pg) == expected
    assert expected["raw.customers"] > 100 and expected["raw.quarantine"] >= 1
    assert expected["raw.sendgrid_events"] == 3 and expected["raw.event_quarantine"] == 1
    assert expected["raw.rejected_files"] == 1
    assert first.files == expected["raw.loaded_files"] and first.files_already_there == 0
    assert second.files == 0 and second.rows == {}
    assert {t: n for t, n in first.rows.items()} == {t: n for t, n in expected.items() if n}
    # The values arrive intact: every column of every raw table, compared as text.
    for table in RAW_TABLES.values():
        cols = postgres.column_names(table)
        duck_rows = duck.execute(
            f"select {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} from {table.qualified}"
        ).fetchall()
        pg_rows = pg_query(
            pg, f"select {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} from {table.qualified}"
        )
        assert Counter(map(repr, map(_normal, duck_rows))) == Counter(map(repr, map(_normal, pg_rows))), (
            table.name
        )
    name = pg_query(pg, "select first_name, last_name from raw.customers where customer_id = 'ok-1'")
    assert name == [('Anna "Nanni", die\nZweite', None)] or name == [('Anna "Nanni", die\nZweite', "")]
    assert (
        name
        == duck.execute(
            "select first_name, last_name from raw.customers where customer_id = 'ok-1'"
        ).fetchall()
    )
    quarantine = pg_query(pg, "select reason from raw.quarantine where raw_values ->> 'customer_id' = 'q-1'")
    assert len(quarantine) == 1 and "email" in quarantine[0][0]
    assert pg_query(pg, "select unknown_columns from raw.loaded_files where path like '%zz_extra.csv'") == [
        ([],)
    ]

    # More files arrive: the next ingest pushes just them; a rebuilt staging file that loads everything
    # again pushes nothing twice.
    write_events(landing, "c.ndjson", [event(3, "click"), event(4, "bounce")])
    load_events(duck, landing)
    third = postgres.push_tables(duck, pg)
    assert third.files == 1 and third.rows["raw.sendgrid_events"] == 1
    rebuilt = duckdb.connect(str(tmp_path / "rebuilt.duckdb"))
    prepare_warehouse(rebuilt)
    load_landing(rebuilt, landing, as_of=AS_OF)
    load_events(rebuilt, landing)
    again = postgres.push_tables(rebuilt, pg)
    assert again.files == 0 and set(again.rows) <= {"raw.rejected_files"}
    assert pg_query(pg, "select count(*), count(distinct sg_event_id) from raw.sendgrid_events") == [(4, 4)]
    for name in RAW_TABLES:
        assert table_counts_pg(pg)[f"raw.{name}"] == table_counts_duck(duck)[f"raw.{name}"]
    duck.close()
    rebuilt.close()


def _normal(row: tuple) -> tuple:
    # DuckDB and psycopg2 hand back Decimal/datetime/bool alike; JSON text may differ in spacing only.
    return tuple(json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in row)


def test_stage_and_push_end_to_end(pg, tmp_path):
    landing = tmp_path / "landing"
    sample_landing(landing)
    reports, events_report, pushed = postgres.stage_and_push(
        pg, tmp_path / "staging.duckdb", landing, as_of=AS_OF
    )
    assert events_report.events_new == 3 and pushed.files == sum(r.status == "loaded" for r in reports) + 2
    _, _, again = postgres.stage_and_push(pg, tmp_path / "staging.duckdb", landing, as_of=AS_OF)
    assert again.files == 0


def _staged(tmp_path: Path, name: str, landing: Path) -> Path:
    path = tmp_path / name
    duck = duckdb.connect(str(path))
    prepare_warehouse(duck)
    load_landing(duck, landing, as_of=AS_OF)
    load_events(duck, landing)
    duck.close()
    return path


def _push_in_child(dsn: str, staging: str, barrier) -> int:
    duck = duckdb.connect(staging, read_only=True)
    conn = postgres.connect(dsn=dsn)
    barrier.wait()
    report = postgres.push_tables(duck, conn)
    conn.close()
    duck.close()
    return report.files


def test_two_pushes_at_once_copy_each_file_once(pg_dsn, pg, tmp_path):
    landing = tmp_path / "landing"
    sample_landing(landing)
    # Two staging files (two machines) that loaded the same landing folder, pushed at the same moment.
    stagings = [str(_staged(tmp_path, f"s{i}.duckdb", landing)) for i in range(2)]
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        files = list(pool.map(lambda staging: _push_in_child(pg_dsn, staging, barrier), stagings))
    duck = duckdb.connect(stagings[0], read_only=True)
    expected = table_counts_duck(duck)
    assert sorted(files) == [0, expected["raw.loaded_files"]]  # one of them copied everything
    counts = table_counts_pg(pg)
    # rejected_files: each staging rejected the broken file once, at its own time (two attempts, both kept)
    assert counts.pop("raw.rejected_files") == 2
    expected.pop("raw.rejected_files")
    assert counts == expected
    duck.close()


def test_a_failed_push_leaves_nothing_behind(pg, tmp_path):
    landing = tmp_path / "landing"
    sample_landing(landing)
    duck = duckdb.connect(str(_staged(tmp_path, "s.duckdb", landing)))
    with pg.cursor() as cur:  # the events table cannot take the rows: the push fails late
        cur.execute("alter table raw.sendgrid_events add constraint no_events check (false) not valid")
    with pytest.raises(psycopg2.errors.CheckViolation):
        postgres.push_tables(duck, pg)
    assert set(table_counts_pg(pg).values()) == {0}
    with pg.cursor() as cur:
        cur.execute("alter table raw.sendgrid_events drop constraint no_events")
    assert postgres.push_tables(duck, pg).files == table_counts_duck(duck)["raw.loaded_files"]
    assert table_counts_pg(pg) == table_counts_duck(duck)
    duck.close()


def test_events_reconcile_unknown_ledger_rows_on_postgres(pg, tmp_path):
    m = make_mail(0)
    lost = mails(1, start=1)[0]
    pg_ledger.claim_many(pg, [m, lost], run_id="crashed", as_of=AS_OF, transport_name="sendgrid")
    assert pg_ledger.recover_crashed(pg) == 2
    landing = tmp_path / "landing"
    write_events(
        landing, "a.ndjson", [{**event(1), "send_id": m.send_id}, {**event(2, "open"), "send_id": m.send_id}]
    )
    _, report, pushed = postgres.stage_and_push(pg, tmp_path / "s.duckdb", landing, as_of=AS_OF)
    assert pushed.rows["raw.sendgrid_events"] == 2 and report.reconciled == 1
    assert dict(pg_query(pg, "select send_id, status from mail.sends")) == {
        m.send_id: "sent",
        lost.send_id: "unknown",
    }
    assert pg_query(pg, "select sg_message_id, reason from mail.sends where send_id = %s", [m.send_id]) == [
        ("msg123", "reconciled: SendGrid reported event delivered for this send id")
    ]


def test_ledger_module_follows_the_engine_setting(monkeypatch):
    from nachfass.core.warehouse import ledger_module

    monkeypatch.setenv("NACHFASS_ENGINE", "postgres")
    assert ledger_module() is pg_ledger
    monkeypatch.delenv("NACHFASS_ENGINE")
    assert ledger_module() is duck_ledger
    import inspect

    names = [
        "claim_many", "claim", "finish_many", "finish", "release_many", "record_holdouts", "record_holdout",
        "recover", "recover_crashed", "status_counts", "ensure_ledger",
    ]  # fmt: skip
    for name in names:
        pg_params = inspect.signature(getattr(pg_ledger, name)).parameters
        duck_params = inspect.signature(getattr(duck_ledger, name)).parameters
        assert [(p.name, p.kind, p.default) for p in pg_params.values()] == [
            (p.name, p.kind, p.default) for p in duck_params.values()
        ], name


def _sender_in_child(dsn: str, n: int, barrier) -> tuple[int, int]:
    """A live send run: claims in batches and records every outcome; returns (claimed, finished)."""
    conn = postgres.connect(dsn=dsn)
    barrier.wait()
    claimed = finished = 0
    for start in range(0, n, 50):
        got = pg_ledger.claim_many(
            conn, mails(50, start=start), run_id="live", as_of=AS_OF, transport_name="outbox"
        )
        claimed += len(got)
        time.sleep(0.002)  # the mails are "in flight"
        finished += pg_ledger.finish_many(
            conn, [(m.send_id, SendResult("sent", f"m-{m.send_id}")) for m in got]
        )
    conn.close()
    return claimed, finished


def test_recovery_running_beside_a_live_send_run_never_touches_it(pg_dsn, pg):
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(_sender_in_child, pg_dsn, 1500, barrier)
        barrier.wait()
        recoveries = 0
        while not result.done():
            recoveries += 1
            assert pg_ledger.recover(pg, None).unknown == 0
        claimed, finished = result.result()
    assert recoveries > 1 and claimed == finished == 1500
    assert pg_ledger.status_counts(pg) == {"sent": 1500}
