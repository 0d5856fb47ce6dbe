"""mail.outgoing, the queue between rendering and sending: what goes in comes out unchanged, and a failed
render leaves nothing half-queued."""

from __future__ import annotations

import dataclasses
import random
import string
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from sendgrid_fixtures import make_mail

from nachfass.core.mail.outgoing import count_outgoing, ensure_outgoing, read_outgoing, replace_outgoing

AS_OF = datetime(2026, 11, 24, 10, tzinfo=UTC)


def _mails() -> list:
    return [
        make_mail(0),
        make_mail(1, to_name=None, headers={}, categories=[], experiment_id="exp-1", variant="b"),
        make_mail(
            2, campaign="order_thanks", step="immediate", is_marketing=False, subject="Danke – „Ihre“ 🌱"
        ),
        *(make_mail(i, html="<p>" + "ä" * 30_000 + "</p>") for i in range(3, 2503)),
    ]


def test_queued_mails_come_back_exactly_and_in_send_id_order(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_outgoing(conn)
    mails = _mails()
    chunks = [mails[start : start + 1000] for start in range(0, len(mails), 1000)]
    per_step = replace_outgoing(conn, chunks, run_id="run-1", rendered_at=AS_OF)
    assert per_step == {"abandoned_cart/reminder_1": len(mails) - 1, "order_thanks/immediate": 1}
    back = list(read_outgoing(conn, "run-1", batch_size=300))
    # The preheader is part of the HTML already and is not stored separately.
    assert back == sorted((dataclasses.replace(m, preheader="") for m in mails), key=lambda m: m.send_id)
    assert conn.execute("select distinct run_id, rendered_at from mail.outgoing").fetchall() == [
        ("run-1", AS_OF.replace(tzinfo=None))
    ]
    # The next run's queue is its own (runs may overlap on PostgreSQL); rendering again replaces it.
    replace_outgoing(conn, [mails[:3]], run_id="run-2", rendered_at=AS_OF)
    replace_outgoing(conn, [mails[:2]], run_id="run-2", rendered_at=AS_OF)
    assert [m.send_id for m in read_outgoing(conn, "run-2")] == sorted(m.send_id for m in mails[:2])
    # a mail both runs queued belongs to the later one (either may send it; the ledger sends it once)
    assert len(list(read_outgoing(conn, "run-1"))) == len(mails) - 3
    # A queue a crashed run left a logical day ago is removed by the next render.
    replace_outgoing(conn, [mails[:1]], run_id="run-3", rendered_at=AS_OF + timedelta(days=1, seconds=1))
    assert conn.execute("select distinct run_id from mail.outgoing").fetchall() == [("run-3",)]


def test_a_render_error_in_a_later_chunk_leaves_the_queue_empty(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_outgoing(conn)
    replace_outgoing(conn, [_mails()[:5]], run_id="before", rendered_at=AS_OF)

    def chunks():
        yield _mails()[:1000]
        raise RuntimeError("template broke in chunk 2")

    with pytest.raises(RuntimeError, match="chunk 2"):
        replace_outgoing(conn, chunks(), run_id="run-1", rendered_at=AS_OF)
    assert conn.execute("select run_id, count(*) from mail.outgoing group by run_id").fetchall() == [
        ("before", 5)
    ]


def test_a_failed_write_stops_the_rendering_and_leaves_the_queue_empty(tmp_path):
    """A chunk is written while the next one renders: a write that fails stops the rendering at the next
    chunk, not after the whole batch, and nothing of the run stays queued."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_outgoing(conn)
    rendered = []

    def chunks():
        mails = _mails()
        for n, start in enumerate(range(0, 50, 10)):
            chunk = mails[start : start + 10]
            if n == 1:
                chunk[3] = dataclasses.replace(chunk[3], send_id=None)  # violates the queue's primary key
            rendered.append(n)
            yield chunk

    with pytest.raises(duckdb.ConstraintException):
        replace_outgoing(conn, chunks(), run_id="run-1", rendered_at=AS_OF)
    assert rendered == [0, 1, 2]  # chunk 2 rendered while chunk 1's write failed; chunks 3 and 4 never
    assert conn.execute("select count(*) from mail.outgoing").fetchone()[0] == 0


def test_a_run_s_queue_appears_only_once_every_chunk_is_rendered(tmp_path):
    """Chunks are committed one by one (one transaction for the whole batch held every mail in memory),
    under a staging id: until the last chunk is written, the send step's read finds none of the run's
    mails, and a mail another run has queued stays with that run until the end, then moves."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_outgoing(conn)
    mails = _mails()[:30]
    replace_outgoing(conn, [mails[:2]], run_id="before", rendered_at=AS_OF)
    reader = conn.cursor()
    seen = []

    def chunks():
        for start in range(0, 30, 10):
            seen.append((count_outgoing(reader, "run-1"), count_outgoing(reader, "before")))
            yield mails[start : start + 10]

    per_step = replace_outgoing(conn, chunks(), run_id="run-1", rendered_at=AS_OF)
    assert seen == [(0, 2), (0, 2), (0, 2)]
    assert sum(per_step.values()) == count_outgoing(conn, "run-1") == 30
    assert count_outgoing(conn, "before") == 0
    assert conn.execute("select distinct run_id from mail.outgoing").fetchall() == [("run-1",)]


@pytest.mark.slow
def test_a_queue_larger_than_the_memory_limit_is_read_back_in_order(tmp_path):
    """At 1M customers the queue held ~3 GiB of mail text, and sorting it whole broke DuckDB's memory
    limit in the send step. The queue is read a key range at a time, so its size is not bounded by the
    limit: here ~480 MB of mails under a 300 MB limit."""
    rng = random.Random(14)
    blob = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(1_000_000))
    mails = [make_mail(i, html=blob[(i * 7919) % 900_000 :][:40_000]) for i in range(12_000)]
    path = tmp_path / "w.duckdb"
    conn = duckdb.connect(str(path))
    ensure_outgoing(conn)
    replace_outgoing(
        conn, [mails[i : i + 1000] for i in range(0, len(mails), 1000)], run_id="r", rendered_at=AS_OF
    )
    conn.close()
    conn = duckdb.connect(str(path))
    conn.execute("set memory_limit = '300MB'")
    seen = [(m.send_id, len(m.html)) for m in read_outgoing(conn, "r")]
    assert [s for s, _ in seen] == sorted(m.send_id for m in mails)
    assert sum(n for _, n in seen) == sum(len(m.html) for m in mails) > 450_000_000
