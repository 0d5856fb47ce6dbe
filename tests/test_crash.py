"""SIGKILL a sending process at random points, rerun, and check at-most-once end to end.

The sandbox server runs in this process; a child process delivers 300 mails into a DuckDB file through the
real SendGrid transport (5-20 ms latency per request). The child is killed five times at random moments and
restarted (each run first calls recover_crashed); a final run completes. Then: no send id reached the server
twice, and every mail the server accepted has a ledger row that says ``sent`` or ``unknown``.
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
from pathlib import Path

import duckdb
import pytest
from sendgrid_fixtures import API_KEY

from dagster_project.sandbox.sendgrid_server import run_sandbox

REPO = Path(__file__).resolve().parent.parent
N_MAILS = 300

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    import duckdb
    from dagster_project.mail import ledger
    from dagster_project.mail.sender import deliver
    from dagster_project.mail.transport import SendGridTransport
    from sendgrid_fixtures import SHOP, mails

    db, url, key, run_id, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    conn = duckdb.connect(db)
    ledger.ensure_ledger(conn)
    transport = SendGridTransport(key, url, shop=SHOP, timeout=5.0, backoff_base=0.01)
    print("ready", flush=True)
    as_of = datetime(2026, 11, 24, 10, tzinfo=UTC)
    report = deliver(conn, iter(mails(n)), transport, run_id=run_id, as_of=as_of, chunk_size=20,
                     concurrency=2)
    print("done", report.sent, report.unknown, report.recovered, report.skipped, flush=True)
    conn.close()
    """
)


def _start(script: Path, db: Path, url: str, run_id: str) -> subprocess.Popen:
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, str(script), str(db), url, API_KEY, run_id, str(N_MAILS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


@pytest.mark.slow
def test_sigkill_never_sends_twice(tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", time.time_ns() % 10_000)))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "ledger.duckdb"
    kills = 0
    with run_sandbox(api_key=API_KEY, latency_ms=5, latency_jitter_ms=15) as sb:
        for attempt in range(5):
            proc = _start(script, db, sb.url, f"run-{attempt}")
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            # A full run takes ~2 s of sending (2 threads, 5-20 ms each); kill somewhere inside it.
            time.sleep(rng.uniform(0.02, 0.35))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += proc.returncode == -signal.SIGKILL
        final = _start(script, db, sb.url, "run-final")
        out, err = final.communicate(timeout=60)
        assert final.returncode == 0, err
        messages = sb.messages()
    assert kills >= 3

    per_id = Counter(m["payload"]["custom_args"]["send_id"] for m in messages)
    assert per_id and max(per_id.values()) == 1, "a mail reached the server twice"

    conn = duckdb.connect(str(db), read_only=True)
    ledger_rows = dict(conn.execute("select send_id, status from mail.sends").fetchall())
    conn.close()
    assert len(ledger_rows) == N_MAILS  # every mail has a row (a killed claim is either committed or absent)
    assert "sending" not in ledger_rows.values()  # the final run recovered every leftover
    for send_id in per_id:
        assert ledger_rows.get(send_id) in ("sent", "unknown"), send_id
    # Rows that say 'sent' really are on the server.
    assert {s for s, st in ledger_rows.items() if st == "sent"} <= set(per_id)
    statuses = Counter(ledger_rows.values())
    print(f"kills={kills} statuses={dict(statuses)} accepted={len(per_id)} final={out.strip()}")
