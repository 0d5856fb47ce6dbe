"""Deliver rendered mails through a transport, at most once, concurrently and rate limited.

Mails are claimed in small batches (``mail.sends`` rows in ``sending``, one committed transaction per batch
of about ``concurrency`` mails) just before they are handed to the thread pool, so at most
``2 * concurrency`` mails are claimed and not yet answered at any moment. The invariant "a row is committed
as ``sending`` before its request can leave the process" holds because a mail is only submitted to the pool
after ``claim_many`` returned. Outcomes are written back to the ledger in batches.

The send journal (``journal.py``) records, per mail, the moment it was handed to the transport and the
answer. After a crash the next run releases claimed mails that were never handed over and records the
answers the ledger had not seen, so a SIGKILL turns at most the requests actually in flight (``concurrency``)
into ``unknown``, not the whole batch it had claimed.
A transport may declare ``claim_batch`` and ``max_concurrency`` (the outbox does: 500 and 1, since its
writes are local and CPU-bound); the journal still bounds a crash's loss to the mails being written.

Memory stays flat: mails are pulled lazily from the iterable in chunks of ``chunk_size`` and outcomes are
flushed to the ledger every few hundred mails.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb

from nachfass.core.mail import journal as send_journal
from nachfass.core.mail.message import RenderedMail, SendResult
from nachfass.core.mail.transport import SendAbortError, Transport, TransportResult
from nachfass.core.warehouse import ledger_for


class _Log(Protocol):
    def info(self, msg: str, *args: Any) -> Any: ...


def _failed(future: Future[SendResult]) -> bool:
    return not future.cancelled() and future.exception() is not None


class _Finished:
    """Finished futures, handed to the waiting thread in groups.

    The sending thread waits until enough futures are done to make room for its next claim, or until one
    failed (an abort must stop the run at once), or until ``timeout`` (progress lines). Waking it for every
    finished mail (a queue it blocks on) made it and the workers take the GIL from each other ~5,000
    times a second with the outbox: ~80 µs a mail, a fifth of the send step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: list[Future[SendResult]] = []
        self._wanted = 1
        self._ready = threading.Event()

    def put(self, future: Future[SendResult]) -> None:
        with self._lock:
            self._done.append(future)
            if len(self._done) >= self._wanted or _failed(future):
                self._ready.set()

    def take(self, wanted: int, *, timeout: float) -> list[Future[SendResult]]:
        """At least ``wanted`` finished futures, or fewer after ``timeout`` seconds or a failure."""
        with self._lock:
            enough = len(self._done) >= wanted or any(_failed(f) for f in self._done)
            if not enough:
                self._wanted = wanted
                self._ready.clear()
        if not enough:
            self._ready.wait(timeout)
        with self._lock:
            done, self._done, self._wanted = self._done, [], 1
            self._ready.clear()
        return done


