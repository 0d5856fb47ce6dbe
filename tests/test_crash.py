"""SIGKILL a sending process at 20 random points of a 2,000-mail send, rerun, and check the damage is bounded.

The local SendGrid-compatible server runs in this process; a child process delivers 2,000 mails into a
DuckDB file through the real SendGrid transport (1-8 ms latency per request, concurrency 4). The child is
killed at 20 random points of the send (when the server has accepted a random number of mails); after each
kill the real recovery runs (``ledger.recover``, as the next send run does) and a new child continues; a
final run completes. Then:

* no send id reached the server twice;
* each crash left at most ``2 × concurrency`` rows ``unknown`` (claims are committed in small batches, and
  the send journal releases claimed mails that were never handed to the transport);
* every mail that is not ``unknown`` was sent exactly once and its ledger row says ``sent``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from sendgrid_fixtures import API_KEY

from nachfass.core.mail import ledger
from nachfass.core.mail.journal import boot_id
from nachfass.core.mail.transport import OutboxTransport
from nachfass.devtools.sendgrid_server import run_sandbox

REPO = Path(__file__).resolve().parent.parent
N_MAILS = 2000
CONCURRENCY = 4
KILLS = 20

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    import duckdb
    from nachfass.core.mail import ledger
    from nachfass.core.mail.sender import deliver
    from nachfass.core.mail.transport import SendGridTransport
    from sendgrid_fixtures import SHOP, mails

    db, url, key, run_id, n, concurrency = sys.argv[1:7]
    conn = duckdb.connect(db)
    ledger.ensure_ledger(conn)
    transport = SendGridTransport(key, url, shop=SHOP, timeout=5.0, backoff_base=0.01)
    print("ready", flush=True)
    report = deliver(
        conn,
        iter(mails(int(n))),
        transport,
        run_id=run_id,
        as_of=datetime(2026, 11, 24, 10, tzinfo=UTC),
        concurrency=int(concurrency),
    )
    print("done", report.sent, report.unknown, report.recovered, report.skipped, flush=True)
    conn.close()
    """
)


