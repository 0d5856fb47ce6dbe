"""The DuckDB-shaped PostgreSQL connection the Python steps use on the PostgreSQL engine."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nachfass.core.pgconn import PgConnection, translate


def test_placeholders_outside_quotes_become_psycopg2_parameters() -> None:
    assert translate("select ? , '?', \"a?\" where x like '5%' and y = ?") == (
        "select %s , '?', \"a?\" where x like '5%%' and y = %s"
    )


@given(st.lists(st.sampled_from(["a", " ", "?", "%", "'", "x", "'?'", "%%"]), max_size=30))
def test_translation_keeps_the_text_and_turns_each_unquoted_mark_into_one_parameter(parts: list[str]) -> None:
    sql = "".join(parts)
    out = translate(sql)
    # undoing the escapes gives the statement back, with %s where the placeholders were
    assert out.replace("%s", "\0").replace("%%", "%").replace("\0", "?") == sql
    in_quote, expected = False, 0
    for ch in sql:
        if ch == "'":
            in_quote = not in_quote
        elif ch == "?" and not in_quote:
            expected += 1
    assert out.replace("%%", "").count("%s") == expected


@pytest.mark.slow
def test_statements_parameters_transactions_and_registered_arrow_tables(pg_env: dict[str, str]) -> None:
    with PgConnection.open() as conn:
        conn.execute("create table t (id text primary key, tags text[], n bigint, at timestamp, ok boolean)")
        batch = pa.table(
            {
                "id": ["a", "b?", "c%"],
                "tags": [["x"], [], None],
                "n": [1, None, 3],
                "at": pa.array([datetime(2026, 11, 30, 8), None, datetime(2026, 1, 1)], pa.timestamp("us")),
                "ok": [True, False, None],
            }
        )
        conn.register("batch", batch)
        conn.execute("begin")
        conn.execute("insert into t select * from batch where id <> ?", ["zzz"])
        conn.execute("rollback")
        assert conn.execute("select count(*) from t").fetchone() == (0,)
        conn.execute("insert into t select * from batch")
        conn.unregister("batch")
        rows = conn.execute("select * from t where id like 'c%' or n is null order by id").fetchall()
        assert rows == [("b?", [], None, None, False), ("c%", None, 3, datetime(2026, 1, 1), None)]
        cursor = conn.cursor()
        cursor.execute("select id from t order by id")
        assert [cursor.fetchmany(2), cursor.fetchmany(2), cursor.fetchmany(2)] == [
            [("a",), ("b?",)],
            [("c%",)],
            [],
        ]


def test_an_unknown_engine_is_refused_with_the_setting_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nachfass.core.engine import EngineError, current_engine

    monkeypatch.setenv("NACHFASS_ENGINE", "oracle")
    with pytest.raises(EngineError, match=r"NACHFASS_ENGINE='oracle'.*duckdb, postgres"):
        current_engine()
    monkeypatch.setenv("NACHFASS_ENGINE", " PostgreS ")
    assert current_engine() == "postgres"


def test_the_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from nachfass.core.engine import describe
    from nachfass.core.warehouse.settings import PostgresSettings

    monkeypatch.setenv("NACHFASS_ENGINE", "postgres")
    monkeypatch.setenv("PGPASSWORD", "s3cret-pw")
    monkeypatch.delenv("PGDATABASE", raising=False)
    assert "s3cret-pw" not in repr(PostgresSettings.from_env()) + describe()
    assert PostgresSettings.from_env().dbname == "nachfass"  # the same default as dbt/profiles.yml


@pytest.mark.slow
def test_runs_decide_one_at_a_time_and_a_dead_session_frees_the_lock(pg_env: dict[str, str]) -> None:
    import threading
    import time

    from nachfass.core import decision_lock

    decision_lock.acquire("run-a")
    with pytest.raises(TimeoutError):
        decision_lock.acquire("run-x", poll_s=0.05, timeout_s=0.2)
    second = threading.Thread(target=decision_lock.acquire, args=("run-b",), kwargs={"poll_s": 0.05})
    second.start()
    time.sleep(0.5)
    assert decision_lock.held("run-a") and not decision_lock.held("run-b")
    decision_lock.release("run-a")
    second.join(timeout=10)
    assert decision_lock.held("run-b")
    # a run that dies (its connection closes) releases the lock with it
    with decision_lock._guard:
        conn = decision_lock._held.pop("run-b")
    conn.close()
    decision_lock.acquire("run-c", poll_s=0.05, timeout_s=10)
    assert decision_lock.held("run-c")
    decision_lock.release("run-c")
