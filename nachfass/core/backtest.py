"""`nachfass backtest`: replay a period twice, with the current rules and with changed ones, and compare.

Each side is a real replay (``nachfass.core.replay``) into its own fresh warehouse: the same exports, the
same ticks, every decision taken by that side's dbt project at each tick's as_of and every mail recorded
in that side's ledger (nothing is sent; each mail is rendered and composed as for the outbox, and written
to ``<side>/outbox`` only with ``mail_files``: at 100,000 customers the files took ~1 GB a day and side,
and writing them ~1/8 of the ticks' work, docs/benchmarks.md). The two sides are then compared in a result
warehouse (``results.duckdb`` in the work folder), all of it SQL:

- ``backtest.decisions`` / ``backtest.sends``: every decision of every tick and every ledger row, per side
  (the decisions are stored as ``backtest.decision_spans``, stretches of ticks with the same decision, and
  expanded over ``backtest.ticks`` by the view);
- ``backtest.summary``: per side, campaign and step: mails, unique customers, caps hit, deferrals,
  expiries, exits on order, backlog skips and drips, and the estimated opens, clicks, conversions and
  revenue with 95 % intervals;
- ``backtest.changes``: every trigger that gains, loses or moves its mail, with the decision on each side
  (the mail's send time, or the last decision and its reason where it was not sent);
- ``backtest.mails_per_week``: how many customer-weeks got 1, 2, 3 … mails (all campaigns, shop weeks);
- ``backtest.estimates``: the estimates per variant with the history they rest on.

The estimates apply the rates observed in the history (``analytics.mail_performance`` of the live
warehouse: share of sent mails opened, clicked, converted, and attributed revenue per mail) for the same
campaign and variant, or the campaign as a whole when the variant has fewer than ``MIN_HISTORY`` mails. The
intervals are those of the expected value given the mails: Wilson score intervals for the rates and a t
interval for the revenue per mail, times the number of mails; they say how well the history pins the rate
down, not how much one period's outcome scatters around it.

The sides replay at the same time. In memory they share one DuckDB instance, and the models that are the
same under both rule sets are computed once a tick for both (``nachfass.core.tick_share``).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from nachfass.core import paths
from nachfass.core.diff import rules_project
from nachfass.core.mail.render_pool import RenderPool
from nachfass.core.render_share import SharedRenders
from nachfass.core.replay import (
    LIVE_WAREHOUSE,
    ReplayError,
    fits_in_memory,
    hold_writer_lock,
    live_erasures,
    load_exports,
    read_warehouse_file,
    replay,
    tick_times,
)
from nachfass.core.shop import load_shop_settings
from nachfass.core.tick_share import SharedTicks

SIDES = ("before", "after")
MIN_HISTORY = 30
Z_95 = 1.959963984540054
METRICS = ("opens", "clicks", "conversions")


class BacktestError(RuntimeError):
    """The backtest cannot run (bad rules location, a replay failed …); the message says why."""


# ---- estimates ---------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927); (0, 1) without trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t (scipy when installed, else the normal's for large df)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:  # pragma: no cover - scipy comes with the dev tools
        return Z_95


@dataclass(frozen=True)
class Rates:
    """What the history says about one campaign (and variant): mails and how many were opened …"""

    mails: int
    opens: int
    clicks: int
    conversions: int
    revenue_mean: float
    revenue_sd: float


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def estimate(mails: int, rates: Rates) -> dict[str, Estimate]:
    """Expected opens, clicks, conversions and revenue of ``mails`` mails at the history's rates."""
    result: dict[str, Estimate] = {}
    for metric in METRICS:
        k = getattr(rates, metric)
        low, high = wilson_interval(k, rates.mails)
        result[metric] = Estimate(mails * k / rates.mails, mails * low, mails * high)
    half = (
        t_quantile_975(rates.mails - 1) * rates.revenue_sd / math.sqrt(rates.mails)
        if rates.mails > 1
        else 0.0
    )
    result["revenue"] = Estimate(
        mails * rates.revenue_mean,
        mails * max(0.0, rates.revenue_mean - half),
        mails * (rates.revenue_mean + half),
    )
    return result


