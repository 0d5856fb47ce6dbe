"""Event ingest: files from the webhook receiver load once, events deduplicate on sg_event_id across
files and runs (SendGrid retries and reorders), malformed lines are skipped and counted, and events carrying
a send id reconcile `unknown` ledger rows."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_project.events.ingest import load_events
from dagster_project.warehouse import prepare_warehouse


def event(n: int, kind: str = "delivered", send_id: str | None = "s_1", ts: int = 1_795_000_000) -> dict:
    return {
        "sg_event_id": f"ev-{n}",
        "event": kind,
        "email": "Kunde@Example.de",
        "timestamp": ts + n,
        "sg_message_id": "msg123.filter0001.00001.0",
        "send_id": send_id,
        "campaign": "abandoned_cart",
        "step": "1",
        "variant": "b",
    }


def write(landing: Path, name: str, lines: list) -> Path:
    folder = landing / "sendgrid_events"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def conn(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    prepare_warehouse(connection)
    yield connection
    connection.close()


def test_duplicates_across_files_count_once_and_files_load_once(tmp_path: Path, conn) -> None:
    write(tmp_path, "b.ndjson", [event(2), event(1)])  # out of order
    write(tmp_path, "a.ndjson", [event(1), event(3, "open")])  # a retried batch overlapping the other
    write(tmp_path, ".c.ndjson.tmp", [event(9)])  # being written: never read
    report = load_events(conn, tmp_path)
    assert (report.files_loaded, report.events_read, report.events_new, report.duplicates) == (2, 4, 3, 1)
    assert conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0] == 3
    email, message_id = conn.execute(
        "select email, message_id from raw.sendgrid_events where sg_event_id = 'ev-1'"
    ).fetchone()
    assert (email, message_id) == ("kunde@example.de", "msg123")
    again = load_events(conn, tmp_path)
    assert (
        again.files_loaded == 0
        and conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0] == 3
    )


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path, conn) -> None:
    write(tmp_path, "a.ndjson", [event(1), "{not json", {"event": "open"}, event(2)])
    report = load_events(conn, tmp_path)
    assert report.events_new == 2 and report.malformed == 2


def test_unknown_ledger_rows_are_reconciled_from_events(tmp_path: Path, conn) -> None:
    conn.execute(
        "insert into mail.sends (send_id, campaign, step, trigger_key, status, reason, as_of, created_at, "
        "updated_at, attempts) values "
        "('s_1', 'abandoned_cart', '1', 'K-1', 'unknown', 'timeout', '2026-11-24 10:00', now(), now(), 1), "
        "('s_2', 'abandoned_cart', '1', 'K-2', 'unknown', 'timeout', '2026-11-24 10:00', now(), now(), 1)"
    )
    write(tmp_path, "a.ndjson", [event(1, "processed", send_id="s_1")])
    report = load_events(conn, tmp_path)
    assert report.reconciled == 1
    rows = dict(conn.execute("select send_id, status from mail.sends").fetchall())
    assert rows == {"s_1": "sent", "s_2": "unknown"}  # no event for s_2: stays unknown, never resent
    assert (
        conn.execute("select sg_message_id from mail.sends where send_id = 's_1'").fetchone()[0] == "msg123"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(min_value=0, max_value=15), max_size=8), min_size=1, max_size=5))
def test_property_any_batching_and_order_gives_each_event_once(tmp_path_factory, batches) -> None:
    landing = tmp_path_factory.mktemp("landing")
    for number, batch in enumerate(batches):
        write(landing, f"{number:03d}.ndjson", [event(n) for n in batch])
    connection = duckdb.connect()
    prepare_warehouse(connection)
    load_events(connection, landing)
    stored = {row[0] for row in connection.execute("select sg_event_id from raw.sendgrid_events").fetchall()}
    assert stored == {f"ev-{n}" for batch in batches for n in batch}
