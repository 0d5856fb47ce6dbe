"""Benchmark `int_mail_engagement` (issue 14: no stage grows faster than its input) as the ledger and the
event history grow.

    python bench/bench_engagement.py --sends 10000 40000 160000 1000000 --workdir /tmp/nachfass_engagement

For each size: a DuckDB file with ``--sends`` ledger rows (`staging.stg_sends`) and three SendGrid events
per send (`staging.stg_sendgrid_events`: delivered, open, and a click for every third send; one event in
ten without our send id, matched by SendGrid's message id as older events are). The model's SQL is compiled
once by dbt (``nachfass dbt compile``) and run straight in DuckDB on those tables, against two references
in the same run:

- the floor: the same aggregation over a single equi-join on the send id (every event matched that way);
- the model's earlier form, one join on ``send id = send id or (no send id and message id = message id)``,
  which DuckDB runs as a nested-loop join over events × sends (only up to ``--or-join-up-to`` sends: it
  grows with the square of the size).

Prints the seconds and the ratio to the floor per size, and the growth against the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
MODEL = "model.nachfass.int_mail_engagement"
AS_OF = "2026-11-24T10:00:00Z"

TABLES = """
create schema if not exists staging;
create or replace table staging.stg_sends as
select
    's' || i as send_id, 'cross_sell' as campaign, '1' as step, 'o' || i as trigger_key,
    'c' || (i % 700000) as customer_id, 'c' || (i % 700000) || '@example.com' as email,
    null::varchar as experiment_id, 'control' as variant,
    case when i % 50 = 0 then 'failed' else 'sent' end as send_status,
    'm' || i || '.filter0001' as sg_message_id,
    timestamp '2026-08-01' + (i % 100000) * interval '1 minute' as sent_at
from range($sends) as t(i);
create or replace table staging.stg_sendgrid_events as
select
    'e' || i || '-' || k as sg_event_id,
    case k when 0 then 'delivered' when 1 then 'open' else 'click' end as event_type,
    'c' || (i % 700000) || '@example.com' as email,
    timestamp '2026-08-01' + (i % 100000) * interval '1 minute' + (k + 1) * interval '5 minute'
        as occurred_at,
    -- SendGrid's X-Message-Id, which our ledger keeps as sg_message_id
    'm' || i || '.filter0001' as message_id,
    case when (i + k) % 10 = 0 then null else 's' || i end as send_id,
    case when k = 2 and i % 30 = 0 then 'bounce' end as bounce_type,
    k = 1 and i % 4 = 0 as is_machine_open
from range($sends) as t(i), range(3) as u(k)
where k < 2 or i % 3 = 0;
"""

AGGREGATE = """
select sends.send_id, count(*) as n, min(matched.occurred_at) filter (where matched.event_type = 'open') as o
from staging.stg_sends as sends
left join ({join}) as matched on sends.send_id = matched.matched_send_id
where sends.send_status in ('sent', 'unknown')
group by sends.send_id
"""
FLOOR_JOIN = """select sends.send_id as matched_send_id, events.* from staging.stg_sendgrid_events as events
inner join staging.stg_sends as sends on events.send_id = sends.send_id"""
OR_JOIN = """select sends.send_id as matched_send_id, events.* from staging.stg_sendgrid_events as events
inner join staging.stg_sends as sends on events.send_id = sends.send_id
    or (events.send_id is null and events.message_id = sends.sg_message_id)"""


def compiled_model(workdir: Path) -> str:
    """The model's SQL as dbt compiles it for a warehouse named like the bench's files (its relations
    point at ``staging.*``)."""
    target = workdir / "target"
    env = {**os.environ, "NACHFASS_WAREHOUSE": str(workdir / "engagement.duckdb")}
    result = subprocess.run(
        [sys.executable, "-m", "nachfass.cli.main", "dbt", "compile", "--select", "int_mail_engagement",
         "--target-path", str(target)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"dbt compile failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    sql = json.loads((target / "manifest.json").read_text(encoding="utf-8"))["nodes"][MODEL]["compiled_code"]
    return re.sub(r'"[^"]+"\."(staging)"\."(\w+)"', r"\1.\2", sql)


def timed(conn: duckdb.DuckDBPyConnection, sql: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        conn.execute(f"create or replace temp table result as {sql}")
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, nargs="+", default=[10_000, 40_000, 160_000, 1_000_000])
    parser.add_argument("--or-join-up-to", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads (default 1: steadier)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_engagement"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = compiled_model(args.workdir)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"DuckDB {duckdb.__version__}, {args.threads} thread(s), best of {args.repeat}")  # fmt: skip
    print(f"{'sends':>10} {'events':>10} {'model s':>8} {'floor s':>8} {'/floor':>7} {'or-join s':>10} x")
    first: tuple[int, float] | None = None
    for sends in args.sends:
        path = args.workdir / "engagement.duckdb"
        path.unlink(missing_ok=True)
        conn = duckdb.connect(str(path))
        try:
            conn.execute(f"set threads = {args.threads}")
            conn.execute(TABLES.replace("$sends", str(sends)))
            events = conn.execute("select count(*) from staging.stg_sendgrid_events").fetchone()[0]
            model_s = timed(conn, model, args.repeat)
            rows = conn.execute("select count(*) from result").fetchone()[0]
            assert (
                rows
                == conn.execute(
                    "select count(*) from staging.stg_sends where send_status in ('sent', 'unknown')"
                ).fetchone()[0]
            )
            floor_s = timed(conn, AGGREGATE.format(join=FLOOR_JOIN), args.repeat)
            or_join = "-"
            if sends <= args.or_join_up_to:
                or_s = timed(conn, AGGREGATE.format(join=OR_JOIN), 1)
                or_join = f"{or_s:10.2f} {or_s / model_s:7.0f}x"
        finally:
            conn.close()
        first = first or (sends, model_s)
        print(f"{sends:>10,} {events:>10,} {model_s:8.2f} {floor_s:8.2f} {model_s / floor_s:6.1f}x {or_join}")
    if first and len(args.sends) > 1:
        sends, seconds = args.sends[-1], model_s
        print(
            f"growth: {sends / first[0]:.0f}x the sends took {seconds / first[1]:.1f}x the model's time "
            f"({first[0]:,} → {sends:,})"
        )
    shutil.rmtree(args.workdir / "target", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