HISTORY_SQL = """
select
    campaign,
    coalesce(variant, 'control') as variant,
    count(*) as mails,
    count(*) filter (where is_opened) as opens,
    count(*) filter (where is_clicked) as clicks,
    count(*) filter (where is_converted) as conversions,
    avg(coalesce(attributed_revenue, 0)) as revenue_mean,
    coalesce(stddev_samp(coalesce(attributed_revenue, 0)), 0) as revenue_sd
from analytics.mail_performance
where send_status = 'sent'
group by 1, 2
"""


def history_rates(history: Path | str | None) -> dict[tuple[str, str | None], Rates]:
    """Rates per (campaign, variant) and per (campaign, None) from a warehouse's mail_performance: a DuckDB
    file, or ``LIVE_WAREHOUSE`` (the engine's own: PostgreSQL on the postgres and spark engines, whose
    runs copy the analytics back there); empty when there is no such warehouse or table (the estimates then
    say "no history")."""
    if history == LIVE_WAREHOUSE:
        return _live_history_rates()
    if history is None:
        return {}
    try:
        rows = read_warehouse_file(
            Path(history),
            lambda conn: conn.execute(HISTORY_SQL).fetchall(),
            empty=[],
            what="the history warehouse",
            hint=", or pass --history a copy",
        )
    except ReplayError as exc:
        raise BacktestError(str(exc)) from None
    return _rates(rows)


def _live_history_rates() -> dict[tuple[str, str | None], Rates]:
    from nachfass.core import engine

    if engine.current_engine() != "postgres":
        from nachfass.core import paths

        return history_rates(paths.warehouse_path())
    import psycopg2.errors

    from nachfass.core.warehouse.postgres import WarehouseError

    try:
        with engine.connect(read_only=True) as conn:
            try:
                rows = conn.execute(HISTORY_SQL).fetchall()
            except psycopg2.errors.UndefinedTable:
                return {}
    except WarehouseError as exc:  # before the replays: one line naming the server, never the password
        raise BacktestError(f"cannot read the history's rates: {exc} (or --history a DuckDB file)") from None
    return _rates(rows)


def _rates(rows: list[tuple]) -> dict[tuple[str, str | None], Rates]:
    rates: dict[tuple[str, str | None], Rates] = {}
    by_campaign: dict[str, list[tuple]] = {}
    for campaign, variant, n, opens, clicks, conversions, mean, sd in rows:
        rates[(campaign, variant)] = Rates(n, opens, clicks, conversions, float(mean), float(sd))
        by_campaign.setdefault(campaign, []).append((n, opens, clicks, conversions, float(mean), float(sd)))
    for campaign, parts in by_campaign.items():
        n = sum(p[0] for p in parts)
        mean = sum(p[0] * p[4] for p in parts) / n
        # pooled variance of the union of the groups
        squares = sum((p[0] - 1) * p[5] ** 2 + p[0] * (p[4] - mean) ** 2 for p in parts)
        sd = math.sqrt(squares / (n - 1)) if n > 1 else 0.0
        rates[(campaign, None)] = Rates(
            n, sum(p[1] for p in parts), sum(p[2] for p in parts), sum(p[3] for p in parts), mean, sd
        )
    return rates


def rates_for(
    rates: dict[tuple[str, str | None], Rates], campaign: str, variant: str
) -> tuple[str, Rates] | None:
    """(basis, rates): the campaign and variant when its history has MIN_HISTORY mails, else the campaign."""
    own = rates.get((campaign, variant))
    if own is not None and own.mails >= MIN_HISTORY:
        return f"{campaign}/{variant}", own
    whole = rates.get((campaign, None))
    if whole is not None and whole.mails > 0:
        return campaign, whole
    return None


# ---- the comparison in SQL -----------------------------------------------------------------------------

