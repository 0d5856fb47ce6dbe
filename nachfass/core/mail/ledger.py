"""The send ledger ``mail.sends``: a write-ahead record that makes sending at most once.

Every mail gets a row committed in state ``sending`` *before* its request can leave the process; the row is
updated after the answer (``sent`` with SendGrid's ``X-Message-Id``, ``failed`` with the error, ``unknown``
when the answer was lost). The unique key (campaign, step, trigger_key) means a mail that has any row is
never claimed again, whatever its state. A row still in ``sending`` at the start of a run was left by a
crash: ``recover_crashed`` turns it into ``unknown`` (never resent blindly; events carrying its send id
reconcile it later).

State transitions::

    (none) --claim--> sending --finish--> sent | failed | unknown
    (none) --record_holdout--> holdout
    sending --recover_crashed--> unknown          (a crash left it; the API may or may not have it)
    sending --release--> (none)                   (certainly not accepted: 401, never dispatched)
    sending --recover (journal)--> (none) | sent | failed   (a crash left it, but the run's send journal
                                                  proves it never reached the transport, or has its outcome)

Time: ``as_of`` is the logical time of the run that decided and sent the mail (its as_of); every rule
that counts sends (caps, "24 h after step 1", dormancy) reads it as the send time (``stg_sends.sent_at``).
``created_at`` and ``updated_at`` are the wall clock, kept for audit only: no decision reads them, so a
replay or a backfill decides exactly as live runs would have.

All functions take a ``duckdb.DuckDBPyConnection`` in autocommit mode and commit their own transaction.
They are meant to be called from one thread (DuckDB connections are not shared between threads here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from nachfass.core.mail import journal as send_journal
from nachfass.core.mail.message import MailJob, RenderedMail, SendResult

# ensure_ledger is re-exported: the ledger is where callers look for it (its DDL is in core.schema)
from nachfass.core.schema import LEDGER_STATUSES, LEDGER_TRANSPORTS
from nachfass.core.schema import ensure_ledger as ensure_ledger

TABLE = "mail.sends"
STATUSES = LEDGER_STATUSES
TRANSPORTS = LEDGER_TRANSPORTS
CRASH_REASON = "crash: left in sending"


# Column order used by the batch inserts below.
_COLUMNS = [
    "send_id",
    "campaign",
    "step",
    "trigger_key",
    "customer_id",
    "email",
    "email_hash",
    "experiment_id",
    "variant",
    "status",
    "reason",
    "sg_message_id",
    "transport",
    "run_id",
    "as_of",
    "created_at",
    "updated_at",
    "attempts",
]


def email_hash(email: str) -> str:
    """sha256 hex of the trimmed, lower-cased address: the key for erasure and suppression look-ups."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def _utc_naive(ts: datetime) -> datetime:
    # DuckDB ``timestamp`` has no zone: store UTC so that runs in different zones compare correctly.
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def _now() -> datetime:
    """Wall clock for the audit columns only (created_at, updated_at); decisions use as_of."""
    return datetime.now(UTC).replace(tzinfo=None)


def _logical(as_of: datetime | None) -> datetime:
    if as_of is None:
        raise ValueError("the ledger needs the run's logical time (as_of) for every row")
    return _utc_naive(as_of)


def _rows_table(rows: list[dict]) -> pa.Table:
    # Arrow, not pandas: a claim batch is a few dozen rows, and building a DataFrame cost more than the
    # insert itself. Types are inferred from the values; an all-None column is sent as text (NULL).
    columns = {}
    for col in _COLUMNS:
        values = [row[col] for row in rows]
        columns[col] = (
            pa.array(values) if any(v is not None for v in values) else pa.nulls(len(rows), pa.string())
        )
    return pa.table(columns)