def _start(script: Path, db: Path, url: str, run_id: str) -> subprocess.Popen:
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, str(script), str(db), url, API_KEY, run_id, str(N_MAILS), str(CONCURRENCY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.skipif(boot_id() is None, reason="the send journal needs the kernel's boot id (Linux)")
def test_sigkill_at_20_points_loses_at_most_2x_concurrency_per_crash(tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", time.time_ns() % 10_000)))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "ledger.duckdb"
    recoveries: list[ledger.Recovery] = []
    completed_early = 0
    with run_sandbox(api_key=API_KEY, latency_ms=1, latency_jitter_ms=7) as sb:
        # 20 random points of the send, as numbers of mails the server has accepted.
        for attempt, point in enumerate(sorted(rng.sample(range(1, N_MAILS), KILLS))):
            proc = _start(script, db, sb.url, f"run-{attempt}")
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            while sb.stats().get("accepted", 0) < point and proc.poll() is None:
                time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.returncode == 0:  # a point near the end: the send completed before the signal landed
                completed_early += 1
                continue
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
            conn = duckdb.connect(str(db))
            recoveries.append(ledger.recover(conn))  # what the next send run does first
            conn.close()
        final = _start(script, db, sb.url, "run-final")
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        messages = sb.messages()

    per_id = Counter(m["payload"]["custom_args"]["send_id"] for m in messages)
    assert max(per_id.values()) == 1, "a mail reached the server twice"

    assert len(recoveries) >= KILLS - 5, f"only {len(recoveries)} of {KILLS} kills landed mid-send"
    for number, recovery in enumerate(recoveries):
        assert recovery.unknown <= 2 * CONCURRENCY, (number, recovery)
    assert sum(r.released for r in recoveries) > 0, "no crash ever left a claimed, undispatched mail"

    conn = duckdb.connect(str(db), read_only=True)
    rows = dict(conn.execute("select send_id, status from mail.sends").fetchall())
    conn.close()
    assert len(rows) == N_MAILS  # every mail has a row
    statuses = Counter(rows.values())
    assert set(statuses) <= {"sent", "unknown"}
    assert statuses["unknown"] == sum(r.unknown for r in recoveries)
    for send_id, status in rows.items():
        if status == "sent":
            assert per_id[send_id] == 1, send_id  # sent exactly once
        else:
            assert per_id[send_id] <= 1, send_id  # unknown: maybe at the server, never twice
    print(
        f"kills={len(recoveries)} (+{completed_early} too late) statuses={dict(statuses)} "
        f"accepted={len(per_id)} "
        f"released={sum(r.released for r in recoveries)} settled={sum(r.settled for r in recoveries)} "
        f"unknown per crash={[r.unknown for r in recoveries]} final={out.strip()}"
    )


OUTBOX_CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    import duckdb
    from nachfass.core.mail import ledger
    from nachfass.core.mail.sender import deliver
    from nachfass.core.mail.transport import OutboxTransport
    from sendgrid_fixtures import SHOP, mails

    db, outbox, run_id, n = sys.argv[1:5]
    conn = duckdb.connect(db)
    ledger.ensure_ledger(conn)
    print("ready", flush=True)
    report = deliver(
        conn,
        iter(mails(int(n))),
        OutboxTransport(outbox, shop=SHOP),
        run_id=run_id,
        as_of=datetime(2026, 11, 24, 10, tzinfo=UTC),
        concurrency=32,  # the send step's default; the outbox uses 2 threads and claims 500 at a time
    )
    print("done", report.sent, report.unknown, flush=True)
    conn.close()
    """
)


@pytest.mark.slow
@pytest.mark.skipif(boot_id() is None, reason="the send journal needs the kernel's boot id (Linux)")
def test_outbox_big_claims_still_lose_at_most_the_mails_being_written(tmp_path):
    """The outbox claims 500 mails per transaction (few fsyncs); a SIGKILL still costs at most the mails
    its two writer threads had started, and every mail the ledger calls sent is complete on disk."""
    import email
    import email.policy
    import json

    rng = random.Random(int(os.environ.get("CRASH_SEED", time.time_ns() % 10_000)))
    script, db, outbox = tmp_path / "child.py", tmp_path / "ledger.duckdb", tmp_path / "outbox"
    script.write_text(OUTBOX_CHILD)
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])

    def start(run_id: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(script), str(db), str(outbox), run_id, str(N_MAILS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": path},
        )

    recoveries = []
    for attempt, point in enumerate(sorted(rng.sample(range(1, N_MAILS), 5))):
        proc = start(f"run-{attempt}")
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        while proc.poll() is None and sum(1 for _ in outbox.glob("*.eml")) < point:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        conn = duckdb.connect(str(db))
        recoveries.append(ledger.recover(conn))
        conn.close()
    final = start("run-final")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err

    for recovery in recoveries:
        assert recovery.unknown <= OutboxTransport.max_concurrency, recoveries  # the mails being written
    conn = duckdb.connect(str(db), read_only=True)
    rows = dict(conn.execute("select send_id, status from mail.sends").fetchall())
    conn.close()
    statuses = Counter(rows.values())
    assert len(rows) == N_MAILS and set(statuses) <= {"sent", "unknown"}, statuses
    assert statuses["unknown"] == sum(r.unknown for r in recoveries)
    assert not list(outbox.glob(".tmp-*"))  # half-written files of the killed runs are gone
    for send_id, status in rows.items():
        if status == "sent":
            payload = json.loads((outbox / f"{send_id}.json").read_text(encoding="utf-8"))
            msg = email.message_from_bytes(
                (outbox / f"{send_id}.eml").read_bytes(), policy=email.policy.default
            )
            assert msg["X-Nachfass-Send-Id"] == payload["custom_args"]["send_id"] == send_id
            assert msg.get_body(("html",)).get_content().strip() == payload["content"][1]["value"].strip()
    print(f"outbox kills: unknown per crash={[r.unknown for r in recoveries]}, final={out.strip()}")


def _claimed(tmp_path: Path, n: int) -> tuple[duckdb.DuckDBPyConnection, list]:
    from sendgrid_fixtures import mails

    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ledger.ensure_ledger(conn)
    batch = list(mails(n))
    ledger.claim_many(
        conn, batch, run_id="crashed", as_of=datetime(2026, 11, 24, 10, tzinfo=UTC), transport_name="sendgrid"
    )
    return conn, batch


@pytest.mark.skipif(boot_id() is None, reason="the send journal needs the kernel's boot id (Linux)")
def test_journal_releases_undispatched_and_records_answers(tmp_path: Path) -> None:
    from nachfass.core.mail.journal import SendJournal, default_journal_dir

    conn, batch = _claimed(tmp_path, 4)
    journal = SendJournal(default_journal_dir(conn), "crashed")
    journal.dispatched(batch[0].send_id)
    journal.outcome(batch[0].send_id, "sent", "msg-0", None, 1)
    journal.dispatched(batch[1].send_id)  # in flight when the process died
    journal.close(remove=False)  # batch[2] and batch[3] were claimed, never handed to the transport
    recovery = ledger.recover(conn)
    assert (recovery.released, recovery.settled, recovery.unknown) == (2, 1, 1)
    rows = dict(conn.execute("select send_id, status from mail.sends").fetchall())
    assert rows == {batch[0].send_id: "sent", batch[1].send_id: "unknown"}
    assert list(default_journal_dir(conn).iterdir()) == []


def test_journal_of_another_boot_proves_nothing(tmp_path: Path) -> None:
    from nachfass.core.mail.journal import default_journal_dir, journal_path

    conn, batch = _claimed(tmp_path, 3)
    folder = default_journal_dir(conn)
    folder.mkdir()
    # The machine crashed (a new boot id): lines may be lost, so a missing dispatch line proves nothing.
    journal_path(folder, "crashed").write_text('{"run_id": "crashed", "boot_id": "another-boot"}\n')
    assert ledger.recover(conn).unknown == 3
