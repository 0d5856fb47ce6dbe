"""The send ledger ``mail.sends`` on PostgreSQL: the functions of ``nachfass.core.mail.ledger`` with the same
signatures and the same semantics (read that module's docstring for the states and transitions), for
several processes writing at once.

At most once, per (campaign, step, trigger_key):

* ``claim_many``: ``insert ... on conflict do nothing returning send_id`` in one short transaction; the
  unique key (campaign, step, trigger_key) and the primary key send_id are the arbiters, so a trigger that
  has a row in any state is never claimed again, and of two processes claiming the same trigger at once
  exactly one gets it (the other waits for the first one's commit and then inserts nothing). A batch is
  inserted in key order, so two overlapping batches wait on each other in one direction only and cannot
  deadlock; a deadlock or serialization error anyway (a caller's odd send ids) retries the whole batch.
* ``finish_many`` / ``release_many`` / recovery: ``update``/``delete ... where status = 'sending'``; the
  rows are locked by the statement and the guard is re-checked after a wait (READ COMMITTED), so a late or
  repeated call, or two processes, can never overwrite an outcome.
* Crashed runs on a shared server: ``recover`` may only settle ``sending`` rows of runs that are dead. A
  process that claims for a run holds a *shared* session-level advisory lock on the run id from before its
  first claim until its connection closes (``end_run`` releases it earlier); PostgreSQL drops the lock when
  the process dies. ``recover`` settles a run's rows only inside a transaction that got the run's lock
  *exclusively* (``pg_try_advisory_xact_lock``): the rows of a run still alive in another process are
  left alone, and a run cannot claim while its rows are being recovered. A connection's own locks do not
  conflict with it, so recovery on the connection that claimed treats that run as crashed (as on DuckDB).

The send journal: a run's journal is a local file (``journal.py``); ``recover`` reads it when given
``journal_dir``. There is no warehouse file to put it next to, so the default (``"auto"``) is no journal:
the sender passes its folder explicitly. Only the journals of the runs recovered here are deleted (other
runs may still be writing theirs).

Connections: psycopg2 connections in autocommit mode (``postgres.connect``); every function commits its
own transaction. Timestamps are stored naive UTC, as on DuckDB.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from nachfass.core.mail import journal as send_journal
from nachfass.core.mail.ledger import (
    _COLUMNS,
    CRASH_REASON,
    Recovery,
    _JournalOutcome,
    _logical,
    _now,
    claim_with,
    holdout_row,
)
from nachfass.core.mail.message import MailJob, RenderedMail, SendResult
from nachfass.core.schema import SENDS
from nachfass.core.warehouse.postgres import LOCK_NAMESPACE, transaction

TABLE = SENDS.qualified
_AUTO = "auto"
_RETRIES = 5
_RETRY_ERRORS = (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)

Connection = psycopg2.extensions.connection


def ensure_ledger(conn: Connection) -> None:
    """Create schema ``mail`` and ``mail.sends`` if missing (idempotent; the whole warehouse:
    ``postgres.prepare_warehouse``)."""
    from nachfass.core.warehouse.postgres import prepare_warehouse

    prepare_warehouse(conn)


def _run_key(run_id: str) -> tuple[int, int]:
    """(namespace, int4) advisory lock key of a run id, and the same as pg_locks shows it (oid, unsigned)."""
    signed = int.from_bytes(hashlib.sha256(run_id.encode("utf-8")).digest()[:4], "big", signed=True)
    return LOCK_NAMESPACE, signed


def _hold_run(cur: psycopg2.extensions.cursor, run_id: str) -> None:
    """Take the run's shared session lock once per connection (re-taking would only stack it)."""
    ns, key = _run_key(run_id)
    cur.execute(
        """
        select pg_advisory_lock_shared(%(ns)s, %(key)s)
        where not exists (
            select 1 from pg_locks
            where locktype = 'advisory' and pid = pg_backend_pid() and mode = 'ShareLock' and granted
              and classid::bigint = %(ns_oid)s and objid::bigint = %(key_oid)s and objsubid = 2
        )
        """,
        {"ns": ns, "key": key, "ns_oid": ns & 0xFFFFFFFF, "key_oid": key & 0xFFFFFFFF},
    )


