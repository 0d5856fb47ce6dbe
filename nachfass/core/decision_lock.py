"""On PostgreSQL, jobs may overlap; their decisions may not interleave.

A run's dbt build writes ``eligibility.mail_candidates`` for its as_of and its render step reads them. If
a second run rebuilt the models in between, the first would render the second's decisions. On
PostgreSQL every run therefore holds one advisory lock of the warehouse from the start of its dbt build
until its mails are rendered (or, in a run that renders nothing, until the build ends): decisions are
made one run at a time, while ingest and sending (the long part) overlap freely, kept at most once by the
ledger's unique key. The lock belongs to a session, so a run that dies releases it with its connection.

On DuckDB the one-writer rule already runs everything one after another; these functions do nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from nachfass.core.engine import current_engine

# pg_advisory_lock takes one bigint: "nachfass" in ASCII, the same for every process of this project.
LOCK_KEY = int.from_bytes(b"nachfass", "big") & 0x7FFFFFFFFFFFFFFF

_held: dict[str, object] = {}
_guard = threading.Lock()


def acquire(
    run_id: str,
    *,
    log: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> None:
    """Take the warehouse's decision lock for this run (waiting for another run to finish deciding; with
    ``timeout_s``, at most that long: TimeoutError)."""
    if current_engine() != "postgres":
        return
    with _guard:
        if run_id in _held:
            return
    from nachfass.core.pgconn import PgConnection

    conn = PgConnection.open()
    waited = False
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not conn.execute("select pg_try_advisory_lock(?)", [LOCK_KEY]).fetchone()[0]:
        if deadline is not None and time.monotonic() > deadline:
            conn.close()
            raise TimeoutError(f"another run held the warehouse's decision lock for more than {timeout_s} s")
        if not waited and log is not None:
            log("another run is deciding on this warehouse; waiting for it to finish rendering")
        waited = True
        time.sleep(poll_s)
    with _guard:
        _held[run_id] = conn


def release(run_id: str) -> None:
    with _guard:
        conn = _held.pop(run_id, None)
    if conn is not None:
        try:
            conn.execute("select pg_advisory_unlock(?)", [LOCK_KEY])
        finally:
            conn.close()


def held(run_id: str) -> bool:
    with _guard:
        return run_id in _held