def _insert_new(conn: duckdb.DuckDBPyConnection, rows: list[dict]) -> set[str]:
    """Insert rows whose (campaign, step, trigger_key) and send_id are free; return the inserted send ids.

    One transaction: the rows are durable when this returns.
    """
    if not rows:
        return set()
    # Duplicates inside one batch would violate the unique key inside a single INSERT: keep the first.
    seen: set[tuple[str, str, str]] = set()
    seen_ids: set[str] = set()
    unique_rows = []
    for row in rows:
        key = (row["campaign"], row["step"], row["trigger_key"])
        if key not in seen and row["send_id"] not in seen_ids:
            seen.add(key)
            seen_ids.add(row["send_id"])
            unique_rows.append(row)
    cols = ", ".join(_COLUMNS)
    conn.execute("begin transaction")
    try:
        # Fast path, for the small batches the sender claims: send ids are derived from (campaign, step,
        # trigger_key), so a look-up of the ids by the primary key's index finds nearly every taken row;
        # the insert of the rest then needs no scan of the ledger. A trigger key taken under another send
        # id makes the insert fail on the unique key, and the batch takes the general path below.
        ids = [row["send_id"] for row in unique_rows]
        taken = {
            r[0]
            for r in conn.execute(
                f"select send_id from {TABLE} where send_id in ({', '.join('?' * len(ids))})", ids
            ).fetchall()
        }
        free = [row for row in unique_rows if row["send_id"] not in taken]
        if free:
            conn.register("_ledger_batch", _rows_table(free))
            try:
                conn.execute(f"insert into {TABLE} ({cols}) select {cols} from _ledger_batch")
            finally:
                conn.unregister("_ledger_batch")
        conn.execute("commit")
        return {row["send_id"] for row in free}
    except duckdb.ConstraintException:
        conn.execute("rollback")
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("begin transaction")
    try:
        conn.register("_ledger_batch", _rows_table(unique_rows))
        try:
            inserted = conn.execute(
                f"""
                insert into {TABLE} ({cols})
                select {cols} from _ledger_batch b
                -- Two NOT EXISTS rather than one with OR: each becomes a hash anti-join; the OR form is a
                -- nested loop whose cost grows with the ledger (0.9 s per 500-mail claim at 200k rows).
                where not exists (select 1 from {TABLE} s where s.send_id = b.send_id)
                  and not exists (
                    select 1 from {TABLE} s
                    where s.campaign = b.campaign and s.step = b.step and s.trigger_key = b.trigger_key
                )
                returning send_id
                """
            ).fetchall()
        finally:
            conn.unregister("_ledger_batch")
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return {r[0] for r in inserted}


def _claim_row(mail: RenderedMail, run_id: str, as_of: datetime, transport_name: str) -> dict:
    now = _now()
    return {
        "send_id": mail.send_id,
        "campaign": mail.campaign,
        "step": mail.step,
        "trigger_key": mail.trigger_key,
        "customer_id": mail.customer_id,
        "email": mail.to_email,
        "email_hash": email_hash(mail.to_email),
        "experiment_id": mail.experiment_id,
        "variant": mail.variant,
        "status": "sending",
        "reason": None,
        "sg_message_id": None,
        "transport": transport_name,
        "run_id": run_id,
        "as_of": as_of,
        "created_at": now,
        "updated_at": now,
        "attempts": 0,
    }