class TokenBucket:
    """Thread-safe token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    A caller that finds no token reserves the next one (the balance goes negative) and sleeps outside the
    lock, so waiting threads queue in arrival order without busy-looping.
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate / 10))
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)


@dataclass
class DeliveryReport:
    transport: str
    run_id: str
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0  # already had a ledger row (sent earlier, holdout, unknown, ...): never sent twice
    released: int = 0  # claimed, certainly not accepted, claim deleted (abort: 401, unreachable, interrupt)
    recovered: int = 0  # rows left in 'sending' by a crashed earlier run, turned into 'unknown'
    recovered_released: int = 0  # ... that the crashed run's journal proves were never sent: claim deleted
    recovered_settled: int = 0  # ... whose answer the crashed run's journal had: outcome recorded
    seconds: float = 0.0
    rate_limit_per_s: float | None = None  # the request rate the sends were held to (None: unthrottled)

    @property
    def processed(self) -> int:
        return self.sent + self.failed + self.unknown

    @property
    def rate(self) -> float:
        """Mails with an outcome per second of wall time."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "released": self.released,
            "recovered": self.recovered,
            "recovered_released": self.recovered_released,
            "recovered_settled": self.recovered_settled,
        }

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for Dagster ``MaterializeResult(metadata=...)``."""
        return {
            "transport": self.transport,
            **self.counts,
            "seconds": round(self.seconds, 2),
            "mails_per_s": round(self.rate, 1),
            "rate_limit_per_s": self.rate_limit_per_s,
        }


def _chunks(items: Iterable[RenderedMail], size: int) -> Iterator[list[RenderedMail]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def deliver(
    conn: duckdb.DuckDBPyConnection,
    mails: Iterable[RenderedMail],
    transport: Transport,
    *,
    run_id: str,
    as_of: datetime | None,
    chunk_size: int = 500,
    concurrency: int = 8,
    claim_batch: int | None = None,
    rate_limit_per_s: float | None = None,
    log: _Log | None = None,
    total: int | None = None,
    progress_every_s: float = 10.0,
    flush_every: int = 200,
    flush_interval_s: float = 0.25,
    recover: bool = True,
    journal_dir: Path | str | None = "auto",
) -> DeliveryReport:
    """Send every mail not yet in the ledger, at most once; return counts by outcome.

    ``chunk_size``: mails read from ``mails`` at a time (memory). ``claim_batch``: mails claimed per
    committed transaction (default ``concurrency``); a new batch is claimed only when at most
    ``2 * concurrency - claim_batch`` claimed mails are unanswered, so never more than
    ``2 * concurrency`` are.
    ``journal_dir``: the send journal's folder (default: next to the warehouse file; None: no journal).
    ``rate_limit_per_s``: the API's request rate; a transport that declares ``rate_limited = False`` (the
    outbox, which writes files) is not held to it.

    Raises ``SendGridAuthError`` / ``SendGridUnavailableError`` (after releasing the claims of mails that were
    certainly not accepted and recording every outcome already known). Any other exception (interrupt,
    DuckDB error) takes the same clean-up path; rows it cannot settle stay ``sending`` and are settled from
    the journal, or become ``unknown``, at the start of the next run.
    """
    if chunk_size < 1 or concurrency < 1:
        raise ValueError("chunk_size and concurrency must be >= 1")
    # A transport may declare what suits it: the outbox composes on the CPU (more threads than cores only
    # contend for the GIL) and writes locally, so it takes big claims (one committed transaction, i.e. one
    # fsync, per claim). Crash loss stays bounded by the journal: only mails a worker has started are
    # "dispatched"; every other claimed mail is released on recovery.
    concurrency = min(concurrency, getattr(transport, "max_concurrency", None) or concurrency)
    preferred_batch = getattr(transport, "claim_batch", None)
    max_inflight = 2 * max(concurrency, preferred_batch or 0)
    batch_size = max(1, min(claim_batch or preferred_batch or concurrency, max_inflight))
    if total is None and hasattr(mails, "__len__"):
        total = len(mails)  # type: ignore[arg-type]
    started = time.monotonic()
    if not getattr(transport, "rate_limited", True):
        rate_limit_per_s = None  # SendGrid's request rate means nothing to a local folder
    report = DeliveryReport(
        transport=transport.name, run_id=run_id, rate_limit_per_s=rate_limit_per_s or None
    )
    ledger = ledger_for(conn)  # DuckDB's, or PostgreSQL's for several writers at once
    ledger.ensure_ledger(conn)
    folder = send_journal.default_journal_dir(conn) if journal_dir == "auto" else journal_dir
    if recover:
        recovery = ledger.recover(conn, folder)
        report.recovered = recovery.unknown
        report.recovered_released = recovery.released
        report.recovered_settled = recovery.settled
        if log is not None and (recovery.unknown or recovery.released or recovery.settled):
            log.info(
                f"rows left in 'sending' by a crashed run: {recovery.released} never sent (released, sent "
                f"now), {recovery.settled} answered (outcome recorded), {recovery.unknown} marked 'unknown' "
                f"(not resent)"
            )
    journal = send_journal.SendJournal(Path(folder), run_id) if folder is not None else None
    limiter = TokenBucket(rate_limit_per_s) if rate_limit_per_s else None

    def work(mail: RenderedMail) -> SendResult:
        if limiter is not None:
            limiter.acquire()
        if journal is None:
            return transport.send(mail)
        journal.dispatched(mail.send_id)  # from here on the request may leave the process
        try:
            result = transport.send(mail)
        except SendAbortError:
            journal.outcome(mail.send_id, "release", None, None, 1)
            raise
        journal.outcome(
            mail.send_id, result.status, result.message_id, result.error, int(getattr(result, "attempts", 1))
        )
        return result

    inflight: dict[Future[SendResult], RenderedMail] = {}
    outcomes: list[tuple[str, SendResult]] = []
    to_release: list[str] = []
    last_progress = started
    last_flush = started

    def flush() -> None:
        nonlocal last_flush
        last_flush = time.monotonic()
        if outcomes:
            ledger.finish_many(conn, outcomes)
            outcomes.clear()

    def progress(final: bool = False) -> None:
        nonlocal last_progress
        now = time.monotonic()
        if log is None or (not final and now - last_progress < progress_every_s):
            return
        last_progress = now
        elapsed = max(now - started, 1e-9)
        done = report.processed + report.skipped
        left = f"{max(total - done, 0):,}" if total is not None else "?"
        log.info(
            f"{transport.name}: {report.sent:,} sent, {report.failed:,} failed, {report.unknown:,} unknown, "
            f"{report.skipped:,} skipped, {left} left, {report.processed / elapsed:,.0f} mails/s"
        )

    def collect(done: Iterable[Future[SendResult]]) -> SendAbortError | None:
        abort: SendAbortError | None = None
        for fut in done:
            mail = inflight.pop(fut)
            try:
                result = fut.result()
            except SendAbortError as exc:
                to_release.append(mail.send_id)  # certainly not accepted: 401/403 or never reached SendGrid
                abort = abort or exc
                continue
            except Exception as exc:  # a transport bug: the request may have left, so never resend
                result = TransportResult(
                    "unknown", error=f"transport error: {type(exc).__name__}", attempts=1
                )
            outcomes.append((mail.send_id, result))
            if result.status == "sent":
                report.sent += 1
            elif result.status == "failed":
                report.failed += 1
            else:
                report.unknown += 1
        # Outcomes still in memory when the process dies are in the journal; without one they become
        # 'unknown': keep that window short either way.
        if len(outcomes) >= flush_every or time.monotonic() - last_flush >= flush_interval_s:
            flush()
        return abort

    # Finished futures arrive here (a done-callback), so waiting costs O(finished), not O(in flight) as
    # concurrent.futures.wait over every pending future would (1,000 of them with the outbox's claims).
    finished = _Finished()

    def wait_for_room(room_for: int) -> None:
        while inflight and len(inflight) + room_for > max_inflight:
            done = finished.take(len(inflight) + room_for - max_inflight, timeout=progress_every_s)
            if (abort := collect(done)) is not None:
                raise abort
            progress()

    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"send-{transport.name}")
    completed = False
    try:
        for chunk in _chunks(mails, chunk_size):
            for start in range(0, len(chunk), batch_size):
                batch = chunk[start : start + batch_size]
                wait_for_room(len(batch))
                claimed = ledger.claim_many(
                    conn, batch, run_id=run_id, as_of=as_of, transport_name=transport.name
                )  # committed: from here on these mails may be sent
                report.skipped += len(batch) - len(claimed)
                for mail in claimed:
                    future = executor.submit(work, mail)
                    inflight[future] = mail  # before the callback can hand it to collect()
                    future.add_done_callback(finished.put)
        wait_for_room(max_inflight)  # i.e. until nothing is in flight
        flush()
        completed = True
    except BaseException:
        # Settle what can be settled: never-dispatched mails are released, finished ones recorded.
        for fut, mail in list(inflight.items()):
            if fut.cancel():
                inflight.pop(fut)
                to_release.append(mail.send_id)
        executor.shutdown(wait=True)
        try:
            collect(list(inflight))
            flush()
            report.released += ledger.release_many(conn, to_release, run_id=run_id)
            unsettled = conn.execute(
                "select count(*) from mail.sends where status = 'sending' and run_id = ?", [run_id]
            ).fetchall()[0][0]
            completed = unsettled == 0  # the journal is needed only while rows stay 'sending'
        except Exception:  # the original error matters more; unsettled rows are settled next run
            pass
        report.seconds = time.monotonic() - started
        if log is not None:
            log.info(
                f"{transport.name}: aborted after {report.processed:,} mails; released "
                f"{report.released:,} claims that were certainly not accepted"
            )
        raise
    finally:
        executor.shutdown(wait=True)
        if journal is not None:
            journal.close(remove=completed)
    report.seconds = time.monotonic() - started
    progress(final=True)
    return report
