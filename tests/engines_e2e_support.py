"""What the end-to-end engine tests share (tests/test_engines_end_to_end*.py): the reference run on DuckDB,
the queries they compare, and a `nachfass run` in a process of its own. PostgreSQL and Spark sit in two
files so that parallel test processes (pytest-xdist, one file each) can run them side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from tests_support import REPO_ROOT

from nachfass.devtools.datagen.generate import generate_exports

SCANNED_SCHEMAS = ("raw", "staging", "intermediate", "segments", "eligibility", "analytics", "mail")

AS_OF = "2026-11-24T10:00:00Z"
DECISIONS = (
    "select campaign, step, trigger_key, customer_id, variant, decision, reason, deferred_until "
    "from eligibility.mail_candidates order by campaign, step, trigger_key"
)
LEDGER = (
    "select send_id, campaign, step, trigger_key, customer_id, email_hash, variant, status, transport, as_of "
    "from mail.sends order by send_id"
)


def run_cli(env: dict[str, str], *extra: str, as_of: str = AS_OF) -> subprocess.CompletedProcess:
    args = ["run", "--as-of", as_of, *extra]
    code = f"from nachfass.cli.main import main; raise SystemExit(main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def outbox_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def engine_env(root: Path, engine: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NACHFASS_", "SENDGRID_"))} | {
        "NACHFASS_LANDING": str(root / "landing"),
        "NACHFASS_ENGINE": engine,
        "NACHFASS_DATA": str(root / engine),
        "NACHFASS_WAREHOUSE": str(root / engine / "warehouse.duckdb"),
        "NACHFASS_OUTBOX": str(root / engine / "outbox"),
    }


def pg_settings(server):
    from nachfass.core.warehouse.settings import PostgresSettings

    return PostgresSettings(host=server.host, port=server.port, user=server.user, dbname="e2e")


def reference_run(root: Path) -> dict:
    """The reference: one `nachfass run` on DuckDB from the exports the other engines get too."""
    generate_exports(root / "landing", customers=400, seed=11, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    run = run_cli(engine_env(root, "duckdb"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with duckdb.connect(str(root / "duckdb" / "warehouse.duckdb"), read_only=True) as duck:
        decisions = duck.execute(DECISIONS).fetchall()
        ledger = duck.execute(LEDGER).fetchall()
    sends = [row for row in decisions if row[5] == "send"]
    assert len(sends) > 20 and len({row[0] for row in sends}) >= 5  # a real run: many mails, many campaigns
    return {
        "root": root,
        "decisions": decisions,
        "ledger": ledger,
        "outbox": outbox_files(root / "duckdb" / "outbox"),
    }
