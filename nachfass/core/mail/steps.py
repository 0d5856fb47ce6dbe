"""The render and send steps as plain functions over one warehouse connection.

The Dagster assets (mail/assets.py) and the replay (replay.py) run exactly these, so a replayed tick
renders, claims and records mails the way a live run does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import duckdb

from nachfass.core.mail.candidates import CANDIDATE_COLUMNS, job_from_row
from nachfass.core.mail.journal import default_journal_dir
from nachfass.core.mail.ledger import Recovery
from nachfass.core.mail.message import RenderedMail, make_send_id
from nachfass.core.mail.outgoing import (
    clear_outgoing,
    count_outgoing,
    ensure_outgoing,
    read_outgoing,
    replace_outgoing,
)
from nachfass.core.mail.render import BatchRenderer
from nachfass.core.mail.sender import DeliveryReport, deliver
from nachfass.core.mail.transport import Transport
from nachfass.core.warehouse import ledger_for

RENDER_CHUNK = 1000


def fetch_candidates(conn: duckdb.DuckDBPyConnection, where: str, campaigns: list[str]) -> list[dict]:
    """Rows of eligibility.mail_candidates matching ``where`` (SQL), for these campaigns (all if empty)."""
    params: list = []
    if campaigns:
        where += f" and campaign in ({', '.join('?' * len(campaigns))})"
        params = list(campaigns)
    cursor = conn.execute(
        f"select {', '.join(CANDIDATE_COLUMNS)} from eligibility.mail_candidates where {where} "
        "order by campaign, step, trigger_key",
        params,
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def rendered_due_chunks(
    conn: duckdb.DuckDBPyConnection, renderer: BatchRenderer, *, campaigns: list[str]
) -> tuple[list[dict], Iterator[list[RenderedMail]]]:
    """The rows decided `send` for these campaigns, and their mails rendered lazily in chunks of
    RENDER_CHUNK, in send_id order."""
    rows = fetch_candidates(conn, "decision = 'send'", campaigns)
    # Rendered, and so queued, in send_id order: the send step reads the queue back in that order a key
    # range at a time (read_outgoing), and each range is then one stretch of the table instead of rows
    # spread over all of it.
    by_send_id = sorted(rows, key=lambda r: make_send_id(r["campaign"], r["step"], r["trigger_key"]))
    jobs = (
        [job_from_row(row) for row in by_send_id[start : start + RENDER_CHUNK]]
        for start in range(0, len(by_send_id), RENDER_CHUNK)
    )
    # a renderer with worker processes (render_pool.PooledRenderer) renders the next chunks while this
    # process writes one away
    render_chunks = getattr(renderer, "render_chunks", None)
    if render_chunks is not None:
        return rows, render_chunks(jobs, total=len(by_send_id))
    return rows, (renderer.render_batch(chunk) for chunk in jobs)


def render_due_mails(
    conn: duckdb.DuckDBPyConnection,
    renderer: BatchRenderer,
    *,
    run_id: str,
    as_of: datetime,
    campaigns: list[str],
) -> tuple[dict[str, int], list[dict]]:
    """Render every mail decided `send` into mail.outgoing; returns (mails per campaign/step, the rows).

    Rendered in chunks (memory stays flat) inside one transaction; any RenderError rolls the whole batch
    back, so nothing of it reaches the send step."""
    ensure_outgoing(conn)
    rows, chunks = rendered_due_chunks(conn, renderer, campaigns=campaigns)
    per_step = replace_outgoing(conn, chunks, run_id=run_id, rendered_at=as_of)
    return per_step, rows


def render_and_send_due_mails(
    conn: duckdb.DuckDBPyConnection,
    renderer: BatchRenderer,
    transport: Transport,
    *,
    run_id: str,
    as_of: datetime,
    campaigns: list[str],
) -> SendOutcome:
    """The render and send steps in one pass, for a replay's tick: each rendered chunk goes to the send
    step (``send_queued_mails``, the same claims, transport and ledger) while the next chunk renders, with
    no ``mail.outgoing`` queue between them.

    A live run keeps the queue: it makes rendering all or nothing (a template that fails stops the run
    before any mail is sent) and lets a failed send step be retried without rendering again. A replay is
    all or nothing as a whole: a failure ends it, and its warehouse is its own. Writing the queue and
    reading it back cost a 1-day backtest at 100,000 customers ~9 s of CPU on the threads its two sides
    share (docs/benchmarks.md)."""
    rows, chunks = rendered_due_chunks(conn, renderer, campaigns=campaigns)
    return send_queued_mails(
        conn,
        transport,
        run_id=run_id,
        as_of=as_of,
        campaigns=campaigns,
        mails=(mail for chunk in chunks for mail in chunk),
        total=len(rows),
    )


@dataclass
class SendOutcome:
    report: DeliveryReport
    holdouts: int
    recovery: Recovery  # what an earlier crash left in `sending`, settled before this run claims


def send_queued_mails(
    conn: duckdb.DuckDBPyConnection,
    transport: Transport,
    *,
    run_id: str,
    as_of: datetime,
    campaigns: list[str],
    chunk_size: int = 500,
    concurrency: int = 8,
    rate_limit_per_s: float | None = None,
    log=None,
    mails: Iterable[RenderedMail] | None = None,
    total: int | None = None,
) -> SendOutcome:
    """Record the holdouts, then send mail.outgoing through the transport, at most once per trigger.

    ``mails`` (with their number in ``total``): send these instead of the run's queue in mail.outgoing
    (``render_and_send_due_mails``)."""
    ledger = ledger_for(conn)
    ledger.ensure_ledger(conn)
    ensure_outgoing(conn)
    recovery = ledger.recover(conn, default_journal_dir(conn))
    if log is not None and (recovery.released or recovery.settled):
        log.info(
            f"an earlier crash left rows in `sending`: {recovery.released} were never handed to the "
            f"transport (released, sent now), {recovery.settled} had an answer (recorded)"
        )
    if log is not None and recovery.unknown:
        log.warning(
            f"{recovery.unknown} ledger rows were left in `sending` by an earlier crash and are now "
            "`unknown`; they are not resent (events with their send id reconcile them)"
        )
    holdouts = ledger.record_holdouts(
        conn,
        (job_from_row(row) for row in fetch_candidates(conn, "reason = 'holdout'", campaigns)),
        run_id=run_id,
        as_of=as_of,
    )
    if mails is None:
        mails, total = read_outgoing(conn, run_id), count_outgoing(conn, run_id)
    try:
        report = deliver(
            conn,
            mails,
            transport,
            run_id=run_id,
            as_of=as_of,
            chunk_size=chunk_size,
            concurrency=concurrency,
            rate_limit_per_s=rate_limit_per_s,
            log=log,
            total=None if total is None else int(total),
            recover=False,
        )
    finally:
        transport.close()
    clear_outgoing(conn, run_id)
    return SendOutcome(report=report, holdouts=holdouts, recovery=recovery)