SUMMARY_SQL = """
create or replace table backtest.summary as
with triggers as (
    select
        side, campaign, step, trigger_key,
        bool_or(reason = 'frequency_cap') as capped,
        bool_or(decision = 'defer') as deferred,
        bool_or(reason = 'expired') as expired,
        bool_or(reason = 'purchased') as exited_on_order,
        bool_or(reason = 'backlog_skipped') as backlog_skipped,
        bool_or(reason = 'backlog_drip') as backlog_dripped
    from backtest.decision_spans
    group by all
),
decided as (
    select
        side, campaign, step,
        count(*) filter (where capped) as caps_hit,
        count(*) filter (where deferred) as deferrals,
        count(*) filter (where expired) as expiries,
        count(*) filter (where exited_on_order) as exits_on_order,
        count(*) filter (where backlog_skipped) as backlog_skipped,
        count(*) filter (where backlog_dripped) as backlog_dripped
    from triggers
    group by all
),
sent as (
    select side, campaign, step, count(*) as mails, count(distinct customer_id) as customers
    from backtest.sends
    where status = 'sent'
    group by all
),
estimated as (
    select
        side, campaign, step,
        sum(opens) as est_opens, sum(opens_low) as est_opens_low, sum(opens_high) as est_opens_high,
        sum(clicks) as est_clicks, sum(clicks_low) as est_clicks_low, sum(clicks_high) as est_clicks_high,
        sum(conversions) as est_conversions, sum(conversions_low) as est_conversions_low,
        sum(conversions_high) as est_conversions_high,
        sum(revenue) as est_revenue, sum(revenue_low) as est_revenue_low,
        sum(revenue_high) as est_revenue_high,
        string_agg(distinct basis, ', ' order by basis) as estimate_basis
    from backtest.estimates
    where basis is not null
    group by all
),
keys as (
    select distinct sides.side, k.campaign, k.step
    from (select campaign, step from decided union select campaign, step from sent) as k
    cross join (select unnest(['before', 'after']) as side) as sides
)
select
    keys.side, keys.campaign, keys.step,
    coalesce(sent.mails, 0) as mails,
    coalesce(sent.customers, 0) as customers,
    coalesce(decided.caps_hit, 0) as caps_hit,
    coalesce(decided.deferrals, 0) as deferrals,
    coalesce(decided.expiries, 0) as expiries,
    coalesce(decided.exits_on_order, 0) as exits_on_order,
    coalesce(decided.backlog_skipped, 0) as backlog_skipped,
    coalesce(decided.backlog_dripped, 0) as backlog_dripped,
    estimated.* exclude (side, campaign, step)
from keys
left join sent using (side, campaign, step)
left join decided using (side, campaign, step)
left join estimated using (side, campaign, step)
order by keys.campaign, keys.step, keys.side desc
"""

CHANGES_SQL = """
create or replace table backtest.changes as
with first_sent as (
    select side, campaign, step, trigger_key, any_value(customer_id) as customer_id, min(as_of) as sent_at
    from backtest.sends
    where status = 'sent'
    group by all
),
last_decision as (
    select
        side, campaign, step, trigger_key,
        any_value(customer_id) as customer_id,
        arg_max(decision || ' (' || reason || ')', last_as_of) as label,
        max(last_as_of) as decided_at
    from backtest.decision_spans
    group by all
),
b as (select * from first_sent where side = 'before'),
a as (select * from first_sent where side = 'after'),
pairs as (
    select
        coalesce(a.campaign, b.campaign) as campaign,
        coalesce(a.step, b.step) as step,
        coalesce(a.trigger_key, b.trigger_key) as trigger_key,
        coalesce(a.customer_id, b.customer_id) as customer_id,
        b.sent_at as sent_before,
        a.sent_at as sent_after
    from b
    full outer join a on a.campaign = b.campaign and a.step = b.step and a.trigger_key = b.trigger_key
    where a.sent_at is distinct from b.sent_at
)
select
    case
        when pairs.sent_before is null then 'gained'
        when pairs.sent_after is null then 'lost'
        else 'moved'
    end as kind,
    pairs.campaign, pairs.step, pairs.trigger_key, pairs.customer_id,
    pairs.sent_before, pairs.sent_after,
    case
        when pairs.sent_before is not null then 'sent ' || strftime(pairs.sent_before, '%Y-%m-%d %H:%M')
        else ld_before.label || ' ' || strftime(ld_before.decided_at, '%Y-%m-%d %H:%M')
    end as before,
    case
        when pairs.sent_after is not null then 'sent ' || strftime(pairs.sent_after, '%Y-%m-%d %H:%M')
        else ld_after.label || ' ' || strftime(ld_after.decided_at, '%Y-%m-%d %H:%M')
    end as after
from pairs
left join last_decision as ld_before
    on ld_before.side = 'before' and ld_before.campaign = pairs.campaign
    and ld_before.step = pairs.step and ld_before.trigger_key = pairs.trigger_key
left join last_decision as ld_after
    on ld_after.side = 'after' and ld_after.campaign = pairs.campaign
    and ld_after.step = pairs.step and ld_after.trigger_key = pairs.trigger_key
order by kind, campaign, step, customer_id, trigger_key
"""

