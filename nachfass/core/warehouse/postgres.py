"""PostgreSQL as the warehouse of the Python steps: connection, DDL, and the ingest path (``push_tables``).

DDL: every table of ``nachfass.core.schema`` (``ALL_TABLES``), rendered from the same definitions as the
DuckDB DDL, so both engines always have the same columns. ``prepare_warehouse`` is idempotent and safe
when several processes call it at once (one advisory lock serialises the DDL).

Ingest, the decision: DuckDB stays the parser and validator of the shop exports. It reads CSV and Parquet
in-process, applies the export contract and quarantines rows with reasons (``nachfass.core.ingest``); the
webhook's event files are validated by ``nachfass.core.events``. With the postgres engine that work runs
into a local DuckDB *staging* file, exactly as on the DuckDB engine, and ``push_tables`` then copies what
the staging file holds and PostgreSQL does not yet hold:

* the unit is a loaded file, ``raw.loaded_files`` (path, content_hash). A file already marked loaded in
  PostgreSQL is never copied again, whatever the staging file says (a lost or rebuilt staging file, a
  second machine, a push repeated after a failure);
* of each new file: its rows of ``raw.<table>`` (``_file``, ``_loaded_at``), its rows of
  ``raw.quarantine`` (``source_file``, ``quarantined_at``) or, for event files, of
  ``raw.sendgrid_events`` (inserted with ``on conflict do nothing``: an event id stays unique) and
  ``raw.event_quarantine``; the loader stamps a file's rows and its ``loaded_files`` row with one time,
  which is how the rows of *this* load of a path are told from an earlier version of the same path;
* ``raw.rejected_files`` rows and whole-file ``raw.event_quarantine`` rows that PostgreSQL lacks.

All of it in ONE PostgreSQL transaction, under a transaction-level advisory lock, so two pushes at once
cannot copy a file twice and a failed push leaves nothing behind. The bulk rows travel with COPY (DuckDB
writes CSV to a temporary folder, psycopg2 streams it); the few bookkeeping rows with plain inserts.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import psycopg2.extras
from psycopg2 import sql

from nachfass.core.schema import (
    ALL_TABLES,
    ERASURE_SALT,
    EVENT_QUARANTINE,
    LOADED_FILES,
    QUARANTINE,
    RAW_TABLES,
    REJECTED_FILES,
    SENDGRID_EVENTS,
    SENDS,
    TableDef,
    new_salt,
)
from nachfass.core.warehouse.settings import PostgresSettings

ENGINE = "postgres"
# Advisory lock keys (two int4 keys: a namespace and a purpose).
LOCK_NAMESPACE = 0x6E616368  # 'nach'
DDL_LOCK = 1
PUSH_LOCK = 2
EVENTS_TABLE = "sendgrid_events"  # raw.loaded_files.table_name of event files (nachfass.core.events)


class WarehouseError(RuntimeError):
    """PostgreSQL cannot be used as configured; the message names the server but never the password."""


def connect(
    settings: PostgresSettings | None = None, *, dsn: str | None = None
) -> psycopg2.extensions.connection:
    """An autocommit connection (the functions here and in ``pg_ledger`` run their own transactions).

    From ``settings`` (default: the libpq variables, ``PostgresSettings.from_env``) or a libpq ``dsn``.
    """
    if dsn is not None:
        conn = psycopg2.connect(dsn)
    else:
        settings = settings or PostgresSettings.from_env()
        try:
            conn = psycopg2.connect(**settings.connect_kwargs())
        except psycopg2.OperationalError as exc:
            reason = (str(exc).strip().splitlines() or ["connection failed"])[0]
            if settings.password:
                reason = reason.replace(settings.password, "***")
            raise WarehouseError(f"cannot connect to PostgreSQL at {settings.describe()}: {reason}") from None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("set timezone = 'UTC'")  # naive timestamps are UTC, as on DuckDB
    return conn


@contextlib.contextmanager
def transaction(conn: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    """One transaction: committed when the block ends, rolled back on any exception.

    psycopg2 ≥ 2.9 opens a transaction for ``with conn`` on autocommit connections too.
    """
    with conn, conn.cursor() as cur:
        yield cur


def column_names(table: TableDef) -> list[str]:
    return list(dict.fromkeys(c.name for c in table.all_columns))


def _ident_list(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _qualified(table: TableDef) -> sql.Composed:
    return sql.Identifier(table.schema, table.name)


def ddl_statements() -> list[str]:
    """Every statement ``prepare_warehouse`` runs (schemas, tables, later columns, indexes)."""
    statements = [f"create schema if not exists {s}" for s in dict.fromkeys(t.schema for t in ALL_TABLES)]
    for table in ALL_TABLES:
        statements.append(table.create_sql(ENGINE))
        statements.extend(table.add_column_sql(ENGINE))
    # The ledger's recovery looks for rows left in 'sending': few, so a partial index keeps it cheap.
    statements.append(
        f"create index if not exists sends_sending on {SENDS.qualified} (run_id) where status = 'sending'"
    )
    statements.append("create index if not exists sendgrid_events_send_id on raw.sendgrid_events (send_id)")
    return statements


def prepare_warehouse(conn: psycopg2.extensions.connection) -> None:
    """Create every table of ``nachfass.core.schema`` if missing (idempotent; safe from several processes:
    concurrent ``create table if not exists`` can collide in the catalog, so an advisory lock serialises)."""
    with transaction(conn) as cur:
        cur.execute("select pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, DDL_LOCK])
        for statement in ddl_statements():
            cur.execute(statement)
        cur.execute(f"select count(*) from {ERASURE_SALT.qualified}")
        if not cur.fetchone()[0]:
            cur.execute(f"insert into {ERASURE_SALT.qualified} (salt) values (%s)", [new_salt()])


@dataclass
class PushReport:
    files: int = 0  # loaded files new to PostgreSQL (their rows were copied)
    files_already_there: int = 0  # loaded in the staging file and already in PostgreSQL: skipped
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written to PostgreSQL

    def add(self, table: str, n: int) -> None:
        if n:
            self.rows[table] = self.rows.get(table, 0) + n


def _duck_has(duck: duckdb.DuckDBPyConnection, table: TableDef) -> bool:
    return bool(
        duck.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [table.schema, table.name],
        ).fetchone()[0]
    )


def _copy_select(
    duck: duckdb.DuckDBPyConnection,
    cur: psycopg2.extensions.cursor,
    select_sql: str,
    target: sql.Composable,
    columns: list[str],
    folder: Path,
) -> int:
    """Stream the result of a DuckDB query into a PostgreSQL table with COPY (CSV; NULL = unquoted empty,
    an empty string is written quoted, so the two stay apart). Returns the rows copied."""
    path = folder / "push.csv"
    duck.execute(f"copy ({select_sql}) to '{path}' (format csv, header false)")
    with path.open("rb") as handle:
        cur.copy_expert(
            sql.SQL("copy {} ({}) from stdin with (format csv)").format(target, _ident_list(columns)),
            handle,
        )
    copied = cur.rowcount
    path.unlink()
    return max(copied, 0)


def _duck_columns(table: TableDef, prefix: str) -> str:
    return ", ".join(f'{prefix}."{c}"' for c in column_names(table))


def push_tables(
    duck_conn: duckdb.DuckDBPyConnection,
    pg_conn: psycopg2.extensions.connection,
    *,
    tables: Iterable[str] | None = None,
) -> PushReport:
    """Copy what the DuckDB staging warehouse loaded and PostgreSQL lacks (see the module docstring).

    ``tables``: the ``raw.loaded_files.table_name`` values to push (contract tables and/or
    ``sendgrid_events``); default all. Idempotent: a second push of the same staging file copies nothing.
    """
    report = PushReport()
    if not _duck_has(duck_conn, LOADED_FILES):
        return report
    wanted = set(tables) if tables is not None else {*RAW_TABLES, EVENTS_TABLE}
    unknown = wanted - {*RAW_TABLES, EVENTS_TABLE}
    if unknown:
        raise ValueError(f"push_tables: unknown table(s) {sorted(unknown)}")
    staged = duck_conn.execute(
        "select table_name, path, content_hash, rows_read, rows_loaded, rows_quarantined, unknown_columns, "
        "loaded_at from raw.loaded_files"
    ).fetchall()
    staged = [row for row in staged if row[0] in wanted]
    with transaction(pg_conn) as cur, tempfile.TemporaryDirectory(prefix="nachfass-push-") as tmp:
        folder = Path(tmp)
        cur.execute("select pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, PUSH_LOCK])
        cur.execute("select path, content_hash from raw.loaded_files")
        in_pg = {(p, h) for p, h in cur.fetchall()}
        new = [row for row in staged if (row[1], row[2]) not in in_pg]
        report.files = len(new)
        report.files_already_there = len(staged) - len(new)
        if new:
            _push_files(duck_conn, cur, new, folder, report)
        _push_rejected(duck_conn, cur, wanted, report)
        _push_unreadable_event_files(duck_conn, cur, wanted, report)
    return report


def _push_files(
    duck: duckdb.DuckDBPyConnection,
    cur: psycopg2.extensions.cursor,
    new: list[tuple],
    folder: Path,
    report: PushReport,
) -> None:
    files = [(table, path, loaded_at) for table, path, _h, _r, _l, _q, _u, loaded_at in new]
    duck.execute(
        "create or replace temp table _push_files (table_name varchar, path varchar, loaded_at timestamp)"
    )
    try:
        duck.executemany("insert into _push_files values (?, ?, ?)", [list(f) for f in files])
        for name in sorted({f[0] for f in files} & set(RAW_TABLES)):
            table = RAW_TABLES[name]
            n = _copy_select(
                duck,
                cur,
                f"select {_duck_columns(table, 't')} from raw.{name} t join _push_files f "
                f"on f.table_name = '{name}' and t._file = f.path and t._loaded_at = f.loaded_at",
                _qualified(table),
                column_names(table),
                folder,
            )
            report.add(table.qualified, n)
        if _duck_has(duck, QUARANTINE):
            n = _copy_select(
                duck,
                cur,
                f"select {_duck_columns(QUARANTINE, 'q')} from raw.quarantine q join _push_files f "
                "on q.table_name = f.table_name and q.source_file = f.path "
                "and q.quarantined_at = f.loaded_at",
                _qualified(QUARANTINE),
                column_names(QUARANTINE),
                folder,
            )
            report.add(QUARANTINE.qualified, n)
        if any(f[0] == EVENTS_TABLE for f in files) and _duck_has(duck, SENDGRID_EVENTS):
            # Into a copy of the table first: an event id PostgreSQL already has is skipped, not an error.
            cur.execute("create temp table _push_events (like raw.sendgrid_events) on commit drop")
            _copy_select(
                duck,
                cur,
                f"select {_duck_columns(SENDGRID_EVENTS, 'e')} from raw.sendgrid_events e join _push_files f "
                f"on f.table_name = '{EVENTS_TABLE}' and e._file = f.path and e._loaded_at = f.loaded_at",
                sql.Identifier("_push_events"),
                column_names(SENDGRID_EVENTS),
                folder,
            )
            cols = _ident_list(column_names(SENDGRID_EVENTS))
            cur.execute(
                sql.SQL(
                    "insert into raw.sendgrid_events ({cols}) select {cols} from _push_events "
                    "order by sg_event_id on conflict do nothing"
                ).format(cols=cols)
            )
            report.add(SENDGRID_EVENTS.qualified, cur.rowcount)
            n = _copy_select(
                duck,
                cur,
                f"select {_duck_columns(EVENT_QUARANTINE, 'q')} from raw.event_quarantine q "
                "join _push_files f "
                f"on f.table_name = '{EVENTS_TABLE}' and q.source_file = f.path "
                "and q.quarantined_at = f.loaded_at and q.line_number is not null",
                _qualified(EVENT_QUARANTINE),
                column_names(EVENT_QUARANTINE),
                folder,
            )
            report.add(EVENT_QUARANTINE.qualified, n)
    finally:
        duck.execute("drop table if exists _push_files")
    psycopg2.extras.execute_values(
        cur,
        sql.SQL("insert into raw.loaded_files ({}) values %s on conflict do nothing")
        .format(_ident_list(column_names(LOADED_FILES)))
        .as_string(cur),
        [tuple(row[:6]) + (list(row[6] or []), row[7]) for row in new],
        page_size=len(new),  # one statement: rowcount counts every row
    )
    report.add(LOADED_FILES.qualified, cur.rowcount)


def _push_rejected(
    duck: duckdb.DuckDBPyConnection, cur: psycopg2.extensions.cursor, wanted: set[str], report: PushReport
) -> None:
    if not _duck_has(duck, REJECTED_FILES):
        return
    rows = [
        row
        for row in duck.execute(
            "select table_name, path, content_hash, message, rejected_at from raw.rejected_files"
        ).fetchall()
        if row[0] in wanted
    ]
    if not rows:
        return
    cur.execute("create temp table _push_rejected (like raw.rejected_files) on commit drop")
    psycopg2.extras.execute_values(cur, "insert into _push_rejected values %s", rows)
    cur.execute(
        """
        insert into raw.rejected_files
        select distinct n.* from _push_rejected n
        where not exists (
            select 1 from raw.rejected_files r
            where r.table_name = n.table_name and r.path = n.path
              and r.content_hash is not distinct from n.content_hash and r.rejected_at = n.rejected_at
        )
        """
    )
    report.add(REJECTED_FILES.qualified, cur.rowcount)


def _push_unreadable_event_files(
    duck: duckdb.DuckDBPyConnection, cur: psycopg2.extensions.cursor, wanted: set[str], report: PushReport
) -> None:
    # Whole-file rows (line NULL): one per file and reason, however often a load retried it (as in events.py).
    if EVENTS_TABLE not in wanted or not _duck_has(duck, EVENT_QUARANTINE):
        return
    rows = duck.execute(
        "select source_file, line_number, sg_event_id, email, reason, raw_line, quarantined_at "
        "from raw.event_quarantine where line_number is null"
    ).fetchall()
    if not rows:
        return
    cur.execute("create temp table _push_event_files (like raw.event_quarantine) on commit drop")
    psycopg2.extras.execute_values(cur, "insert into _push_event_files values %s", rows)
    cur.execute(
        """
        insert into raw.event_quarantine
        select distinct on (source_file, reason) * from _push_event_files n
        where not exists (
            select 1 from raw.event_quarantine q
            where q.source_file = n.source_file and q.line_number is null and q.reason = n.reason
        )
        order by source_file, reason, quarantined_at
        """
    )
    report.add(EVENT_QUARANTINE.qualified, cur.rowcount)


def stage_and_push(
    pg_conn: psycopg2.extensions.connection,
    staging: Path | str,
    landing_dir: Path,
    *,
    shop_tz: str = "Europe/Berlin",
    as_of: datetime | None = None,
    events: bool = True,
) -> tuple[list[Any], Any, PushReport]:
    """The whole ingest on the postgres engine: load the landing folder into the DuckDB staging file
    (exports, and the event files when ``events``), then :func:`push_tables`, then reconcile ``unknown``
    ledger rows with the events PostgreSQL now has (``pg_ledger.reconcile_unknown``).

    Returns (the loader's file reports, the event load report or None, the push report).
    """
    from nachfass.core.events import load_events
    from nachfass.core.ingest import load_landing
    from nachfass.core.schema import prepare_warehouse as prepare_duckdb

    duck = duckdb.connect(str(staging))
    try:
        prepare_duckdb(duck)
        reports = load_landing(duck, landing_dir, shop_tz=shop_tz, as_of=as_of)
        event_report = load_events(duck, landing_dir) if events else None
        prepare_warehouse(pg_conn)
        pushed = push_tables(duck, pg_conn)
        if events:
            from nachfass.core.warehouse.pg_ledger import reconcile_unknown

            event_report.reconciled = reconcile_unknown(pg_conn)
    finally:
        duck.close()
    return reports, event_report, pushed
