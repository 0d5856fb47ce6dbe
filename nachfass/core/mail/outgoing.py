"""The queue between rendering and sending: ``mail.outgoing`` holds the mails rendered by each run.

Rendering the whole batch into this table before the send step starts is what makes "a broken template
sends nothing" hold: the send step only runs after the render step succeeded for every mail. Each run
reads and removes only its own rows, so runs that overlap on PostgreSQL never take each other's queue;
rows a crashed run left behind are removed by the first run one logical day later.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from nachfass.core.mail.message import RenderedMail
from nachfass.core.schema import OUTGOING
from nachfass.core.schema import ensure_outgoing as ensure_outgoing  # re-exported; DDL in core.schema

# A run's queue older than this (in logical time) was left by a run that crashed before its send step.
STALE_AFTER = timedelta(days=1)
# Appended to a run's id while its mails are being rendered (replace_outgoing).
STAGING_SUFFIX = "#rendering"

# The mail's own columns of the queue, in table order (core/schema.py OUTGOING); run_id and rendered_at are
# stamped per run.
COLUMNS = tuple(c.name for c in OUTGOING.columns if c.name not in ("run_id", "rendered_at"))


def _table(chunk: list[RenderedMail], run_id: str, rendered_at: datetime) -> pa.Table:
    """One chunk as an Arrow table: DuckDB inserts it in one scan (``executemany`` binds row by row, which
    cost as much as rendering the mails)."""
    string = pa.string()
    columns = {
        name: pa.array([getattr(m, name) for m in chunk], string)
        for name in COLUMNS
        if name not in ("headers", "categories", "is_marketing")
    }
    columns["headers"] = pa.array([json.dumps(m.headers) for m in chunk], string)
    columns["categories"] = pa.array([list(m.categories) for m in chunk], pa.list_(string))
    columns["is_marketing"] = pa.array([m.is_marketing for m in chunk], pa.bool_())
    columns["run_id"] = pa.array([run_id] * len(chunk), string)
    columns["rendered_at"] = pa.array([rendered_at.replace(tzinfo=None)] * len(chunk), pa.timestamp("us"))
    return pa.table({name: columns[name] for name in (*COLUMNS, "run_id", "rendered_at")})


def _select(column: str) -> str:
    return "cast(headers as json)" if column == "headers" else column


def staging_run_id(run_id: str) -> str:
    """The run id a run's mails are queued under while it still renders: the send step reads only the
    run's own id, so it never sees a half-rendered queue."""
    return f"{run_id}{STAGING_SUFFIX}"


def replace_outgoing(
    conn: duckdb.DuckDBPyConnection,
    chunks: Iterable[list[RenderedMail]],
    *,
    run_id: str,
    rendered_at: datetime,
) -> dict[str, int]:
    """Queue this run's rendered mails; all or nothing: if rendering any chunk fails, the queue is left
    without this run's mails, so the send step has nothing half-rendered to send. Returns mails per
    campaign/step.

    Each chunk is committed on its own under the run's staging id (``staging_run_id``), and one short
    transaction at the end gives the rows the run's id. Queueing the whole batch in one transaction held
    every mail of it in memory until the commit (DuckDB keeps a transaction's new rows in memory until a
    row group of 122,880 rows is full): at 1M customers 145 k mails, 7 GiB of RSS under a 3 GiB limit.
    A mail an earlier run still has queued (runs overlap on PostgreSQL) is left with that run while this
    one renders and moves to this run in the final transaction, as before; on a failure it stays there.

    ``chunks`` is usually lazy (each chunk is rendered when it is taken): a chunk is written by a second
    thread while the next one renders, so the database's write (which releases the GIL) overlaps the
    rendering. One write at a time, and the connection is used by one thread at a time: the next chunk's
    write starts only after the previous one finished."""
    per_step: dict[str, int] = {}
    staging = staging_run_id(run_id)
    stale_before = rendered_at.replace(tzinfo=None) - STALE_AFTER
    held: list[RenderedMail] = []  # mails another run has queued: moved to this run at the end
    try:
        conn.execute(
            "delete from mail.outgoing where run_id = ? or run_id = ? or rendered_at < ?",
            [run_id, staging, stale_before],
        )
        # leaving the block waits for a write still running, so nothing is deleted under it
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outgoing-writer") as writer:
            pending: Future | None = None
            for chunk in chunks:
                if pending is not None:
                    held += pending.result()  # a failed write stops the rendering here
                if chunk:
                    pending = writer.submit(_stage_chunk, conn, chunk, staging, rendered_at)
                for m in chunk:
                    per_step[f"{m.campaign}/{m.step}"] = per_step.get(f"{m.campaign}/{m.step}", 0) + 1
            if pending is not None:
                held += pending.result()
        conn.execute("begin")
        conn.execute("update mail.outgoing set run_id = ? where run_id = ?", [run_id, staging])
        for start in range(0, len(held), 1000):
            _insert_chunk(conn, held[start : start + 1000], run_id, rendered_at)
        conn.execute("commit")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("rollback")  # only if the final transaction was open
        conn.execute("delete from mail.outgoing where run_id = ? or run_id = ?", [run_id, staging])
        raise
    return per_step