def end_run(conn: Connection, run_id: str) -> None:
    """Release the run's lock before the connection closes (a long-lived connection serving many runs):
    from then on, ``sending`` rows the run left are taken for a crash's."""
    ns, key = _run_key(run_id)
    with conn.cursor() as cur:
        # pg_advisory_unlock_shared until it returns false: the lock may have been taken more than once.
        for _ in range(1000):
            cur.execute("select pg_advisory_unlock_shared(%s, %s)", [ns, key])
            if not cur.fetchone()[0]:
                break


def _with_retries(conn: Connection, work):
    for attempt in range(_RETRIES):
        try:
            with transaction(conn) as cur:
                return work(cur)
        except _RETRY_ERRORS:
            if attempt == _RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _insert_new(conn: Connection, rows: list[dict]) -> set[str]:
    """Insert rows whose (campaign, step, trigger_key) and send_id are free; return the inserted send ids.

    One transaction: the rows are durable when this returns.
    """
    if not rows:
        return set()
    seen: set[tuple[str, str, str]] = set()
    seen_ids: set[str] = set()
    unique_rows = []
    for row in rows:
        key = (row["campaign"], row["step"], row["trigger_key"])
        if key not in seen and row["send_id"] not in seen_ids:
            seen.add(key)
            seen_ids.add(row["send_id"])
            unique_rows.append(row)
    # One global order for every batch of every process: waits between overlapping batches only point one
    # way, so they cannot form a cycle.
    unique_rows.sort(key=lambda r: (r["campaign"], r["step"], r["trigger_key"]))
    values = [tuple(row[c] for c in _COLUMNS) for row in unique_rows]
    run_ids = sorted({row["run_id"] for row in unique_rows if row["status"] == "sending" and row["run_id"]})
    statement = (
        sql.SQL(
            "insert into {table} ({cols}) values %s "
            # No conflict target: both unique keys (the trigger and the send id) decide, as on DuckDB.
            "on conflict do nothing returning send_id"
        )
        .format(table=sql.Identifier("mail", "sends"), cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
        .as_string(conn)
    )

    def work(cur: psycopg2.extensions.cursor) -> set[str]:
        for run_id in run_ids:
            _hold_run(cur, run_id)
        inserted = psycopg2.extras.execute_values(cur, statement, values, page_size=len(values), fetch=True)
        return {r[0] for r in inserted}

    return _with_retries(conn, work)


def claim_many(
    conn: Connection,
    mails: Sequence[RenderedMail],
    *,
    run_id: str,
    as_of: datetime | None,
    transport_name: str,
) -> list[RenderedMail]:
    """Claim a batch in one committed transaction; return the mails that were free (input order).

    A mail whose (campaign, step, trigger_key) already has a row, in any state, is left out: never twice.
    """
    return claim_with(_insert_new, conn, mails, run_id=run_id, as_of=as_of, transport_name=transport_name)


def claim(
    conn: Connection, mail: RenderedMail, *, run_id: str, as_of: datetime | None, transport_name: str
) -> bool:
    """Commit a ``sending`` row for this mail; False if (campaign, step, trigger_key) already has a row."""
    return bool(claim_many(conn, [mail], run_id=run_id, as_of=as_of, transport_name=transport_name))


def _finish(cur: psycopg2.extensions.cursor, results: Iterable[tuple[str, SendResult]]) -> int:
    now = _now()
    rows = []
    for send_id, result in results:
        if result.status not in ("sent", "failed", "unknown"):
            raise ValueError(f"finish: status must be sent/failed/unknown, got {result.status!r}")
        rows.append(
            (send_id, result.status, result.error, result.message_id, int(getattr(result, "attempts", 1)))
            + (now,)
        )
    if not rows:
        return 0
    # A send id given twice: the first outcome wins (the second finds the row no longer 'sending').
    rows = list({r[0]: r for r in reversed(rows)}.values())[::-1]
    rows.sort(key=lambda r: r[0])  # lock order
    updated = psycopg2.extras.execute_values(
        cur,
        """
        update mail.sends s
        set status = f.status, reason = f.reason, sg_message_id = f.sg_message_id,
            attempts = s.attempts + f.attempts, updated_at = f.updated_at
        from (values %s) as f (send_id, status, reason, sg_message_id, attempts, updated_at)
        where s.send_id = f.send_id and s.status = 'sending'
        returning s.send_id
        """,
        rows,
        template="(%s, %s, %s, %s, %s::integer, %s::timestamp)",
        page_size=len(rows),
        fetch=True,
    )
    return len(updated)


def finish_many(conn: Connection, results: Iterable[tuple[str, SendResult]]) -> int:
    """Record the outcomes of claimed rows in one transaction; returns the number of rows updated.

    Only rows still in ``sending`` are touched, so a late or repeated call cannot overwrite an outcome.
    """
    results = list(results)
    if not results:
        return 0
    return _with_retries(conn, lambda cur: _finish(cur, results))


def finish(conn: Connection, send_id: str, result: SendResult) -> bool:
    """Record the outcome of one claimed row; False if the row was not in ``sending``."""
    return finish_many(conn, [(send_id, result)]) == 1


def _release(cur: psycopg2.extensions.cursor, ids: list[str], run_id: str) -> int:
    cur.execute(
        "delete from mail.sends where status = 'sending' and run_id = %s and send_id = any(%s) "
        "returning send_id",
        [run_id, sorted(ids)],
    )
    return len(cur.fetchall())


def release_many(conn: Connection, send_ids: Iterable[str], *, run_id: str) -> int:
    """Delete ``sending`` rows of this run whose request certainly never reached SendGrid (see the DuckDB
    ledger). Rows of other runs or in other states are never touched."""
    ids = list(dict.fromkeys(send_ids))
    if not ids:
        return 0
    return _with_retries(conn, lambda cur: _release(cur, ids, run_id))


def record_holdouts(conn: Connection, jobs: Iterable[MailJob], *, run_id: str, as_of: datetime | None) -> int:
    """Record A/B holdout members (not mailed, but counted for the experiment); returns rows inserted."""
    logical = _logical(as_of)
    return len(_insert_new(conn, [holdout_row(job, run_id, logical) for job in jobs]))


def record_holdout(conn: Connection, job: MailJob, run_id: str, as_of: datetime | None) -> bool:
    """Record one holdout member; False if (campaign, step, trigger_key) already has a row."""
    return record_holdouts(conn, [job], run_id=run_id, as_of=as_of) == 1


def _settle_run(
    cur: psycopg2.extensions.cursor, run_id: str | None, folder: Path | None, result: Recovery
) -> bool:
    """Settle one run's ``sending`` rows, if the run is dead; in the caller's transaction. False: alive."""
    if run_id is not None:
        ns, key = _run_key(run_id)
        cur.execute("select pg_try_advisory_xact_lock(%s, %s)", [ns, key])
        if not cur.fetchone()[0]:
            return False
        if folder is not None:
            path = send_journal.journal_path(folder, run_id)
            if path.exists():
                record = send_journal.read_journal(path)
                if record.trusted and record.run_id == run_id:
                    cur.execute(
                        "select send_id from mail.sends where status = 'sending' and run_id = %s for update",
                        [run_id],
                    )
                    sending = {r[0] for r in cur.fetchall()}
                    outcomes = [
                        (sid, _JournalOutcome(o["s"], o.get("m"), o.get("e"), int(o.get("a") or 1)))
                        for sid, o in record.outcomes.items()
                        if sid in sending and o.get("s") in ("sent", "failed", "unknown")
                    ]
                    result.settled += _finish(cur, outcomes)
                    release = {sid for sid, o in record.outcomes.items() if o.get("s") == "release"}
                    if not record.damaged:
                        release |= sending - record.dispatched
                    ids = sorted(release & sending)
                    if ids:
                        result.released += _release(cur, ids, run_id)
    cur.execute(
        "update mail.sends set status = 'unknown', reason = %s, updated_at = %s "
        "where status = 'sending' and run_id is not distinct from %s returning send_id",
        [CRASH_REASON, _now(), run_id],
    )
    result.unknown += len(cur.fetchall())
    return True


def recover(conn: Connection, journal_dir: Path | str | None = _AUTO) -> Recovery:
    """Settle the rows crashed runs left in ``sending``; call at the start of every send run, before
    claiming anything. Runs alive in other processes are left alone (module docstring).

    ``journal_dir``: where the send journals are; ``"auto"`` and None: no journal on PostgreSQL (there is
    no warehouse file to keep them next to), so every leftover row becomes ``unknown``.
    """
    folder = None if journal_dir in (_AUTO, None) else Path(journal_dir)
    if folder is not None and not folder.is_dir():
        folder = None
    result = Recovery()
    with conn.cursor() as cur:
        cur.execute("select distinct run_id from mail.sends where status = 'sending'")
        runs = [r[0] for r in cur.fetchall()]
    settled_runs = []
    for run_id in sorted(runs, key=lambda r: (r is None, r or "")):

        def work(cur: psycopg2.extensions.cursor, run_id: str | None = run_id) -> Recovery | None:
            part = Recovery()  # counted afresh on a retry
            return part if _settle_run(cur, run_id, folder, part) else None

        part = _with_retries(conn, work)
        if part is not None:
            settled_runs.append(run_id)
            result.released += part.released
            result.settled += part.settled
            result.unknown += part.unknown
    if folder is not None:
        for run_id in settled_runs:
            if run_id is not None:
                send_journal.journal_path(folder, run_id).unlink(missing_ok=True)
    return result


def recover_crashed(conn: Connection, journal_dir: Path | str | None = _AUTO) -> int:
    """:func:`recover`, returning only how many rows became ``unknown``."""
    return recover(conn, journal_dir).unknown


def status_counts(conn: Connection, run_id: str | None = None) -> dict[str, int]:
    """Rows per status, for one run or overall (for run metadata and tests)."""
    with conn.cursor() as cur:
        if run_id is None:
            cur.execute("select status, count(*) from mail.sends group by status")
        else:
            cur.execute("select status, count(*) from mail.sends where run_id = %s group by status", [run_id])
        return {status: int(n) for status, n in cur.fetchall()}


def reconcile_unknown(conn: Connection) -> int:
    """``unknown`` rows whose send id appears in ``raw.sendgrid_events`` were accepted by SendGrid: mark
    them sent (``nachfass.core.events.reconcile_unknown`` on PostgreSQL; run it after a push of events).
    The earliest event of a send id names the message id and the event, as on DuckDB."""

    def work(cur: psycopg2.extensions.cursor) -> int:
        cur.execute(
            """
            update mail.sends s
            set status = 'sent',
                sg_message_id = coalesce(s.sg_message_id, ev.message_id),
                reason = 'reconciled: SendGrid reported event ' || ev.event || ' for this send id',
                updated_at = %s
            from (
                select distinct on (send_id) send_id, message_id, event
                from raw.sendgrid_events where send_id is not null
                order by send_id, occurred_at nulls last, sg_event_id
            ) as ev
            where s.send_id = ev.send_id and s.status = 'unknown'
            returning s.send_id
            """,
            [_now()],
        )
        return len(cur.fetchall())

    return _with_retries(conn, work)
