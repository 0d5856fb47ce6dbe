"""Replay a period into a fresh warehouse: the ticks t1 < t2 < … run in order, each deciding, rendering and
recording mail exactly as a live run at that moment would have, into the outbox (a replay never sends).

How a tick stays cheap: the exports and events are loaded and dbt builds everything once (a real
`dbt build` at the first tick, tests included). dbt then compiles the models once with the as_of bound to
the DuckDB variable `nachfass_as_of` (`--vars '{as_of_source: variable}'`, macro as_of()); each tick sets
the variable and re-creates only the models that mail_candidates needs and that depend on the time, from
that compiled SQL, in dependency order. Incremental staging tables hold all data already and do not depend
on the time. A model computed once a day (meta ``as_of_grain: day``, int_product_pairs) is re-created at
the first tick of each UTC day only, as the live runs of a day keep it. A model declaring a
``tick_delta_key`` (int_carts, stg_orders, stg_customers, int_orders, int_customer_order_gaps,
int_consent_state) is updated instead, as live builds update it: only the keys whose rows may have changed
since the tick that built its table are computed again (``build_tick_model``). The
render and send steps are the functions the Dagster assets run (mail/steps.py), in one pass without the
``mail.outgoing`` queue between them (``render_and_send_due_mails``). The ticks run on a
copy of the warehouse in memory (``_open_in_memory``), written back at the end. Every tick but the last
decides lean: mail_candidates writes a trigger its first rules settle with only what the decisions record,
and a segment the replay builds again later writes no payload for a trigger that can only be skipped
(``LeanPayloads``); a model's last build is whole, so the warehouse left behind is what live runs leave.

Which campaigns a tick sends follows their cadence in the live schedule (jobs.py): a campaign is included
when its schedule fired in (previous tick, tick], so hourly ticks send the daily campaigns only at the tick
after 09:00, while daily ticks send everything. What a tick re-creates follows the same jobs: each live job
builds only its campaigns' models, so a tick at which only the 15-minute schedule fired builds the models
that job builds (``tick_plan``, ``campaign_selection``; the daily campaigns' segments stay as the last tick
building them left them), compiled once more for that selection at the start; a tick at which every
schedule fired, everything.

Every decision of every tick lands in `replay.decisions` (as_of, campaign, step, trigger key, decision,
reason; a view over spans of ticks, see DECISION_TABLES_SQL), so the per-day summary, and any other
question, is SQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import graphlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

from nachfass.core import duckdb_config, file_lock, paths
from nachfass.core.cadence import last_fire, slot_partitions
from nachfass.core.campaigns import campaigns_by_cron, load_campaigns
from nachfass.core.dbt import DBT_EXECUTABLE, dbt_vars_arg, scratch_dbt_env
from nachfass.core.events import load_events
from nachfass.core.ingest import load_landing
from nachfass.core.links import signer_from_env
from nachfass.core.mail.render import MailRenderer, RenderError
from nachfass.core.mail.render_pool import RenderPool
from nachfass.core.mail.runs import begin_mail_run, latest_mail_run
from nachfass.core.mail.steps import render_and_send_due_mails
from nachfass.core.mail.transport import OutboxTransport
from nachfass.core.schema import prepare_warehouse
from nachfass.core.shop import load_shop_settings

if TYPE_CHECKING:
    from nachfass.core.render_share import SharedRenders
    from nachfass.core.tick_share import SharedTicks

AS_OF_VARIABLE = "nachfass_as_of"
LEAN_CANDIDATES_VARIABLE = "nachfass_lean_candidates"
# true while a model is built that a later tick builds again: segments then leave out the payloads no rule
# can read (macro segment_rows); a model's last build is whole, so the table the replay leaves is too
LEAN_PAYLOADS_VARIABLE = "nachfass_lean_payloads"
# where a replay or backtest reads the live erasures (and a backtest its rates): the warehouse of the engine
# setting (on postgres and spark: the PostgreSQL database)
LIVE_WAREHOUSE = "live"
MAIL_CANDIDATES_MODEL = "model.nachfass.mail_candidates"
T = TypeVar("T")
_EVERY = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$")


class ReplayError(RuntimeError):
    """The replay cannot start or go on (not a fresh warehouse, bad period, dbt failed …)."""


@dataclass(frozen=True)
class Erasures:
    """The live warehouse's DSGVO erasures: its salt and the salted hashes of the erased addresses
    (``mail.erasure_salt``, ``mail.erasures``). A replay carries them into its fresh warehouse, so an
    erased person whom a later export names again stays suppressed there as live (int_suppressions), and
    no simulated mail, decision as "would be sent" or backtest estimate is made for them."""

    salt: str | None = None
    rows: tuple[tuple, ...] = ()


ERASURES_SQL = (
    "select email_hash, erased_at, sendgrid_erasure_requested from mail.erasures order by email_hash"
)


def read_erasures(conn) -> Erasures:
    """The erasures of an open warehouse connection (DuckDB, or the PostgreSQL adapter)."""
    salt = conn.execute("select salt from mail.erasure_salt").fetchone()
    rows = conn.execute(ERASURES_SQL).fetchall()
    return Erasures(salt=salt[0] if salt else None, rows=tuple(tuple(row) for row in rows))


def live_erasures(source: Path | str | None = LIVE_WAREHOUSE) -> Erasures:
    """The erasures of ``source``: ``LIVE_WAREHOUSE`` (the engine setting's warehouse), a DuckDB file, or
    None (none: a replay of exports no live warehouse has seen). A file that does not exist has none; one
    a running job holds is an error, since a replay without them could mail an erased person."""
    if source is None:
        return Erasures()
    if source == LIVE_WAREHOUSE:
        from nachfass.core import engine

        if engine.current_engine() == "postgres":
            import psycopg2.errors

            from nachfass.core.warehouse.postgres import WarehouseError

            try:
                with engine.connect(read_only=True) as conn:
                    try:
                        return read_erasures(conn)
                    except psycopg2.errors.UndefinedTable:  # a warehouse never set up: nobody erased
                        return Erasures()
            except WarehouseError as exc:  # one line naming the server, never the password
                raise ReplayError(f"cannot read the live warehouse's erasures: {exc}") from None
        source = paths.warehouse_path()
    return read_warehouse_file(
        Path(source),
        read_erasures,
        empty=Erasures(),
        what="the erasures of",
        hint=". A replay needs them so that no erased person is mailed",
    )


def read_warehouse_file(
    path: Path, read: Callable[[duckdb.DuckDBPyConnection], T], *, empty: T, what: str, hint: str
) -> T:
    """``read`` on the DuckDB file ``path``, opened read-only; ``empty`` when the file or the tables it reads
    do not exist (a warehouse that never ran). A file a running job holds is a ReplayError: "cannot read
    <what> <path> (…): a running job may hold it …<hint>"."""
    if not path.is_file():
        return empty
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        raise ReplayError(
            f"cannot read {what} {path} ({exc}): a running job may hold it (DuckDB allows one writer); "
            f"retry when it has finished{hint}"
        ) from None
    try:
        return read(conn)
    except duckdb.CatalogException:
        return empty
    finally:
        conn.close()


def carry_erasures(conn: duckdb.DuckDBPyConnection, erasures: Erasures) -> None:
    """Write ``erasures`` into a fresh replay warehouse: the live salt replaces the one prepare_warehouse
    drew (the hashes are salted with it), and the rows are inserted as they are."""
    if erasures.salt is None:
        return
    conn.execute("delete from mail.erasure_salt")
    conn.execute("insert into mail.erasure_salt values (?)", [erasures.salt])
    conn.execute("delete from mail.erasures")
    if erasures.rows:
        conn.executemany("insert into mail.erasures values (?, ?, ?)", list(erasures.rows))


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


def campaigns_due(
    previous: datetime,
    tick: datetime,
    *,
    segments: Path | None = None,
    by_cron: dict[str, list[str]] | None = None,
) -> list[str]:
    """The campaigns whose live schedule fired in (previous, tick]: what a live system sent by then.
    ``by_cron`` (campaigns_by_cron of the registry) saves reading the registry again at every tick."""
    due: list[str] = []
    if by_cron is None:
        by_cron = campaigns_by_cron(load_campaigns(segments, check_templates=False))
    for cron, campaigns in by_cron.items():
        if last_fire(_slots(cron), tick) > previous:
            due += campaigns
    return due


def tick_plans(
    ticks: list[datetime], every: timedelta, *, by_cron: dict[str, list[str]]
) -> list[frozenset[str] | None]:
    """Per tick, what it builds (``tick_plan`` of the schedules fired since the tick before)."""
    previous = [ticks[0] - every, *ticks[:-1]]
    return [
        tick_plan({cron for cron in by_cron if last_fire(_slots(cron), tick) > before}, by_cron)
        for before, tick in zip(previous, ticks, strict=True)
    ]


@functools.cache
def _slots(cron: str):
    return slot_partitions(cron, "%Y-%m-%d-%H:%M")


@dataclass(frozen=True)
class TickModel:
    unique_id: str
    relation: str
    materialized: str
    sql: str
    # "day": the model reads only the start of the as_of's day (meta as_of_grain, e.g. int_product_pairs):
    # re-created at the first tick of each UTC day, kept at the others, as the live runs of a day keep it
    grain: str | None = None
    # How a tick that sends only some campaigns differs, as the live job sending only them builds the model
    # (jobs.candidates_selection_for): per set of campaigns, the SQL compiled for that job's selection (e.g.
    # the recommendations of carts only), or None when the job leaves the model out (its table stays as the
    # last tick building it left it). A set not listed builds the model as ``sql``.
    partial: tuple[tuple[frozenset[str], str | None], ...] = ()
    # The model updated from the table an earlier tick built rather than computed whole (dbt meta
    # ``tick_delta_key``, macro tick_delta): the key column, and the SQL compiled with the var
    # ``tick_delta`` selecting the keys that may have changed since ``nachfass_delta_from`` with their rows
    # (``update_tick_model``). Used for the whole build (``sql``) only, not a partial one.
    delta_key: str | None = None
    delta: str | None = None

    def due(self, moment: datetime, previous: datetime | None) -> bool:
        """Whether a tick at ``moment`` (after the model was last built at ``previous``) re-creates it."""
        if self.grain == "day":
            return previous is None or moment.date() != previous.date()
        return True

    def sql_for(self, plan: frozenset[str] | None) -> str | None:
        """The SQL of a tick sending the campaigns ``plan`` (None: every campaign); None: left out."""
        if plan is not None:
            for campaigns, sql in self.partial:
                if campaigns == plan:
                    return sql
        return self.sql


def last_builds(
    models: list[TickModel], ticks: list[datetime], plans: list[frozenset[str] | None]
) -> dict[str, int]:
    """The number (1-based) of the last tick that builds each model (0: none does; the dbt build before the
    ticks built the first tick's), as the replay's loop decides it (``sql_for``, ``due``); ``ticks`` naive
    UTC."""
    built_at = dict.fromkeys((model.unique_id for model in models), ticks[0])
    last = dict.fromkeys(built_at, 0)
    for number, (moment, plan) in enumerate(zip(ticks, plans, strict=True), start=1):
        for model in models:
            if model.sql_for(plan) is not None and model.due(moment, built_at[model.unique_id]):
                built_at[model.unique_id], last[model.unique_id] = moment, number
    return last


class LeanPayloads:
    """Sets LEAN_PAYLOADS_VARIABLE on a connection before each model it builds: true (with ``lean``) unless
    this is the model's last build (``last_builds``). Executes only when the value changes."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, last: dict[str, int], *, lean: bool) -> None:
        self.conn, self.last, self.lean = conn, last, lean
        self.value: bool | None = None

    def before(self, model: TickModel, number: int) -> None:
        value = self.lean and number < self.last.get(model.unique_id, 0)
        if value != self.value:
            self.conn.execute(f"set variable {LEAN_PAYLOADS_VARIABLE} = ?", [value])
            self.value = value


def create_tick_model(
    conn: duckdb.DuckDBPyConnection, model: TickModel, moment: datetime, sql: str | None = None
) -> None:
    """(Re-)create ``model`` as of ``moment`` (already set as the as_of variable), from ``sql`` when given
    (a tick's variant, ``TickModel.sql_for``); ReplayError naming the model and the tick when it fails, e.g.
    a changed rule's SQL on this tick's data."""
    try:
        conn.execute(f"create or replace {model.materialized} {model.relation} as {sql or model.sql}")
    except duckdb.Error as exc:
        raise _model_failed(model, moment, exc) from exc


def _model_failed(model: TickModel, moment: datetime, exc: Exception) -> ReplayError:
    name = model.unique_id.split(".")[-1]
    tick = _iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))  # naive: UTC (_naive_utc)
    return ReplayError(f"the model {name} failed at the tick {tick}: {exc}")


DELTA_FROM_VARIABLE = "nachfass_delta_from"
# how far back the table a tick updates may have been built; a longer gap computes the model whole (most of
# its rows would change anyway)
MAX_DELTA_GAP = timedelta(days=1)


def build_tick_model(
    conn: duckdb.DuckDBPyConnection,
    model: TickModel,
    moment: datetime,
    sql: str | None,
    held: datetime | None,
) -> bool:
    """Bring ``model``'s table to ``moment`` (the as_of variable is set): updated from the table as built at
    ``held`` (``update_tick_model``) when the model has a delta, the tick builds it whole (``sql`` is its
    ``sql``) and ``held`` is at most ``MAX_DELTA_GAP`` before ``moment``; else re-created from ``sql``
    (``create_tick_model``). Returns whether it was updated. A model computed once a day (``grain``) reads
    the day's start, not the as_of its delta compares against: it is always computed whole."""
    if (
        model.delta is not None
        and model.grain is None
        and model.materialized == "table"
        and held is not None
        and (sql is None or sql == model.sql)
        and timedelta(0) <= moment - held <= MAX_DELTA_GAP
    ):
        update_tick_model(conn, model, moment, held)
        return True
    create_tick_model(conn, model, moment, sql)
    return False


def update_tick_model(
    conn: duckdb.DuckDBPyConnection, model: TickModel, moment: datetime, held: datetime
) -> None:
    """The rows of the keys that may have changed since ``held`` (the delta's ``tick_delta_key``) replaced
    by theirs as of ``moment``: every other row is what the whole model would select, so the table ends as
    ``create_tick_model`` would leave it (tests/test_tick_delta.py compares them tick by tick)."""
    key = f'"{model.delta_key}"'
    try:
        conn.execute(f"set variable {DELTA_FROM_VARIABLE} = ?", [held])
        conn.execute(f"create or replace temporary table nachfass_tick_delta as {model.delta}")
        conn.execute(
            f"delete from {model.relation} where {key} in (select tick_delta_key from nachfass_tick_delta)"
        )
        conn.execute(
            f"insert into {model.relation} by name select * exclude (tick_delta_key) "
            f"from nachfass_tick_delta where {key} is not null"
        )
        conn.execute("drop table nachfass_tick_delta")
        # the table no longer holds what the live build recorded in its comment (macro live_delta): a later
        # live build on this warehouse computes it whole
        conn.execute(f"comment on table {model.relation} is null")
    except duckdb.Error as exc:
        raise _model_failed(model, moment, exc) from exc


def _tick_models(manifest: dict) -> list[TickModel]:
    """The models mail_candidates needs that depend on as_of (directly or through another such model), in
    dependency order, with their compiled SQL."""
    nodes = {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    if MAIL_CANDIDATES_MODEL not in nodes:
        raise ReplayError("the dbt manifest has no mail_candidates model")
    needed = _with_ancestors(nodes, [MAIL_CANDIDATES_MODEL])
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
        grain = (node["config"].get("meta") or {}).get("as_of_grain")
        delta_key = (node["config"].get("meta") or {}).get("tick_delta_key")
        if materialized == "incremental" and (grain == "day" or delta_key):
            # compiled as a full refresh: the whole day's rows, or the whole model a live build updates
            # where a delta fits (macro tick_delta), re-created as a table
            materialized = "table"
        if materialized not in ("table", "view"):
            raise ReplayError(
                f"{node['name']} ({materialized}) depends on as_of: only tables, views and models computed "
                "once a day (meta as_of_grain: day) can be replayed"
            )
        kept.append(TickModel(uid, node["relation_name"], materialized, sql, grain, delta_key=delta_key))
        kept_ids.add(uid)
    return kept


def tick_plan(fired: set[str], by_cron: dict[str, list[str]]) -> frozenset[str] | None:
    """What a tick at which the live schedules of the crons ``fired`` fired builds, as those live jobs
    build it (dagster_project/jobs.py): each job builds only its campaigns' models, so the tick builds those
    of the fired jobs' campaigns together (the set of them, ``campaign_selection``); None (everything) when
    that is every campaign, and at a tick at which nothing fired (between the schedule's runs it still
    records the decisions)."""
    campaigns = frozenset(name for cron in fired for name in by_cron.get(cron, []))
    everyone = frozenset(name for names in by_cron.values() for name in names)
    return None if not campaigns or campaigns == everyone else campaigns


def campaign_selection(manifest: dict, campaigns: frozenset[str], registry: set[str]) -> set[str]:
    """The models a live job sending only ``campaigns`` builds, as dagster_project.jobs
    candidates_selection_for selects them: mail_candidates and everything under it except the segments
    of the registry's other campaigns and the models only those need (dbt meta
    ``nachfass.only_for_campaigns``), unique ids."""
    nodes = {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    others = registry - campaigns
    left_out = set()
    for uid, node in nodes.items():
        needed_by = ((node["config"].get("meta") or {}).get("nachfass") or {}).get("only_for_campaigns")
        if (node["fqn"][1] == "segments" and node["name"] in others) or (
            needed_by and set(needed_by) <= others
        ):
            left_out.add(uid)
    parents = [uid for uid in nodes[MAIL_CANDIDATES_MODEL]["depends_on"]["nodes"] if uid not in left_out]
    # not what only a left-out model reads (the session events under int_carts, for a daily tick)
    return _with_ancestors(nodes, parents, stop=left_out) | {MAIL_CANDIDATES_MODEL}


def _with_ancestors(
    nodes: dict[str, dict], starts: list[str], stop: frozenset[str] | set[str] = frozenset()
) -> set[str]:
    """The models ``starts`` and every model they read, directly or not (ids in ``nodes``), not passing
    through the models ``stop``."""
    found: set[str] = set()
    stack = list(starts)
    while stack:
        uid = stack.pop()
        if uid in found or uid not in nodes or uid in stop:
            continue
        found.add(uid)
        stack += nodes[uid]["depends_on"]["nodes"]
    return found


def with_partials(
    models: list[TickModel], variants: dict[frozenset[str], tuple[set[str], dict]]
) -> list[TickModel]:
    """``models`` with their ``partial`` builds: per set of campaigns, the selection of its job and the
    manifest compiled for that selection (``variants``); only what differs from the whole build is kept."""
    result = []
    for model in models:
        partial = []
        for campaigns, (selection, manifest) in sorted(variants.items(), key=lambda kv: sorted(kv[0])):
            if model.unique_id not in selection:
                partial.append((campaigns, None))
                continue
            sql = manifest["nodes"][model.unique_id].get("compiled_code") or ""
            if sql != model.sql:
                partial.append((campaigns, sql))
        result.append(dataclasses.replace(model, partial=tuple(partial)))
    return result


def _with_deltas(
    models: list[TickModel], *, work: Path, warehouse: Path, project: Path, segments: Path
) -> list[TickModel]:
    """``models`` with the delta SQL of those declaring a ``tick_delta_key`` (compiled once more, with the
    var ``tick_delta``)."""
    names = sorted(m.unique_id.split(".")[-1] for m in models if m.delta_key)
    if not names:
        return models
    _dbt(
        [
            "compile",
            "--full-refresh",
            "--select",
            *names,
            *dbt_vars_arg(as_of_source="variable", segments=segments, tick_delta=True),
        ],
        target_path=work / "compile-delta",
        env_warehouse=warehouse,
        project=project,
    )
    nodes = json.loads((work / "compile-delta" / "manifest.json").read_text(encoding="utf-8"))["nodes"]
    result = []
    for model in models:
        # a tick whose job builds the model differently leaves a table no delta of the whole model fits
        partial = any(sql is not None for _, sql in model.partial)
        delta = nodes[model.unique_id].get("compiled_code") if model.delta_key and not partial else None
        if delta is not None and "tick_delta_key" not in delta:
            raise ReplayError(
                f"{model.unique_id.split('.')[-1]} declares tick_delta_key but its SQL compiled with the var "
                "tick_delta selects no column tick_delta_key (macro tick_delta)"
            )
        result.append(dataclasses.replace(model, delta=delta))
    return result


def _dbt(args: list[str], *, target_path: Path, env_warehouse: Path, project: Path | None = None) -> None:
    project = project or paths.dbt_project_dir()
    # a changed copy of the rules without its own profiles.yml uses the project's
    profiles = project if (project / "profiles.yml").is_file() else paths.dbt_project_dir()
    env = scratch_dbt_env(env_warehouse)
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


# Every decision of every tick, stored as spans: one row per trigger and stretch of consecutive ticks with
# the same decision, reason and customer (a trigger is decided again at every tick it stays in
# mail_candidates, ~78,000 rows a tick at 100,000 customers: 56 M rows for 30 days of hourly ticks, most of
# them repeats). replay.decisions expands the spans to one row per tick, as the table it replaces held.
DECISION_TABLES_SQL = """
create schema if not exists replay;
create or replace table replay.ticks (as_of timestamp primary key);
create or replace table replay.decision_spans (
    campaign varchar, step varchar, trigger_key varchar, customer_id varchar, decision varchar,
    reason varchar, first_as_of timestamp, last_as_of timestamp
);
create or replace table replay.open_decisions as select * from replay.decision_spans where false;
create or replace view replay.decisions as
select ticks.as_of, spans.campaign, spans.step, spans.trigger_key, spans.customer_id, spans.decision,
    spans.reason
from replay.decision_spans as spans
inner join replay.ticks on ticks.as_of between spans.first_as_of and spans.last_as_of;
"""

# A span goes on when the trigger (its key: campaign, step, trigger key) has the same decision, reason and
# customer as at the tick before. Joined on the key alone and the rest compared after: a hash join on the
# key's three columns rather than on six with `is not distinct from` (~12 % of this step at 100,000
# customers, docs/benchmarks.md).
_SAME_TRIGGER = "o.campaign = c.campaign and o.step = c.step and o.trigger_key = c.trigger_key"
_DECISION_CHANGED = (
    "(o.decision is distinct from c.decision or o.reason is distinct from c.reason "
    "or o.customer_id is distinct from c.customer_id)"
)


def record_tick_decisions(conn: duckdb.DuckDBPyConnection, moment: datetime) -> None:
    """This tick's mail_candidates into the spans: a span that goes on is extended, one that does not is
    closed (moved to replay.decision_spans), a new decision opens a span."""
    conn.execute("insert into replay.ticks values (?)", [moment])
    # read from the model's table twice rather than copied into a temporary table first (a copy of every due
    # trigger's six columns, ~20 % of this step's time)
    conn.execute(
        "insert into replay.decision_spans select o.* from replay.open_decisions as o "
        f"left join eligibility.mail_candidates as c on {_SAME_TRIGGER} "
        f"where c.campaign is null or {_DECISION_CHANGED}"
    )
    conn.execute(
        "create or replace table replay.open_decisions as "
        "select c.campaign, c.step, c.trigger_key, c.customer_id, c.decision, c.reason, "
        f"case when o.campaign is null or {_DECISION_CHANGED} then $m else o.first_as_of end as first_as_of, "
        "$m as last_as_of "
        f"from eligibility.mail_candidates as c left join replay.open_decisions as o on {_SAME_TRIGGER}",
        {"m": moment},
    )


def close_decision_spans(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("insert into replay.decision_spans select * from replay.open_decisions")
    conn.execute("delete from replay.open_decisions")


def _pin_views(conn: duckdb.DuckDBPyConnection, models: list[TickModel], moment: datetime) -> None:
    """The tick models that are views (stg_sends …) read the as_of from a session variable, which a later
    session does not have: they would show nothing. Re-create them as of the last tick, as a live run's
    views are as of its as_of."""
    literal = (
        f"cast(timestamp '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}' as timestamp)"
    )
    for model in models:
        if model.materialized == "view":
            sql = model.sql.replace(f"getvariable('{AS_OF_VARIABLE}')", literal)
            conn.execute(f"create or replace view {model.relation} as {sql}")


def _catalog(models: list[TickModel]) -> str:
    """The database name the compiled models qualify their relations with ("<name>"."<schema>"."<table>";
    dbt-duckdb derives it from the warehouse file's name)."""
    return models[0].relation.split(".")[0].strip('"') if models else "warehouse"


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


# a warehouse copied into memory holds ~4.3× its file (no compression: 1.9 GiB for the 0.44 GB file of the
# 100,000-customer sample), plus what the tick's queries need
MEMORY_PER_FILE_BYTE = 5
_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMGTP]?i?B)\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50}


def duckdb_memory_budget() -> int:
    """The bytes DuckDB may use under NACHFASS_DUCKDB_MEMORY_LIMIT (a percentage resolved by DuckDB)."""
    conn = duckdb.connect()
    try:
        conn.execute(f"set memory_limit = '{duckdb_config.memory_limit()}'")
        text = conn.execute("select current_setting('memory_limit')").fetchone()[0]
    finally:
        conn.close()
    match = _SIZE.match(str(text))
    if not match:
        raise ReplayError(f"DuckDB reports a memory limit of {text!r}, which is not a size")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def fits_in_memory(warehouse: Path, *, share: int = 1) -> tuple[bool, int, int]:
    """(fits, bytes needed, bytes at hand): whether the warehouse copied into memory fits in 1/share of
    DuckDB's memory limit (a backtest runs two copies at once)."""
    needed = MEMORY_PER_FILE_BYTE * Path(warehouse).stat().st_size
    budget = duckdb_memory_budget() // max(1, share)
    return needed <= budget, needed, budget


def _open_in_memory(warehouse: Path, *, catalog: str, work: Path) -> duckdb.DuckDBPyConnection:
    """A copy of the warehouse in memory, attached under the catalog name the compiled models use.

    A tick re-creates ~27 tables; on the file, committing them wrote them to disk every tick (1.6 s of a
    4.7 s tick at 100,000 customers, docs/benchmarks.md). In memory nothing is written until the end
    (``_write_back``). Memory: ~4× the file (no compression; ~1.9 GiB for the 100,000-customer sample);
    the replay runs the ticks on the file instead when that would not fit (``fits_in_memory``). Sorts and
    joins beyond the memory limit spill to the work folder's ``tmp``."""
    conn = duckdb.connect()
    try:
        conn.execute(f"set memory_limit = '{duckdb_config.memory_limit()}'")
        conn.execute(f"set temp_directory = {_literal(work / 'tmp')}")
        conn.execute(f"attach {_literal(warehouse)} as replay_source (read_only)")
        conn.execute(f"attach ':memory:' as \"{catalog}\"")
        conn.execute(f'copy from database replay_source to "{catalog}"')
        conn.execute("detach replay_source")
        conn.execute(f'use "{catalog}"')
    except Exception:
        conn.close()
        raise
    return conn


def _write_back(conn: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    """The in-memory warehouse into a new file that then replaces the warehouse file (which still holds
    the state before the first tick), so a failure on the way leaves the old file whole."""
    catalog = conn.execute("select current_database()").fetchone()[0]
    target = warehouse.with_name(warehouse.name + ".new")
    for leftover in (target, target.with_name(target.name + ".wal")):
        leftover.unlink(missing_ok=True)
    # named after the catalog: a backtest's sides write back from one DuckDB instance at once (tick_share)
    alias = f'"{catalog}_write_back"'
    conn.execute(f"attach {_literal(target)} as {alias}")
    try:
        conn.execute(f'copy from database "{catalog}" to {alias}')
    finally:
        conn.execute(f"detach {alias}")
    os.replace(target, warehouse)
    warehouse.with_name(warehouse.name + ".wal").unlink(missing_ok=True)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


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
    outbox: Path | None  # None: the mails were composed and recorded, not written (a backtest's default)
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


def _check_fresh(warehouse: Path, *, loaded: bool = False) -> None:
    """A replay needs a warehouse without mail runs; ``loaded``: one that load_exports prepared."""
    if loaded and not warehouse.is_file():
        raise ReplayError(f"{warehouse} does not exist: load the exports into it first (load_exports)")
    conn = duckdb_config.connect(warehouse)
    try:
        prepare_warehouse(conn)
        last = latest_mail_run(conn)
        if last is not None:
            raise ReplayError(
                f"{warehouse} already holds mail runs (the last as of {_iso(last[2].replace(tzinfo=UTC))}): "
                "a replay needs a fresh warehouse; give another --warehouse or delete this one"
            )
        if (
            loaded
            and not conn.execute(
                "select count(*) from duckdb_tables() where schema_name = 'replay' and table_name = 'ticks'"
            ).fetchone()[0]
        ):
            raise ReplayError(f"{warehouse} holds no loaded exports for a replay (load_exports)")
    finally:
        conn.close()


def load_exports(
    *,
    landing: Path,
    warehouse: Path,
    end: datetime,
    erasures: Erasures | None = None,
    progress: Callable[[str], None] = print,
) -> None:
    """Load the exports and SendGrid events of ``landing`` into a fresh warehouse for a replay that ends
    at ``end``, carry the live ``erasures`` (``live_erasures``) into it, and create the replay's tables. A
    backtest loads once and copies the file for each side."""
    warehouse = Path(warehouse).resolve()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    _check_fresh(warehouse)
    conn = duckdb_config.connect(warehouse)
    try:
        progress(f"loading the exports in {landing} …")
        # the exports' arrival is the end of the replayed period: rows stamped later than a day after it
        # are quarantined as "in the future", as a live run at that moment would have
        shop_tz = load_shop_settings().timezone
        reports = load_landing(conn, Path(landing), shop_tz=shop_tz, as_of=end)
        events = load_events(conn, Path(landing))
        rows = sum(r.rows_loaded for r in reports)
        progress(f"  {rows:,} rows from {len(reports)} files, {events.events_new:,} SendGrid events")
        if erasures is not None:
            carry_erasures(conn, erasures)
            if n_erased := len(erasures.rows):
                progress(f"  {n_erased:,} erased addresses stay suppressed, as in the live warehouse")
        conn.execute(DECISION_TABLES_SQL)
        conn.execute("checkpoint")  # all in the file itself: a backtest copies it for the other side
    finally:
        conn.close()


def replay(*, warehouse: Path, **options) -> ReplayReport:
    """Run the ticks from start to end into a fresh ``warehouse`` (``_replay``: the options), holding its
    lock (``file_lock``) from start to write-back: the ticks run on a copy in memory, so the file itself is
    not held, and an erasure or a second replay must not touch it before the copy replaces it."""
    warehouse = Path(warehouse).resolve()
    with contextlib.ExitStack() as stack:
        hold_writer_lock(stack, warehouse)
        return _replay(warehouse=warehouse, **options)


def hold_writer_lock(stack: contextlib.ExitStack, target: Path) -> None:
    """Hold ``target``'s lock (``file_lock``) until ``stack`` closes; ReplayError when another replay or
    backtest holds it."""
    try:
        stack.enter_context(file_lock.hold(file_lock.lock_path(target)))
    except file_lock.LockHeld:
        raise ReplayError(
            f"another replay or backtest is writing {target}: wait for it to finish or stop it"
        ) from None


def _replay(
    *,
    landing: Path | None,
    warehouse: Path,
    outbox: Path | None,
    start: datetime,
    end: datetime,
    every: timedelta,
    progress: Callable[[str], None] = print,
    project: Path | None = None,
    in_memory: bool | None = None,
    memory_share: int = 1,
    cancel: threading.Event | None = None,
    threads: int | None = None,
    erasures: Erasures | None = None,
    share: SharedTicks | None = None,
    renders: SharedRenders | None = None,
    side: str = "",
    tick_deltas: bool = True,
    render_pool: RenderPool | None = None,
    lean_candidates: bool = True,
) -> ReplayReport:
    """Run the ticks from start to end (inclusive) into a fresh warehouse; see the module docstring.
    ``project`` is the dbt project whose rules decide (default: this project's; a backtest passes a
    changed copy). ``in_memory`` runs the ticks on a copy of the warehouse in memory and writes it back
    at the end (see ``_open_in_memory``); ``False`` runs them on the file; None (the default) chooses
    memory when the copy fits in ``1 / memory_share`` of DuckDB's memory limit (``fits_in_memory``).
    ``landing`` None: the warehouse already holds the exports (``load_exports``). ``outbox`` None: the
    mails are rendered, composed and recorded in the ledger as into an outbox, but no file is written.
    ``erasures``: the live warehouse's (``live_erasures``), carried into the fresh one when ``landing`` is
    loaded; a backtest carries them when it loads once for both sides.
    ``cancel``, once set, stops the replay before its next tick. ``threads`` caps DuckDB's threads for the
    ticks (default: one per core; a backtest running both sides at once gives each half the cores).
    ``share``: a backtest's sides in one DuckDB instance (``tick_share``), this one being ``side``: the
    ticks run in memory there, and the models both sides share are computed once for both.
    ``tick_deltas`` False computes every tick model whole at every tick (``build_tick_model``).
    ``render_pool``: the worker processes a tick's large batch of mails renders in (a backtest's sides share
    one; ``renders`` brings its own); default: the replay's own, stopped at its end.
    ``lean_candidates`` False decides every due trigger with all its columns at every tick (the model's
    ``lean``: the decisions are the same either way), and builds every segment with all its payloads
    (``LeanPayloads``)."""
    started = time.monotonic()
    project = Path(project).resolve() if project is not None else paths.dbt_project_dir()
    segments = project / "models" / "segments"
    ticks = tick_times(start, end, every)
    warehouse = Path(warehouse).resolve()
    outbox = Path(outbox).resolve() if outbox is not None else None
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    work = warehouse.parent / f".{warehouse.name}.replay"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    if landing is not None:
        load_exports(
            landing=Path(landing), warehouse=warehouse, end=ticks[-1], erasures=erasures, progress=progress
        )
    else:
        _check_fresh(warehouse, loaded=True)

    progress(f"dbt build as of {_iso(ticks[0])} (once), then compiling the tick models …")
    _dbt(
        ["build", *dbt_vars_arg(ticks[0], segments=segments)],
        target_path=work / "build",
        env_warehouse=warehouse,
        project=project,
    )
    # --full-refresh: a model computed once a day compiles to its whole select, not the incremental one
    _dbt(
        ["compile", "--full-refresh", *dbt_vars_arg(as_of_source="variable", segments=segments)],
        target_path=work / "compile",
        env_warehouse=warehouse,
        project=project,
    )
    manifest = json.loads((work / "compile" / "manifest.json").read_text(encoding="utf-8"))
    models = _tick_models(manifest)
    names = ", ".join(model.unique_id.split(".")[-1] for model in models)
    progress(f"  {len(models)} models follow the tick's as_of: {names}")
    registry = load_campaigns(segments, check_templates=False)
    by_cron = campaigns_by_cron(registry)
    plans = tick_plans(ticks, every, by_cron=by_cron)
    variants: dict[frozenset[str], tuple[set[str], dict]] = {}
    for number, plan in enumerate(sorted({p for p in plans if p is not None}, key=sorted), start=1):
        # what the live job sending only these campaigns builds, compiled for its selection as it is
        selection = campaign_selection(manifest, plan, set(registry))
        _dbt(
            [
                "compile",
                "--full-refresh",
                "--select",
                *sorted(manifest["nodes"][uid]["name"] for uid in selection),
                *dbt_vars_arg(as_of_source="variable", segments=segments),
            ],
            target_path=work / f"compile-{number}",
            env_warehouse=warehouse,
            project=project,
        )
        compiled = json.loads((work / f"compile-{number}" / "manifest.json").read_text(encoding="utf-8"))
        variants[plan] = (selection, compiled)
        left_out = sorted(m.unique_id.split(".")[-1] for m in models if m.unique_id not in selection)
        progress(
            f"  ticks sending only {', '.join(sorted(plan))} leave out, as their live job does: "
            f"{', '.join(left_out) or 'nothing'}"
        )
    models = with_partials(models, variants)
    if tick_deltas:
        models = _with_deltas(models, work=work, warehouse=warehouse, project=project, segments=segments)
        if updated := [m.unique_id.split(".")[-1] for m in models if m.delta is not None]:
            progress(f"  updated from tick to tick (what changed since the last build): {', '.join(updated)}")

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
    if renders is not None:
        renders.register(side, renderer)
    report = ReplayReport(warehouse=warehouse, outbox=outbox)
    if render_pool is None and renders is None:
        render_pool = own_pool = RenderPool()
    else:
        own_pool = None
    home_models = models
    if share is not None:
        in_memory = True
        conn, models, home_models = share.join(
            side,
            warehouse=warehouse,
            manifest=manifest,
            models=models,
            ticks=[_naive_utc(t) for t in ticks],
            plans=plans,
        )
        if side == share.owner:
            shared = ", ".join(model.unique_id.split(".")[-1] for model in share.shared) or "none"
            progress(f"  computed once a tick for both sides (the same with both rule sets): {shared}")
    else:
        if in_memory is None:
            in_memory, needed, budget = fits_in_memory(warehouse, share=memory_share)
            if not in_memory:
                progress(
                    f"  the ticks run on the file: a copy in memory would need ~{needed / 2**30:.1f} GiB of "
                    f"the {budget / 2**30:.1f} GiB DuckDB may use here (NACHFASS_DUCKDB_MEMORY_LIMIT)"
                )
        conn = _open_in_memory(warehouse, catalog=_catalog(models), work=work) if in_memory else None
        conn = conn or duckdb_config.connect(warehouse)
    try:
        if threads is not None and share is None:
            conn.execute(f"set threads = {max(1, int(threads))}")
        previous = ticks[0] - every
        # the first tick's day was built by the dbt build before the ticks
        built_at = dict.fromkeys((model.unique_id for model in models), _naive_utc(ticks[0]))
        payloads = LeanPayloads(
            conn, last_builds(models, [_naive_utc(t) for t in ticks], plans), lean=lean_candidates
        )
        for number, (tick, plan) in enumerate(zip(ticks, plans, strict=True), start=1):
            if cancel is not None and cancel.is_set():
                raise ReplayError(f"cancelled before the tick {_iso(tick)}")
            tick_started = time.monotonic()
            moment = _naive_utc(tick)
            if share is not None:
                share.before_tick(side, moment)
            conn.execute(f"set variable {AS_OF_VARIABLE} = ?", [moment])
            # mail_candidates decides the triggers its first rules settle without the customer tables, but
            # at the last tick, whose table the replayed warehouse keeps (the model's `lean`)
            lean = lean_candidates and number < len(ticks)
            conn.execute(f"set variable {LEAN_CANDIDATES_VARIABLE} = ?", [lean])
            # one transaction per tick's models: one commit instead of 25, and a tick is all or nothing
            conn.execute("begin transaction")
            for model in models:
                sql = model.sql_for(plan)
                if sql is not None and model.due(moment, built_at[model.unique_id]):
                    payloads.before(model, number)
                    build_tick_model(conn, model, moment, sql, built_at[model.unique_id])
                    built_at[model.unique_id] = moment
            record_tick_decisions(conn, moment)
            conn.execute("commit")
            if share is not None:
                share.models_done(side)
            campaigns = campaigns_due(previous, tick, by_cron=by_cron)
            mails: dict[str, int] = {}
            if campaigns:
                run_id = f"replay-{_iso(tick)}"
                begin_mail_run(conn, run_id=run_id, job_name="replay", partition_key=None, as_of=tick)
                tick_renderer = renderer.at(tick)
                if renders is not None:
                    tick_renderer = renders.at(side, tick_renderer, tick)
                else:
                    tick_renderer = render_pool.bind(tick_renderer)
                # the render and send steps in one pass: no mail.outgoing queue between them
                render_and_send_due_mails(
                    conn,
                    tick_renderer,
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
        close_decision_spans(conn)
        if share is not None:
            share.finish(conn, side)
        _pin_views(conn, home_models, ticks[-1])
        report.daily = conn.execute(DAILY_SUMMARY_SQL, {"tz": shop.timezone}).fetchall()
        if in_memory:
            progress(f"writing the replayed warehouse to {warehouse} …")
            _write_back(conn, warehouse)
    finally:
        conn.close()
        if own_pool is not None:
            own_pool.close()
    report.seconds = time.monotonic() - started
    return report


def format_daily(rows: list[tuple]) -> str:
    header = ("day", "campaign", "mails", "caps hit", "deferrals", "expiries")
    table = [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(lines)