def _stage_chunk(conn, chunk: list[RenderedMail], staging: str, rendered_at: datetime) -> list[RenderedMail]:
    """Queue a chunk under the staging id (one commit); returns the mails another run has queued."""
    _insert_chunk(conn, chunk, staging, rendered_at, on_conflict="do nothing")
    placeholders = ", ".join("?" * len(chunk))
    queued = {
        row[0]
        for row in conn.execute(
            f"select send_id from mail.outgoing where run_id = ? and send_id in ({placeholders})",
            [staging, *(m.send_id for m in chunk)],
        ).fetchall()
    }
    return [m for m in chunk if m.send_id not in queued]


def _insert_chunk(
    conn,
    chunk: list[RenderedMail],
    run_id: str,
    rendered_at: datetime,
    on_conflict: str = "do update",
) -> None:
    table = _table(chunk, run_id, rendered_at)
    conn.register("outgoing_chunk", table)
    try:
        conn.execute(
            f"insert into mail.outgoing ({', '.join(table.column_names)}) "
            # headers travel as JSON text; the cast states the column's type for every engine
            f"select {', '.join(_select(c) for c in table.column_names)} from outgoing_chunk "
            + (
                # a mail still queued by an earlier run that overlaps this one (PostgreSQL) moves
                # to this run; whichever run claims it first in the ledger sends it, once
                "on conflict (send_id) do update set "
                + ", ".join(f"{c} = excluded.{c}" for c in table.column_names if c != "send_id")
                if on_conflict == "do update"
                else "on conflict (send_id) do nothing"
            )
        )
    except BaseException:
        # the failed statement aborted the transaction: unregistering now would raise instead and hide
        # the real error; the caller rolls back, and the next chunk's register replaces the view
        with contextlib.suppress(Exception):
            conn.unregister("outgoing_chunk")
        raise
    conn.unregister("outgoing_chunk")


def clear_outgoing(conn: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Remove a run's queue once its send step has handed every mail on (the ledger has the outcome)."""
    conn.execute("delete from mail.outgoing where run_id = ?", [run_id])


def count_outgoing(conn: duckdb.DuckDBPyConnection, run_id: str) -> int:
    return int(conn.execute("select count(*) from mail.outgoing where run_id = ?", [run_id]).fetchone()[0])


def read_outgoing(
    conn: duckdb.DuckDBPyConnection, run_id: str, *, batch_size: int = 1000
) -> Iterator[RenderedMail]:
    """Stream a run's queued mails in ``send_id`` order (memory stays flat however many there are).

    Only the keys are sorted as a whole, here in Python (code point order, which is UTF-8's byte order,
    so the same as DuckDB's and a "C"-collated PostgreSQL's); the mails themselves are read ``batch_size``
    at a time by key range. Sorting the whole queue with its mail text (~21 KiB a mail) in the database
    needed as much memory as the queue is large: at 1M customers (145 k mails, ~3 GiB) it broke DuckDB's
    memory limit, and even a small sort reserves 256 MiB there."""
    cursor = conn.cursor()
    if isinstance(conn, duckdb.DuckDBPyConnection):
        # a cursor starts in the instance's default database, not in the one `use` chose (the replay
        # runs in an in-memory database attached under the warehouse's name)
        catalog = conn.execute("select current_database()").fetchone()[0]
        cursor.execute(f'use "{catalog}"')
    keys = sorted(
        row[0]
        for row in cursor.execute("select send_id from mail.outgoing where run_id = ?", [run_id]).fetchall()
    )
    select = f"select {', '.join(COLUMNS)} from mail.outgoing where run_id = ? and send_id between ? and ?"
    send_id = COLUMNS.index("send_id")
    for start in range(0, len(keys), batch_size):
        first, last = keys[start], keys[min(start + batch_size, len(keys)) - 1]
        for row in sorted(cursor.execute(select, [run_id, first, last]).fetchall(), key=lambda r: r[send_id]):
            record = dict(zip(COLUMNS, row, strict=True))
            headers = record["headers"]  # JSON text from DuckDB, already decoded by psycopg2
            record["headers"] = (
                (json.loads(headers) if isinstance(headers, str) else dict(headers)) if headers else {}
            )
            record["categories"] = list(record["categories"] or [])
            yield RenderedMail(**record)