MAILS_PER_WEEK_SQL = """
create or replace table backtest.mails_per_week as
with weeks as (
    select side, customer_id, date_trunc('week', timezone($tz, timezone('UTC', as_of))) as week,
        count(*) as mails
    from backtest.sends
    where status = 'sent'
    group by all
)
select side, mails as mails_in_week, count(*) as customer_weeks
from weeks
group by all
order by side desc, mails_in_week
"""


@dataclass
class BacktestResult:
    warehouse: Path
    label: str
    start: datetime
    end: datetime
    every: timedelta
    seconds: float
    summary: list[dict]
    changes: dict[str, int]
    mails_per_week: dict[str, dict[int, int]]
    has_history: bool

    def markdown(self, limit: int = 30) -> str:
        return format_markdown(self, limit=limit)


def _compare(result_db: Path, sides: dict[str, Path], rates: dict, shop_tz: str) -> None:
    conn = duckdb.connect(str(result_db))
    try:
        conn.execute("create schema if not exists backtest")
        for side, warehouse in sides.items():
            quoted = str(warehouse).replace("'", "''")
            conn.execute(f"attach '{quoted}' as {side}_side (read_only)")
        # the decisions as spans of ticks (replay.decision_spans), expanded by the view backtest.decisions
        conn.execute(
            "create or replace table backtest.ticks as "
            + " union ".join(f"select as_of from {side}_side.replay.ticks" for side in sides)
        )
        conn.execute(
            "create or replace table backtest.decision_spans as "
            + " union all ".join(
                f"select '{side}' as side, * from {side}_side.replay.decision_spans" for side in sides
            )
        )
        conn.execute(
            "create or replace view backtest.decisions as select spans.side, ticks.as_of, spans.campaign, "
            "spans.step, spans.trigger_key, spans.customer_id, spans.decision, spans.reason "
            "from backtest.decision_spans as spans inner join backtest.ticks "
            "on ticks.as_of between spans.first_as_of and spans.last_as_of"
        )
        conn.execute(
            "create or replace table backtest.sends as "
            + " union all ".join(
                f"select '{side}' as side, send_id, campaign, step, trigger_key, customer_id, experiment_id, "
                f"variant, status, reason, as_of from {side}_side.mail.sends"
                for side in sides
            )
        )
        for side in sides:
            conn.execute(f"detach {side}_side")
        conn.execute(
            "create or replace table backtest.estimates (side varchar, campaign varchar, step varchar, "
            "variant varchar, mails bigint, basis varchar, history_mails bigint, "
            + ", ".join(f"{m} double, {m}_low double, {m}_high double" for m in (*METRICS, "revenue"))
            + ")"
        )
        groups = conn.execute(
            "select side, campaign, step, coalesce(variant, 'control'), count(*) from backtest.sends "
            "where status = 'sent' group by all order by all"
        ).fetchall()
        rows = []
        for side, campaign, step, variant, mails in groups:
            found = rates_for(rates, campaign, variant)
            if found is None:
                rows.append((side, campaign, step, variant, mails, None, None, *([None] * 12)))
                continue
            basis, campaign_rates = found
            figures = estimate(mails, campaign_rates)
            values = [
                v for m in (*METRICS, "revenue") for v in (figures[m].value, figures[m].low, figures[m].high)
            ]
            rows.append((side, campaign, step, variant, mails, basis, campaign_rates.mails, *values))
        if rows:
            conn.executemany(f"insert into backtest.estimates values ({', '.join(['?'] * 19)})", rows)
        conn.execute(SUMMARY_SQL)
        conn.execute(CHANGES_SQL)
        conn.execute(MAILS_PER_WEEK_SQL, {"tz": shop_tz})
    finally:
        conn.close()


