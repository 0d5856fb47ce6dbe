"""Event ingest: ``<landing>/sendgrid_events/*.ndjson`` (from the webhook receiver) → ``raw.sendgrid_events``.

SendGrid delivers events at least once and out of order: rows are deduplicated on ``sg_event_id`` across
files and runs, each file is loaded once (path + content hash), and ``unknown`` ledger rows are reconciled
from the send ids the events carry (an event for a send id proves SendGrid accepted that mail).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dagster_project.ingest.loader import ensure_raw_schema, file_hash

EVENTS_FOLDER = "sendgrid_events"


@dataclass
class EventLoadReport:
    files_loaded: int = 0
    events_read: int = 0
    events_new: int = 0
    duplicates: int = 0
    malformed: int = 0
    reconciled: int = 0


def ensure_events_schema(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_raw_schema(conn)
    conn.execute(
        """
        create table if not exists raw.sendgrid_events (
            sg_event_id varchar primary key,
            event varchar not null,
            email varchar,
            occurred_at timestamp,          -- the event's unix `timestamp`, as UTC
            sg_message_id varchar,
            message_id varchar,             -- the X-Message-Id part of sg_message_id
            send_id varchar,                -- our custom_args, echoed back by SendGrid
            campaign varchar,
            step varchar,
            variant varchar,
            url varchar,
            reason varchar,
            status varchar,
            bounce_type varchar,
            is_machine_open boolean,
            useragent varchar,
            raw json,
            _file varchar not null,
            _loaded_at timestamp not null
        )
        """
    )


def event_files(landing_dir: Path) -> list[Path]:
    folder = landing_dir / EVENTS_FOLDER
    if not folder.is_dir():
        return []
    # Files being written are dot-files or *.tmp until renamed: never picked up half-written.
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix == ".ndjson" and not p.name.startswith(".")
    )


def load_events(conn: duckdb.DuckDBPyConnection, landing_dir: Path) -> EventLoadReport:
    ensure_events_schema(conn)
    report = EventLoadReport()
    now = datetime.now(UTC).replace(tzinfo=None)
    for path in event_files(landing_dir):
        digest = file_hash(path)
        if conn.execute(
            "select 1 from raw.loaded_files where path = ? and content_hash = ?", [str(path), digest]
        ).fetchone():
            continue
        conn.execute("begin")
        try:
            conn.execute(
                "create or replace temp table _events as select json as doc from "
                "read_ndjson_objects(?, ignore_errors = true)",
                [str(path)],
            )
            read, valid = conn.execute(
                "select count(*), count(*) filter (where json_valid(doc) and doc->>'sg_event_id' is not null "
                "and doc->>'event' is not null) from _events"
            ).fetchone()
            before = conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0]
            conn.execute(
                """
                insert into raw.sendgrid_events
                select
                    doc->>'sg_event_id',
                    doc->>'event',
                    lower(doc->>'email'),
                    cast(to_timestamp(try_cast(doc->>'timestamp' as double)) at time zone 'UTC' as timestamp),
                    doc->>'sg_message_id',
                    split_part(doc->>'sg_message_id', '.', 1),
                    doc->>'send_id',
                    doc->>'campaign',
                    doc->>'step',
                    doc->>'variant',
                    doc->>'url',
                    doc->>'reason',
                    doc->>'status',
                    doc->>'type',
                    coalesce(try_cast(doc->>'sg_machine_open' as boolean), false),
                    doc->>'useragent',
                    doc,
                    ?, ?
                from _events
                where json_valid(doc) and doc->>'sg_event_id' is not null and doc->>'event' is not null
                qualify row_number() over (partition by doc->>'sg_event_id') = 1
                on conflict do nothing
                """,
                [str(path), now],
            )
            after = conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0]
            conn.execute(
                "insert into raw.loaded_files values (?, ?, ?, ?, ?, ?, ?, ?)",
                [EVENTS_FOLDER, str(path), digest, read, after - before, read - valid, [], now],
            )
            conn.execute("commit")
        except Exception:
            conn.execute("rollback")
            raise
        finally:
            conn.execute("drop table if exists _events")
        report.files_loaded += 1
        report.events_read += int(read)
        report.events_new += int(after - before)
        report.malformed += int(read - valid)
        report.duplicates += int(valid - (after - before))
    report.reconciled = reconcile_unknown(conn)
    return report


def reconcile_unknown(conn: duckdb.DuckDBPyConnection) -> int:
    """`unknown` ledger rows whose send id appears in events were accepted by SendGrid: mark them sent."""
    conn.execute("create schema if not exists mail")
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_schema = 'mail' and table_name = 'sends'"
    ).fetchone()[0]
    if not exists:
        return 0
    rows = conn.execute(
        """
        update mail.sends
        set status = 'sent',
            sg_message_id = coalesce(mail.sends.sg_message_id, ev.message_id),
            reason = 'reconciled: SendGrid reported event ' || ev.event || ' for this send id',
            updated_at = now()
        from (
            select send_id, arg_min(message_id, occurred_at) as message_id,
                arg_min(event, occurred_at) as event
            from raw.sendgrid_events where send_id is not null group by send_id
        ) as ev
        where mail.sends.send_id = ev.send_id and mail.sends.status = 'unknown'
        returning mail.sends.send_id
        """
    ).fetchall()
    return len(rows)
