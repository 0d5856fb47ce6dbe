"""Helpers for tests that run dbt against a DuckDB file in tmp_path: a hand-written export set, ledger and
SendGrid event rows, and a `dbt build` subprocess with its own target path (parallel runs never collide)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from nachfass.core.contract import TABLES
from nachfass.core.dbt import dbt_vars
from nachfass.core.ingest import load_landing
from nachfass.core.mail.message import make_send_id
from nachfass.core.paths import DBT_PROJECT_DIR
from nachfass.core.schema import prepare_warehouse

DBT = str(Path(sys.executable).parent / "dbt")
# The audit columns' wall clock in hand-made ledger rows: years away from any scenario's as_of.
WALL_CLOCK_FAR_AWAY = datetime(2031, 1, 1, 12, 0)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_exports(landing: Path, rows: dict[str, list[dict]], name: str = "export.csv") -> None:
    """One CSV per table in the export contract format (header = the contract's columns)."""
    for table, table_rows in rows.items():
        if not table_rows and name != "export.csv":
            continue
        folder = landing / table
        folder.mkdir(parents=True, exist_ok=True)
        columns = [c.name for c in TABLES[table].columns]
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in table_rows:
                writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def prepare_all(conn: duckdb.DuckDBPyConnection) -> None:
    prepare_warehouse(conn)
    try:  # the erasure tables come with the erasure feature; older trees lack the module
        from nachfass.core.schema import ensure_erasure_schema
    except ImportError:
        return
    ensure_erasure_schema(conn)


def load_exports(warehouse: Path, landing: Path) -> None:
    conn = duckdb.connect(str(warehouse))
    try:
        prepare_all(conn)
        reports = load_landing(conn, landing)
        bad = [r for r in reports if r.status == "rejected" or r.rows_quarantined]
        assert not bad, [r.as_dict() for r in bad]
    finally:
        conn.close()


def insert_sends(warehouse: Path, sends: list[dict]) -> None:
    """Ledger rows as the send step writes them: campaign, step, trigger_key, customer_id, email, sent_at,
    status (default 'sent')."""
    conn = duckdb.connect(str(warehouse))
    try:
        for send in sends:
            sent_at = send["sent_at"].astimezone(UTC).replace(tzinfo=None)
            # as_of is the logical send time every rule reads; created_at/updated_at are the wall clock
            # (audit), deliberately far from it so a rule that read them would fail the scenarios.
            conn.execute(
                "insert into mail.sends (send_id, campaign, step, trigger_key, customer_id, email, status, "
                "transport, as_of, created_at, updated_at, attempts) "
                "values (?, ?, ?, ?, ?, ?, ?, 'outbox', ?, ?, ?, 1)",
                [
                    make_send_id(send["campaign"], send["step"], send["trigger_key"]),
                    send["campaign"],
                    send["step"],
                    send["trigger_key"],
                    send["customer_id"],
                    send["email"],
                    send.get("status", "sent"),
                    sent_at,
                    WALL_CLOCK_FAR_AWAY,
                    WALL_CLOCK_FAR_AWAY,
                ],
            )
    finally:
        conn.close()


def insert_events(warehouse: Path, events: list[dict]) -> None:
    """SendGrid webhook events: event, email, occurred_at, optional (campaign, step, trigger_key), reason."""
    conn = duckdb.connect(str(warehouse))
    try:
        for number, event in enumerate(events):
            send_id = (
                make_send_id(event["campaign"], event["step"], event["trigger_key"])
                if "campaign" in event
                else None
            )
            conn.execute(
                "insert into raw.sendgrid_events (sg_event_id, event, email, occurred_at, send_id, reason, "
                "bounce_type, is_machine_open, raw, _file, _loaded_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'test', ?)",
                [
                    f"ev{number}",
                    event["event"],
                    event["email"],
                    event["occurred_at"].astimezone(UTC).replace(tzinfo=None),
                    send_id,
                    event.get("reason"),
                    event.get("bounce_type"),
                    event.get("is_machine_open", False),
                    json.dumps({}),
                    WALL_CLOCK_FAR_AWAY,
                ],
            )
    finally:
        conn.close()


def copy_dbt_project(destination: Path) -> Path:
    shutil.copytree(
        DBT_PROJECT_DIR,
        destination,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml"),
    )
    return destination


def run_dbt(
    command: list[str],
    *,
    warehouse: Path,
    target_path: Path,
    as_of: datetime | None = None,
    project_dir: Path = DBT_PROJECT_DIR,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`env` is laid over the environment, e.g. NACHFASS_ENGINE=postgres and the PG* variables."""
    env = {
        **os.environ,
        "NACHFASS_WAREHOUSE": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **(env or {}),
    }
    # every dbt call gets the registry's campaigns and the shop's timezone (nachfass.core.dbt.dbt_vars);
    # vars given in the command are laid over them
    command = list(command)
    extra: dict = {}
    if "--vars" in command:
        at = command.index("--vars")
        extra = json.loads(command[at + 1])
        del command[at : at + 2]
    as_of = extra.pop("as_of", as_of)  # an as_of in --vars wins, as it would on dbt's command line
    variables = dbt_vars(as_of, segments=Path(project_dir) / "models" / "segments", **extra)
    args = [
        DBT,
        *command,
        "--vars",
        json.dumps(variables),
        "--profiles-dir",
        ".",
        "--target-path",
        str(target_path),
        "--log-path",
        str(target_path / "logs"),
    ]
    result = subprocess.run(args, cwd=project_dir, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"dbt {' '.join(command)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
        )
    return result


def candidates(warehouse: Path) -> dict[tuple[str, str, str], dict]:
    """mail_candidates keyed by (customer_id, campaign, step)."""
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = conn.execute("select * from eligibility.mail_candidates")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()
    return {(r["customer_id"], r["campaign"], r["step"]): r for r in rows}


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def days(n: float) -> timedelta:
    return timedelta(days=n)
