"""Replay a period into a fresh warehouse: the ticks t1 < t2 < … run in order, each deciding, rendering and
recording mail exactly as a live run at that moment would have, into the outbox (a replay never sends).

How a tick stays cheap: the exports and events are loaded and dbt builds everything once (a real
`dbt build` at the first tick, tests included). dbt then compiles the models once with the as_of bound to
the DuckDB variable `nachfass_as_of` (`--vars '{as_of_source: variable}'`, macro as_of()); each tick sets
the variable and re-creates only the models that mail_candidates needs and that depend on the time, from
that compiled SQL, in dependency order. Incremental staging tables hold all data already and do not depend
on the time. The render and send steps are the same functions the Dagster assets run (mail/steps.py).

Which campaigns a tick sends follows their cadence in the live schedule (jobs.py): a campaign is included
when its schedule fired in (previous tick, tick], so hourly ticks send the daily campaigns only at the tick
after 09:00, while daily ticks send everything.

Every decision of every tick lands in `replay.decisions` (as_of, campaign, step, trigger key, decision,
reason), so the per-day summary, and any other question, is SQL.
"""

from __future__ import annotations

import functools
import graphlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nachfass.core import duckdb_config, paths
from nachfass.core.cadence import last_fire, slot_partitions
from nachfass.core.campaigns import campaigns_by_cron, load_campaigns
from nachfass.core.dbt import DBT_EXECUTABLE, dbt_vars_arg
from nachfass.core.events import load_events
from nachfass.core.ingest import load_landing
from nachfass.core.links import signer_from_env
from nachfass.core.mail.render import MailRenderer, RenderError
from nachfass.core.mail.runs import begin_mail_run, latest_mail_run
from nachfass.core.mail.steps import render_due_mails, send_queued_mails
from nachfass.core.mail.transport import OutboxTransport
from nachfass.core.schema import prepare_warehouse
from nachfass.core.shop import load_shop_settings

AS_OF_VARIABLE = "nachfass_as_of"
MAIL_CANDIDATES_MODEL = "model.nachfass.mail_candidates"
_EVERY = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$")


class ReplayError(RuntimeError):
    """The replay cannot start or go on (not a fresh warehouse, bad period, dbt failed …)."""


def parse_every(text: str) -> timedelta:
    """'15m', '1h', '1d' → timedelta (at least one minute)."""
    match = _EVERY.match(text)
    if not match or int(match.group(1)) < 1:
        raise ReplayError(f"--every must look like 15m, 1h or 1d, got {text!r}")
    number, unit = int(match.group(1)), match.group(2)
    return {
        "m": timedelta(minutes=number),
        "min": timedelta(minutes=number),
        "h": timedelta(hours=number),
    }.get(unit, timedelta(days=number))