def _replay_sides(
    projects: dict[str, Path],
    warehouses: dict[str, Path],
    *,
    label: str,
    workdir: Path,
    start: datetime,
    end: datetime,
    every: timedelta,
    in_memory: bool | None,
    threads_per_side: int | None,
    progress: Callable[[str], None],
    share_models: bool = True,
    mail_files: bool = False,
    tick_deltas: bool = True,
) -> None:
    """The two replays side by side, one thread each: a tick is mostly DuckDB, which releases the GIL, so
    the sides share the cores (docs/benchmarks.md). In memory (when both copies fit, or ``in_memory``) the
    sides run in one DuckDB instance and the models both rule sets share are computed once a tick
    (``tick_share``), and the mails both send alike are rendered once (``render_share``); ``share_models``
    False: each side computes and renders all its own. The first failure cancels
    the other side and is the error raised."""
    cancel = threading.Event()
    # each side's DuckDB on its share of the cores (docs/benchmarks.md); 0: DuckDB's default (every core)
    if threads_per_side is None:
        threads_per_side = max(1, (os.cpu_count() or 2) // len(SIDES))
    threads = threads_per_side or None
    if in_memory is None:
        in_memory, needed, budget = fits_in_memory(warehouses[SIDES[0]], share=len(SIDES))
        if not in_memory:
            progress(
                f"[both] the ticks run on the files: the copies in memory would need "
                f"~{needed / 2**30:.1f} GiB each of the {budget / 2**30:.1f} GiB DuckDB may use here "
                "(NACHFASS_DUCKDB_MEMORY_LIMIT)"
            )
    share = None
    if in_memory and share_models:
        # one DuckDB for both sides: the threads both sides would have had
        total_threads = threads * len(SIDES) if threads else None
        share = SharedTicks(SIDES, work=workdir / ".backtest.replay", threads=total_threads)
    # the mails both rule sets send alike, rendered once (render_share); the large batches of both sides in
    # one set of worker processes
    render_pool = RenderPool()
    renders = SharedRenders(SIDES, pool=render_pool) if share_models else None

    def run(side: str) -> None:
        progress(f"[{side}] replaying with {'the current rules' if side == 'before' else label}")
        try:
            replay(
                landing=None,
                warehouse=warehouses[side],
                outbox=workdir / side / "outbox" if mail_files else None,
                start=start,
                end=end,
                every=every,
                project=projects[side],
                progress=lambda line: progress(f"[{side}] {line}"),
                in_memory=in_memory,
                memory_share=len(SIDES),
                cancel=cancel,
                threads=threads,
                share=share,
                renders=renders,
                side=side,
                tick_deltas=tick_deltas,
                render_pool=render_pool,
            )
        except BaseException:
            cancel.set()
            if share is not None:
                share.abort(f"the {side} side stopped")
            raise

    try:
        with ThreadPoolExecutor(max_workers=len(SIDES), thread_name_prefix="backtest") as pool:
            futures = {side: pool.submit(run, side) for side in SIDES}
            errors = {side: future.exception() for side, future in futures.items()}
    finally:
        render_pool.close()
        if share is not None:
            share.close()
    if renders is not None:
        counts = renders.counts
        progress(
            f"[both] mails rendered: {counts['rendered'] + counts['own']:,}; mails one side took as the "
            f"other had rendered them: {counts['taken']:,}"
        )
    failed = [(side, exc) for side, exc in errors.items() if exc is not None]
    # the side that failed first, not the one it cancelled
    failed.sort(key=lambda item: str(item[1]).startswith("cancelled"))
    if failed:
        side, exc = failed[0]
        if isinstance(exc, ReplayError):
            raise BacktestError(f"the {side} replay failed: {exc}") from exc
        raise exc


def run_backtest(*, workdir: Path, **options) -> BacktestResult:
    """``_run_backtest`` into ``workdir``, holding the lock of its results.duckdb (``file_lock``) from the
    first file it deletes to the last it writes, so an erasure waits for it rather than erasing copies it
    is about to write again. A second backtest into the same folder stops with a ReplayError."""
    workdir = Path(workdir).resolve()
    with contextlib.ExitStack() as stack:
        hold_writer_lock(stack, workdir / "results.duckdb")
        return _run_backtest(workdir=workdir, **options)


def _run_backtest(
    *,
    rules: str,
    landing: Path,
    start: datetime,
    end: datetime,
    every: timedelta,
    workdir: Path,
    history: Path | str | None = None,
    current: Path | None = None,
    progress: Callable[[str], None] = print,
    in_memory: bool | None = None,
    threads_per_side: int | None = None,
    share_models: bool = True,
    mail_files: bool = False,
    tick_deltas: bool = True,
) -> BacktestResult:
    """Replay start..end with the current dbt project (``current``, default this one) and with ``rules``
    (a dbt project folder or a git ref), each into ``workdir/<side>/``, and compare them in
    ``workdir/results.duckdb``. ``history`` is the warehouse whose mail performance gives the rates and
    whose erasures both sides carry (``LIVE_WAREHOUSE``, a DuckDB file, or None: no history).
    ``in_memory`` is the replays' (``nachfass.core.replay.replay``). ``mail_files``: each side's mails also as
    files in ``workdir/<side>/outbox`` (.eml and SendGrid JSON), as a replay writes them. ``tick_deltas``
    False computes every tick model whole at every tick (``replay.build_tick_model``)."""
    started = time.monotonic()
    workdir = Path(workdir).resolve()
    for side in SIDES:
        shutil.rmtree(workdir / side, ignore_errors=True)
    shutil.rmtree(workdir / "rules", ignore_errors=True)
    result_db = workdir / "results.duckdb"
    result_db.unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    # first: a locked history warehouse should fail before the replays
    rates = history_rates(history)
    try:
        erasures = live_erasures(history)
    except ReplayError as exc:
        raise BacktestError(str(exc)) from exc
    try:
        project, label = rules_project(rules, workdir=workdir)
    except RuntimeError as exc:
        raise BacktestError(str(exc)) from exc
    projects = {"before": Path(current or paths.dbt_project_dir()), "after": project}
    warehouses = {side: workdir / side / "warehouse.duckdb" for side in SIDES}
    try:
        # both sides start from the same exports: loaded once, the file copied for the other side
        load_exports(
            landing=landing,
            warehouse=warehouses["before"],
            end=tick_times(start, end, every)[-1],
            erasures=erasures,
            progress=lambda line: progress(f"[both] {line}"),
        )
    except ReplayError as exc:
        raise BacktestError(f"loading the exports failed: {exc}") from exc
    warehouses["after"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(warehouses["before"], warehouses["after"])
    _replay_sides(
        projects,
        warehouses,
        label=label,
        workdir=workdir,
        start=start,
        end=end,
        every=every,
        in_memory=in_memory,
        threads_per_side=threads_per_side,
        progress=progress,
        share_models=share_models,
        mail_files=mail_files,
        tick_deltas=tick_deltas,
    )
    _compare(result_db, warehouses, rates, load_shop_settings().timezone)
    conn = duckdb.connect(str(result_db), read_only=True)
    try:
        cursor = conn.execute("select * from backtest.summary")
        names = [d[0] for d in cursor.description]
        summary = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        changes = dict(conn.execute("select kind, count(*) from backtest.changes group by 1").fetchall())
        per_week: dict[str, dict[int, int]] = {side: {} for side in SIDES}
        for side, mails, n in conn.execute("select * from backtest.mails_per_week").fetchall():
            per_week[side][int(mails)] = int(n)
    finally:
        conn.close()
    return BacktestResult(
        warehouse=result_db,
        label=label,
        start=start,
        end=end,
        every=every,
        seconds=time.monotonic() - started,
        summary=summary,
        changes=changes,
        mails_per_week=per_week,
        has_history=bool(rates),
    )


# ---- Markdown ------------------------------------------------------------------------------------------


def _delta(before: float | None, after: float | None, digits: int = 0) -> str:
    if before is None and after is None:
        return "–"
    b, a = before or 0, after or 0
    text = f"{b:,.{digits}f} → {a:,.{digits}f}"
    return f"**{text}**" if round(a, digits) != round(b, digits) else text


def _every(every: timedelta) -> str:
    minutes = int(every.total_seconds() // 60)
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _percentile(counts: dict[int, int], q: float) -> int:
    total = sum(counts.values())
    if not total:
        return 0
    running = 0
    for mails in sorted(counts):
        running += counts[mails]
        if running >= q * total:
            return mails
    return max(counts)


def format_markdown(result: BacktestResult, *, limit: int = 30) -> str:
    stamp = "%Y-%m-%d %H:%M"
    lines = [
        f"### Backtest of `{result.label}`, {result.start.astimezone(UTC).strftime(stamp)} – "
        f"{result.end.astimezone(UTC).strftime(stamp)} UTC, every {_every(result.every)}",
        "",
        "| campaign | step | mails | customers | caps hit | deferrals | expiries | exits on order | "
        "backlog skipped | backlog dripped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {(r["campaign"], r["step"], r["side"]): r for r in result.summary}
    keys = sorted({(c, s) for c, s, _ in rows})
    columns = ("mails", "customers", "caps_hit", "deferrals", "expiries", "exits_on_order", "backlog_skipped",
               "backlog_dripped")  # fmt: skip
    for campaign, step in keys:
        b, a = rows.get((campaign, step, "before"), {}), rows.get((campaign, step, "after"), {})
        cells = " | ".join(_delta(b.get(c), a.get(c)) for c in columns)
        lines.append(f"| {campaign} | {step} | {cells} |")
    lines += ["", "Estimated from the history's rates (95 % intervals of the expected value):", ""]
    if not result.has_history:
        lines.append("No history (no `analytics.mail_performance` in the history warehouse): no estimates.")
    else:
        lines += [
            "| campaign | step | opens | clicks | conversions | revenue (€) | rates from |",
            "|---|---|---|---|---|---|---|",
        ]
        for campaign, step in keys:
            b, a = rows.get((campaign, step, "before"), {}), rows.get((campaign, step, "after"), {})
            cells = []
            for metric, digits in (("opens", 0), ("clicks", 0), ("conversions", 1), ("revenue", 0)):
                value = f"est_{metric}"
                if b.get(value) is None and a.get(value) is None:
                    cells.append("–")
                    continue
                text = _delta(b.get(value), a.get(value), digits)
                if a.get(value):
                    low, high = a.get(value + "_low") or 0, a.get(value + "_high") or 0
                    text += f" [{low:,.{digits}f}–{high:,.{digits}f}]"
                cells.append(text)
            basis = a.get("estimate_basis") or b.get("estimate_basis") or "no history"
            lines.append(f"| {campaign} | {step} | {' | '.join(cells)} | {basis} |")
    lines += ["", "Mails per customer and week (all campaigns): median, 90th percentile, maximum:", ""]
    for side in SIDES:
        counts = result.mails_per_week.get(side, {})
        lines.append(
            f"- {side}: {_percentile(counts, 0.5)} / {_percentile(counts, 0.9)} / {max(counts, default=0)} "
            f"({sum(counts.values()):,} customer-weeks with mail)"
        )
    changed = ", ".join(f"{result.changes.get(k, 0):,} {k}" for k in ("gained", "lost", "moved"))
    lines += [
        "",
        f"Triggers whose mail changes: {changed} (`backtest.changes` in {result.warehouse}).",
    ]
    if limit and any(result.changes.values()):
        conn = duckdb.connect(str(result.warehouse), read_only=True)
        try:
            shown = conn.execute(
                "select kind, campaign, step, customer_id, trigger_key, before, after from backtest.changes "
                "order by kind, campaign, step, customer_id, trigger_key limit ?",
                [limit],
            ).fetchall()
        finally:
            conn.close()
        lines += [
            "",
            "| change | campaign | step | customer | trigger | before | after |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in shown]
        total = sum(result.changes.values())
        if total > limit:
            lines.append(f"| … | | | | | {total - limit:,} more in `backtest.changes` | |")
    return "\n".join(lines) + "\n"