def claim_many(
    conn: duckdb.DuckDBPyConnection,
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


def claim_with(
    insert_new,
    conn,
    mails: Sequence[RenderedMail],
    *,
    run_id: str,
    as_of: datetime | None,
    transport_name: str,
) -> list[RenderedMail]:
    """``claim_many`` with an engine's ``insert_new(conn, rows) -> inserted send ids`` (both ledgers)."""
    if transport_name not in TRANSPORTS:
        raise ValueError(f"transport_name must be one of {TRANSPORTS}, got {transport_name!r}")
    logical = _logical(as_of)
    inserted = insert_new(conn, [_claim_row(m, run_id, logical, transport_name) for m in mails])
    out: list[RenderedMail] = []
    for mail in mails:
        # A second copy of the same send id inside the batch is not handed out twice.
        if mail.send_id in inserted:
            inserted.discard(mail.send_id)
            out.append(mail)
    return out


def claim(
    conn: duckdb.DuckDBPyConnection,
    mail: RenderedMail,
    *,
    run_id: str,
    as_of: datetime | None,
    transport_name: str,
) -> bool:
    """Commit a ``sending`` row for this mail; False if (campaign, step, trigger_key) already has a row."""
    return bool(claim_many(conn, [mail], run_id=run_id, as_of=as_of, transport_name=transport_name))


def finish_many(conn: duckdb.DuckDBPyConnection, results: Iterable[tuple[str, SendResult]]) -> int:
    """Record the outcomes of claimed rows in one transaction; returns the number of rows updated.

    Only rows still in ``sending`` are touched, so a late or repeated call cannot overwrite an outcome.
    ``attempts`` is taken from the result when the transport reports it (``TransportResult.attempts``).
    """
    now = _now()
    rows = [
        {
            "send_id": send_id,
            "status": result.status,
            "reason": result.error,
            "sg_message_id": result.message_id,
            "attempts": int(getattr(result, "attempts", 1)),
            "updated_at": now,
        }
        for send_id, result in results
    ]
    if not rows:
        return 0
    for row in rows:
        if row["status"] not in ("sent", "failed", "unknown"):
            raise ValueError(f"finish: status must be sent/failed/unknown, got {row['status']!r}")
    frame = pa.table(
        {
            **{col: pa.array([r[col] for r in rows], pa.string()) for col in ("send_id", "status", "reason")},
            "sg_message_id": pa.array([r["sg_message_id"] for r in rows], pa.string()),
            "attempts": pa.array([r["attempts"] for r in rows], pa.int32()),
            "updated_at": pa.array([r["updated_at"] for r in rows], pa.timestamp("us")),
        }
    )
    conn.execute("begin transaction")
    try:
        conn.register("_ledger_finish", frame)
        try:
            updated = conn.execute(
                f"""
                update {TABLE} s
                set status = f.status, reason = f.reason, sg_message_id = f.sg_message_id,
                    attempts = s.attempts + f.attempts, updated_at = f.updated_at
                from _ledger_finish f
                where s.send_id = f.send_id and s.status = 'sending'
                returning s.send_id
                """
            ).fetchall()
        finally:
            conn.unregister("_ledger_finish")
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return len(updated)


def finish(conn: duckdb.DuckDBPyConnection, send_id: str, result: SendResult) -> bool:
    """Record the outcome of one claimed row; False if the row was not in ``sending``."""
    return finish_many(conn, [(send_id, result)]) == 1


def release_many(conn: duckdb.DuckDBPyConnection, send_ids: Iterable[str], *, run_id: str) -> int:
    """Delete ``sending`` rows of this run whose request certainly never reached SendGrid.

    Only for outcomes that prove non-acceptance (401/403, connection refused, never dispatched): the next run
    may then claim the mail again. Rows of other runs or in other states are never touched.
    """
    ids = list(dict.fromkeys(send_ids))
    if not ids:
        return 0
    conn.execute("begin transaction")
    try:
        deleted = conn.execute(
            f"delete from {TABLE} where status = 'sending' and run_id = ? and send_id in "
            f"(select unnest(?::varchar[])) returning send_id",
            [run_id, ids],
        ).fetchall()
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return len(deleted)


def holdout_row(job: MailJob, run_id: str, logical: datetime) -> dict:
    """The ledger row of an A/B holdout member (both engines' ledgers)."""
    now = _now()
    return {
        "send_id": job.send_id,
        "campaign": job.campaign,
        "step": job.step,
        "trigger_key": job.trigger_key,
        "customer_id": job.customer_id,
        "email": job.email,
        "email_hash": email_hash(job.email),
        "experiment_id": job.experiment_id,
        "variant": job.variant,
        "status": "holdout",
        "reason": "holdout",
        "sg_message_id": None,
        "transport": None,
        "run_id": run_id,
        "as_of": logical,
        "created_at": now,
        "updated_at": now,
        "attempts": 0,
    }


def record_holdouts(
    conn: duckdb.DuckDBPyConnection, jobs: Iterable[MailJob], *, run_id: str, as_of: datetime | None
) -> int:
    """Record A/B holdout members (not mailed, but counted for the experiment); returns rows inserted."""
    logical = _logical(as_of)
    rows = [holdout_row(job, run_id, logical) for job in jobs]
    return len(_insert_new(conn, rows))


def record_holdout(
    conn: duckdb.DuckDBPyConnection, job: MailJob, run_id: str, as_of: datetime | None
) -> bool:
    """Record one holdout member; False if (campaign, step, trigger_key) already has a row."""
    return record_holdouts(conn, [job], run_id=run_id, as_of=as_of) == 1


@dataclass
class Recovery:
    """What the start of a send run did with rows a crashed run left in ``sending``."""

    released: int = 0  # never handed to the transport (journal): deleted, the next claim sends them
    settled: int = 0  # the transport had answered (journal): recorded as sent / failed / unknown
    unknown: int = 0  # handed to the transport without a recorded answer, or no trustworthy journal


@dataclass(frozen=True)
class _JournalOutcome:
    status: str
    message_id: str | None
    error: str | None
    attempts: int


_AUTO = "auto"


def recover(conn: duckdb.DuckDBPyConnection, journal_dir: Path | str | None = _AUTO) -> Recovery:
    """Settle the rows crashed runs left in ``sending``; call at the start of every send run, before
    claiming anything (only one process writes the ledger).

    With the crashed run's send journal (see ``journal.py``), rows are released or given their recorded
    outcome; whatever the journal cannot settle becomes ``unknown`` (never resent blindly).
    ``journal_dir``: where the journals are; default next to the warehouse file; None: ignore journals.
    """
    folder = send_journal.default_journal_dir(conn) if journal_dir == _AUTO else journal_dir
    result = Recovery()
    if folder is not None and Path(folder).is_dir():
        runs = [
            r[0]
            for r in conn.execute(
                f"select distinct run_id from {TABLE} where status = 'sending' and run_id is not null"
            ).fetchall()
        ]
        for run_id in runs:
            path = send_journal.journal_path(Path(folder), run_id)
            if not path.exists():
                continue
            record = send_journal.read_journal(path)
            if not record.trusted or record.run_id != run_id:
                continue
            sending = {
                r[0]
                for r in conn.execute(
                    f"select send_id from {TABLE} where status = 'sending' and run_id = ?", [run_id]
                ).fetchall()
            }
            outcomes = [
                (sid, _JournalOutcome(o["s"], o.get("m"), o.get("e"), int(o.get("a") or 1)))
                for sid, o in record.outcomes.items()
                if sid in sending and o.get("s") in ("sent", "failed", "unknown")
            ]
            result.settled += finish_many(conn, outcomes)
            release = {sid for sid, o in record.outcomes.items() if o.get("s") == "release"}
            if not record.damaged:
                release |= sending - record.dispatched
            result.released += release_many(conn, sorted(release & sending), run_id=run_id)
    conn.execute("begin transaction")
    try:
        rows = conn.execute(
            f"update {TABLE} set status = 'unknown', reason = ?, updated_at = ? "
            f"where status = 'sending' returning send_id",
            [CRASH_REASON, _now()],
        ).fetchall()
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    result.unknown = len(rows)
    if folder is not None and Path(folder).is_dir():
        # Nothing is left in 'sending' now: every journal has served its purpose.
        for leftover in Path(folder).glob("*.jsonl"):
            leftover.unlink(missing_ok=True)
    return result


def recover_crashed(conn: duckdb.DuckDBPyConnection, journal_dir: Path | str | None = _AUTO) -> int:
    """:func:`recover`, returning only how many rows became ``unknown``."""
    return recover(conn, journal_dir).unknown


def status_counts(conn: duckdb.DuckDBPyConnection, run_id: str | None = None) -> dict[str, int]:
    """Rows per status, for one run or overall (for run metadata and tests)."""
    if run_id is None:
        result = conn.execute(f"select status, count(*) from {TABLE} group by status").fetchall()
    else:
        result = conn.execute(
            f"select status, count(*) from {TABLE} where run_id = ? group by status", [run_id]
        ).fetchall()
    return {status: int(n) for status, n in result}