def tick_times(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """start, start + every, … up to and including end (UTC)."""
    if end < start:
        raise ReplayError(f"--to {end.isoformat()} is before --from {start.isoformat()}")
    ticks, moment = [], start
    while moment <= end:
        ticks.append(moment)
        moment += every
    return ticks


def campaigns_due(previous: datetime, tick: datetime, *, segments: Path | None = None) -> list[str]:
    """The campaigns whose live schedule fired in (previous, tick]: what a live system sent by then."""
    due: list[str] = []
    for cron, campaigns in campaigns_by_cron(load_campaigns(segments, check_templates=False)).items():
        if last_fire(_slots(cron), tick) > previous:
            due += campaigns
    return due


@functools.cache
def _slots(cron: str):
    return slot_partitions(cron, "%Y-%m-%d-%H:%M")


@dataclass(frozen=True)
class TickModel:
    unique_id: str
    relation: str
    materialized: str
    sql: str


def _tick_models(manifest: dict) -> list[TickModel]:
    """The models mail_candidates needs that depend on as_of (directly or through another such model), in
    dependency order, with their compiled SQL."""
    nodes = {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    if MAIL_CANDIDATES_MODEL not in nodes:
        raise ReplayError("the dbt manifest has no mail_candidates model")
    needed: set[str] = set()
    stack = [MAIL_CANDIDATES_MODEL]
    while stack:
        uid = stack.pop()
        if uid in needed or uid not in nodes:
            continue
        needed.add(uid)
        stack += nodes[uid]["depends_on"]["nodes"]
    order = graphlib.TopologicalSorter(
        {uid: [d for d in nodes[uid]["depends_on"]["nodes"] if d in needed] for uid in needed}
    ).static_order()
    marker = f"getvariable('{AS_OF_VARIABLE}')"
    kept: list[TickModel] = []
    kept_ids: set[str] = set()
    for uid in order:
        node = nodes[uid]
        sql = node.get("compiled_code") or ""
        if marker not in sql and not kept_ids & set(node["depends_on"]["nodes"]):
            continue
        materialized = node["config"]["materialized"]
        if materialized not in ("table", "view"):
            raise ReplayError(
                f"{node['name']} ({materialized}) depends on as_of: only tables and views can be replayed"
            )
        kept.append(TickModel(uid, node["relation_name"], materialized, sql))
        kept_ids.add(uid)
    return kept


def _dbt(args: list[str], *, target_path: Path, env_warehouse: Path, project: Path | None = None) -> None:
    project = project or paths.dbt_project_dir()
    # a changed copy of the rules without its own profiles.yml uses the project's
    profiles = project if (project / "profiles.yml").is_file() else paths.dbt_project_dir()
    env = {
        **os.environ,
        paths.ENV_WAREHOUSE: str(env_warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # always a DuckDB file of its own, whatever engine the live warehouse runs on
        "NACHFASS_ENGINE": "duckdb",
    }
    command = [
        DBT_EXECUTABLE,
        *args,
        "--profiles-dir",
        str(profiles),
        "--target-path",
        str(target_path),
    ]
    command += ["--log-path", str(target_path / "logs")]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(line for line in result.stdout.splitlines()[-30:] if line.strip())
        raise ReplayError(f"dbt {args[0]} failed:\n{tail}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class TickReport:
    as_of: datetime
    campaigns: list[str]
    mails: dict[str, int]
    seconds: float


@dataclass
class ReplayReport:
    warehouse: Path
    outbox: Path
    ticks: list[TickReport] = field(default_factory=list)
    seconds: float = 0.0
    daily: list[tuple] = field(default_factory=list)  # (day, campaign, mails, caps, deferrals, expiries)


DAILY_SUMMARY_SQL = """
with decisions as (
    select cast(timezone($tz, timezone('UTC', as_of)) as date) as day, *
    from replay.decisions
),
-- a trigger skipped or deferred again at later ticks of the same day counts once that day; an expiry
-- counts on the day it first showed
caps as (
    select day, campaign, count(distinct step || '/' || trigger_key) as n
    from decisions where reason = 'frequency_cap' group by all
),
deferrals as (
    select day, campaign, count(distinct step || '/' || trigger_key) as n
    from decisions where decision = 'defer' group by all
),
expiries as (
    select day, campaign, count(*) as n
    from (
        select campaign, step, trigger_key, min(day) as day
        from decisions where reason = 'expired' group by all
    )
    group by all
),
mails as (
    select cast(timezone($tz, timezone('UTC', as_of)) as date) as day, campaign, count(*) as n
    from mail.sends where status = 'sent' group by all
),
keys as (
    select day, campaign from mails
    union select day, campaign from caps
    union select day, campaign from deferrals
    union select day, campaign from expiries
)
select
    keys.day, keys.campaign,
    coalesce(mails.n, 0) as mails, coalesce(caps.n, 0) as caps_hit,
    coalesce(deferrals.n, 0) as deferrals, coalesce(expiries.n, 0) as expiries
from keys
left join mails using (day, campaign)
left join caps using (day, campaign)
left join deferrals using (day, campaign)
left join expiries using (day, campaign)
order by keys.day, keys.campaign
"""


def replay(
    *,
    landing: Path,
    warehouse: Path,
    outbox: Path,
    start: datetime,
    end: datetime,
    every: timedelta,
    progress: Callable[[str], None] = print,
    project: Path | None = None,
) -> ReplayReport:
    """Run the ticks from start to end (inclusive) into a fresh warehouse; see the module docstring.
    ``project`` is the dbt project whose rules decide (default: this project's; a backtest passes a
    changed copy)."""
    started = time.monotonic()
    project = Path(project).resolve() if project is not None else paths.dbt_project_dir()
    segments = project / "models" / "segments"
    ticks = tick_times(start, end, every)
    warehouse, outbox = Path(warehouse).resolve(), Path(outbox).resolve()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    work = warehouse.parent / f".{warehouse.name}.replay"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    conn = duckdb_config.connect(warehouse)
    try:
        prepare_warehouse(conn)
        last = latest_mail_run(conn)
        if last is not None:
            raise ReplayError(
                f"{warehouse} already holds mail runs (the last as of {_iso(last[2].replace(tzinfo=UTC))}): "
                "a replay needs a fresh warehouse; give another --warehouse or delete this one"
            )
        progress(f"loading the exports in {landing} …")
        # the exports' arrival is the end of the replayed period: rows stamped later than a day after it
        # are quarantined as "in the future", as a live run at that moment would have
        shop_tz = load_shop_settings().timezone
        reports = load_landing(conn, Path(landing), shop_tz=shop_tz, as_of=ticks[-1])
        events = load_events(conn, Path(landing))
        rows = sum(r.rows_loaded for r in reports)
        progress(f"  {rows:,} rows from {len(reports)} files, {events.events_new:,} SendGrid events")
        conn.execute("create schema if not exists replay")
        conn.execute(
            "create or replace table replay.decisions (as_of timestamp, campaign varchar, step varchar, "
            "trigger_key varchar, customer_id varchar, decision varchar, reason varchar)"
        )
    finally:
        conn.close()

    progress(f"dbt build as of {_iso(ticks[0])} (once), then compiling the tick models …")
    _dbt(
        ["build", *dbt_vars_arg(ticks[0], segments=segments)],
        target_path=work / "build",
        env_warehouse=warehouse,
        project=project,
    )
    _dbt(
        ["compile", *dbt_vars_arg(as_of_source="variable", segments=segments)],
        target_path=work / "compile",
        env_warehouse=warehouse,
        project=project,
    )
    manifest = json.loads((work / "compile" / "manifest.json").read_text(encoding="utf-8"))
    models = _tick_models(manifest)
    names = ", ".join(model.unique_id.split(".")[-1] for model in models)
    progress(f"  {len(models)} models follow the tick's as_of: {names}")

    shop = load_shop_settings()
    renderer = MailRenderer(
        shop,
        signer_from_env(),
        templates_dir=paths.templates_dir(),
        now=ticks[0],
        campaigns=load_campaigns(segments, templates_dir=paths.templates_dir()),
    )
    try:
        renderer.check_templates()
    except RenderError as exc:  # before any tick: nothing decided or recorded yet
        raise ReplayError(f"the templates do not render: {exc}") from exc
    report = ReplayReport(warehouse=warehouse, outbox=outbox)
    conn = duckdb_config.connect(warehouse)
    try:
        previous = ticks[0] - every
        for number, tick in enumerate(ticks, start=1):
            tick_started = time.monotonic()
            conn.execute(f"set variable {AS_OF_VARIABLE} = ?", [tick.astimezone(UTC).replace(tzinfo=None)])
            # one transaction per tick's models: one commit instead of 25, and a tick is all or nothing
            conn.execute("begin transaction")
            for model in models:
                conn.execute(f"create or replace {model.materialized} {model.relation} as {model.sql}")
            conn.execute(
                "insert into replay.decisions select ?, campaign, step, trigger_key, customer_id, "
                "decision, reason from eligibility.mail_candidates",
                [tick.astimezone(UTC).replace(tzinfo=None)],
            )
            conn.execute("commit")
            campaigns = campaigns_due(previous, tick, segments=segments)
            mails: dict[str, int] = {}
            if campaigns:
                run_id = f"replay-{_iso(tick)}"
                begin_mail_run(conn, run_id=run_id, job_name="replay", partition_key=None, as_of=tick)
                tick_renderer = renderer.at(tick)
                render_due_mails(conn, tick_renderer, run_id=run_id, as_of=tick, campaigns=campaigns)
                send_queued_mails(
                    conn,
                    OutboxTransport(outbox, shop=shop, as_of=tick),
                    run_id=run_id,
                    as_of=tick,
                    campaigns=campaigns,
                )
                mails = dict(
                    conn.execute(
                        "select campaign, count(*) from mail.sends where run_id = ? and status = 'sent' "
                        "group by 1 order by 1",
                        [run_id],
                    ).fetchall()
                )
            seconds = time.monotonic() - tick_started
            report.ticks.append(TickReport(tick, campaigns, mails, seconds))
            sent = ", ".join(f"{c} {n}" for c, n in mails.items()) or "no mail"
            progress(f"tick {number}/{len(ticks)} {_iso(tick)}: {sent} ({seconds:.1f} s)")
            previous = tick
        report.daily = conn.execute(DAILY_SUMMARY_SQL, {"tz": shop.timezone}).fetchall()
    finally:
        conn.close()
    report.seconds = time.monotonic() - started
    return report


def format_daily(rows: list[tuple]) -> str:
    header = ("day", "campaign", "mails", "caps hit", "deferrals", "expiries")
    table = [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(lines)
