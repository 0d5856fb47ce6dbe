"""The warehouse's logical clock: ``mail.runs`` records every run that rendered or sent mail, with its as_of.

A run that may send decides with the ledger as it stood at its as_of (``stg_sends`` hides rows of a later
as_of). A run *earlier* than one that already sent mail would therefore not see that run's mails: its caps
would let a second mail through within hours, its "24 h after step 1" would be wrong. So such a run is
refused, with a message that says what to do instead: backfill slots in order (oldest first), or replay a
period into a fresh warehouse (``nachfass replay``). Runs with the same as_of (a retried slot) are fine.

Runs that only load exports or events or refresh analytics decide nothing that lasts and are not bound by
this rule: they may run at any logical time (a sensor's run while a backfill catches up, for instance).
Data stamped after a run's as_of is simply not seen by it; it waits for a later as_of.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from nachfass.core.schema import ensure_runs

TABLE = "mail.runs"


class LogicalTimeError(RuntimeError):
    """A run's as_of is earlier than that of a run that already rendered or sent mail on this warehouse."""


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_mail_run(conn: duckdb.DuckDBPyConnection) -> tuple[str, str, datetime] | None:
    """(run_id, job_name, as_of UTC naive) of the mail run with the latest as_of, or None."""
    ensure_runs(conn)
    return conn.execute(
        f"select run_id, job_name, as_of from {TABLE} order by as_of desc, started_at desc limit 1"
    ).fetchone()


def check_as_of(conn: duckdb.DuckDBPyConnection, as_of: datetime, *, run_id: str) -> None:
    """Raise LogicalTimeError if another run with a later as_of already rendered or sent mail here."""
    ensure_runs(conn)
    later = conn.execute(
        f"select run_id, job_name, as_of from {TABLE} where run_id <> ? and as_of > ? "
        "order by as_of desc limit 1",
        [run_id, _utc_naive(as_of)],
    ).fetchone()
    if later:
        other_run, other_job, other_as_of = later
        raise LogicalTimeError(
            f"as_of {_iso(_utc_naive(as_of))} is earlier than that of run {other_run} ({other_job}, as_of "
            f"{_iso(other_as_of)}), which already decided and sent mail on this warehouse. A run never "
            "decides before one that sent mail: it would not see that run's mails (caps, second steps). "
            "Backfill missed slots oldest first, or replay a period into a fresh warehouse "
            "(`nachfass replay --from … --to …`)."
        )


def begin_mail_run(
    conn: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    job_name: str | None,
    partition_key: str | None,
    as_of: datetime,
) -> None:
    """Check the run's as_of against the warehouse's clock and record the run (idempotent per run id)."""
    check_as_of(conn, as_of, run_id=run_id)
    conn.execute(
        f"insert into {TABLE} values (?, ?, ?, ?, ?) on conflict do nothing",
        [run_id, job_name, partition_key, _utc_naive(as_of), datetime.now(UTC).replace(tzinfo=None)],
    )
