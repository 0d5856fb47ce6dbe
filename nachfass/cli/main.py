"""The commands users type: ``nachfass demo | generate | run | replay | report | preview | sandbox | webapp |
erase | dev | dbt | campaigns``.

``run`` executes the main Dagster job for a landing folder, a warehouse file and an ``as_of`` time, so any
run can be reproduced exactly. The locations are exported as the environment variables that both the
Dagster resources and dbt's profiles.yml read.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

from nachfass.core import paths

DEFAULT_DEMO_AS_OF = "2026-11-24T10:00:00Z"  # a Tuesday morning in Berlin: inside the send window


def _export_locations(args: SimpleNamespace) -> None:
    for option, env in (
        ("warehouse", paths.ENV_WAREHOUSE),
        ("landing", paths.ENV_LANDING),
        ("outbox", paths.ENV_OUTBOX),
    ):
        value = getattr(args, option, None)
        if value:
            os.environ[env] = str(Path(value).resolve())
    # Make every location explicit for the dbt subprocess too.
    os.environ.setdefault(paths.ENV_WAREHOUSE, str(paths.warehouse_path()))
    os.environ.setdefault(paths.ENV_LANDING, str(paths.landing_dir()))
    os.environ.setdefault(paths.ENV_OUTBOX, str(paths.outbox_dir()))


def ensure_dbt_manifest() -> None:
    """`dbt parse` so the @dbt_assets definitions can load (dagster dev does this itself)."""
    from dagster_project.dbt_project import prepare_dbt_manifest

    prepare_dbt_manifest()


def run_job(
    as_of: str | None,
    job_name: str = "nachfass_job",
    verbose: bool = False,
    partition_key: str | None = None,
    unit_tests: bool = False,
) -> bool:
    """Execute a job of the Definitions in this process; return success.

    ``partition_key``: a slot of a scheduled job (its run config, as_of = the slot's end, comes from the
    job's partitions); otherwise ``as_of`` (ISO 8601) is the logical time, default the run's start.
    ``unit_tests``: run dbt's unit tests even if they passed for this state of the dbt project."""
    from nachfass.core.engine import EngineError, current_engine, dbt_engine

    try:
        current_engine()  # a mistyped engine stops here with one line, before dbt or any step starts
        if dbt_engine() == "spark":
            from nachfass.core.warehouse import spark

            spark.check_runtime()  # so does a Spark without java, pyspark or the JDBC driver
    except EngineError as exc:
        raise SystemExit(str(exc)) from None
    import dagster as dg

    ensure_dbt_manifest()
    from dagster_project.definitions import defs
    from dagster_project.jobs import DBT_OP, JOB_CAMPAIGN_CONFIG, clock_config
    from dagster_project.resources import parse_as_of

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def(job_name)
    run_config: dict = {
        # dbt's own log lines stream through Dagster's logger: keep the console to warnings unless asked.
        "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}},
    }
    if partition_key:
        if job.partitioned_config is None:
            raise SystemExit(f"{job_name} has no partitions (only the scheduled mail jobs have)")
        # (JobDefinition.validate_partition_key wants a loading context since Dagster 1.13; the partitions'
        # own membership test does not)
        if not job.partitions_def.has_partition_key(partition_key):
            raise SystemExit(
                f"{job_name} has no partition {partition_key!r} (an ended slot, e.g. 2026-11-24-10:00)"
            )
        run_config.update(job.get_run_config_for_partition_key(partition_key))
    else:
        # Run config given here replaces a job's default config: keep the scheduled jobs' campaign filters.
        run_config.update(deepcopy(JOB_CAMPAIGN_CONFIG.get(job_name, {})))
        if as_of:
            run_config.update(clock_config(parse_as_of(as_of)))
    if unit_tests:
        if DBT_OP not in job.graph.node_dict:
            raise SystemExit(f"{job_name} does not build the dbt models, so it runs no dbt unit tests")
        op_config = run_config.setdefault("ops", {}).setdefault(DBT_OP, {}).setdefault("config", {})
        op_config["run_unit_tests"] = True
    # dagster-dbt echoes every dbt log line to stdout; keep it for failures and --verbose only. Each event
    # the run stores passes through the instance: the progress display sees it there, in this thread.
    captured = io.StringIO()
    progress = StepProgress(job_name)
    store_event = instance.handle_new_event

    def handle_new_event(event, *args, **kwargs):
        store_event(event, *args, **kwargs)
        progress.on_event(event)

    instance.handle_new_event = handle_new_event
    try:
        with contextlib.redirect_stdout(sys.stdout if verbose else captured), progress.live():
            result = job.execute_in_process(
                run_config=run_config,
                instance=instance,
                partition_key=partition_key,
                raise_on_error=False,
            )
    finally:
        del instance.handle_new_event  # the class's own method again
    # A step whose input was never materialized is skipped, and Dagster still calls the run a success. For a
    # mail run that means "nothing was sent" with exit 0 (seen when dbt's log lost a model's result line):
    # a skipped step fails the command.
    skipped = sorted(
        {event.step_key for event in result.all_events if event.event_type_value == "STEP_SKIPPED"}
    )
    for step in skipped:
        print(f"step {step} was skipped: an asset it needs was not materialized", file=sys.stderr)
    if not result.success or skipped:
        dbt_tail = [line for line in captured.getvalue().splitlines() if line.strip()][-25:]
        if dbt_tail:
            print("last dbt output:\n  " + "\n  ".join(dbt_tail), file=sys.stderr)
        for event in result.all_events:
            if event.is_failure and event.step_key:
                print(f"step {event.step_key} failed: {_root_cause(event)}", file=sys.stderr)
    return result.success and not skipped


class StepProgress:
    """What a run is doing, on stderr while it runs: one line per finished step with its time, and a
    spinner naming the running steps (on a terminal). Fed with the events the run stores, so it shows
    what Dagster records, for any job."""

    def __init__(self, job_name: str) -> None:
        from rich.console import Console

        self.job_name = job_name
        self.console = Console(stderr=True, highlight=False)
        self.running: dict[str, float] = {}
        self.started = time.perf_counter()
        self._status = None

    @contextlib.contextmanager
    def live(self):
        if not self.console.is_terminal:
            yield
            return
        with self.console.status(f"{self.job_name}: starting …") as status:
            self._status = status
            yield
        self._status = None

    def on_event(self, record) -> None:
        from dagster import DagsterEventType

        event = getattr(record, "dagster_event", None)
        if event is None or event.event_type not in (
            DagsterEventType.STEP_START,
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
        ):
            return
        step = event.step_key or "?"
        if event.event_type == DagsterEventType.STEP_START:
            self.running[step] = record.timestamp
        else:
            took = record.timestamp - self.running.pop(step, record.timestamp)
            mark = "[green]✓[/green]" if event.event_type == DagsterEventType.STEP_SUCCESS else "[red]✗[/red]"
            self.console.print(f"  {mark} {step:<52} {took:6.1f} s")
        if self._status is not None:
            elapsed = time.perf_counter() - self.started
            self._status.update(f"{self.job_name} {elapsed:5.0f} s: {', '.join(self.running) or '…'}")


def _root_cause(event) -> str:
    """The asset's own exception(s) behind a failed step, without Dagster's wrapper around them."""
    error = getattr(event.event_specific_data, "error", None)
    if error is None:
        return event.message or "unknown error"
    messages = []
    while error is not None:
        if not (error.cls_name or "").startswith("Dagster"):
            messages.append(error.message.strip())
        error = error.cause
    return " ← caused by ".join(messages) or event.message or "unknown error"


def print_summary() -> None:
    """What the run left in the warehouse. Only tables that exist are shown: a job that selects part of the
    graph (``ingest_job``) has not built the candidates or the ledger yet, and that is no failure."""
    from nachfass.core import engine

    with engine.connect(read_only=True) as conn:
        _print_summary(conn, engine.describe())


def _print_summary(conn, where: str) -> None:
    present = {
        f"{schema}.{name}"
        for schema, name in conn.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    }
    print(f"\nWarehouse: {where}")
    if "raw.loaded_files" in present:
        files = conn.execute(
            "select count(*), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_quarantined), 0) "
            "from raw.loaded_files"
        ).fetchone()
        rejected = conn.execute("select count(distinct path) from raw.rejected_files").fetchone()[0]
        print(
            f"Exports: {files[0]} files loaded, {files[1]:,} rows, {files[2]:,} quarantined, "
            f"{rejected} files rejected (see raw.quarantine, raw.rejected_files)"
        )
    if "eligibility.mail_candidates" in present:
        print("\nCandidates by campaign, decision and reason (eligibility.mail_candidates):")
        for campaign, step, decision, reason, n in conn.execute(
            "select campaign, step, decision, reason, count(*) from eligibility.mail_candidates "
            "group by 1, 2, 3, 4 order by 1, 2, 3, 4"
        ).fetchall():
            print(f"  {campaign:<18} {step:<10} {decision:<6} {reason:<16} {n:>8,}")
    if "mail.sends" in present:
        print("\nSend ledger (mail.sends) by status and transport:")
        for status, transport, n in conn.execute(
            "select status, coalesce(transport, '-'), count(*) from mail.sends group by 1, 2 order by 1, 2"
        ).fetchall():
            print(f"  {status:<10} {transport:<9} {n:>8,}")
    print(f"\nOutbox: {paths.outbox_dir()}")


def cmd_generate(args: SimpleNamespace) -> int:
    from dagster_project.resources import parse_as_of
    from nachfass.devtools.datagen.generate import generate_exports

    started = time.perf_counter()
    counts = generate_exports(
        Path(args.landing or paths.landing_dir()),
        customers=args.customers,
        seed=args.seed,
        as_of=parse_as_of(args.as_of),
        days=args.days,
        file_format=args.format,
    )
    for table, n in counts.items():
        print(f"  {table:<16} {n:>12,} rows")
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_run(args: SimpleNamespace) -> int:
    _export_locations(args)
    if args.partition and args.as_of:
        raise SystemExit("give either --as-of or --partition (a partition's as_of is the end of its slot)")
    ok = run_job(
        args.as_of, args.job, verbose=args.verbose, partition_key=args.partition, unit_tests=args.unit_tests
    )
    if ok and not args.no_summary:
        print_summary()
    return 0 if ok else 1


DEMO_MARKER = ".nachfass-demo"


def reset_demo_state(landing: Path, warehouse: Path, outbox: Path) -> None:
    """The demo starts from its own sample exports and a fresh warehouse every time, so it shows the same
    thing on every run and any day (a warehouse that already sent as of a later day would refuse the
    demo's fixed as_of). Only what the demo wrote is removed: a landing folder it did not create is left
    alone and the demo stops instead."""
    if landing.is_dir() and any(landing.iterdir()) and not (landing / DEMO_MARKER).exists():
        raise SystemExit(
            f"{landing} holds exports the demo did not write: point --landing at an empty folder "
            "(the demo rewrites its landing folder on every run)"
        )
    shutil.rmtree(landing, ignore_errors=True)
    for path in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
        path.unlink(missing_ok=True)
    if outbox.is_dir():
        for mail in [*outbox.glob("*.json"), *outbox.glob("*.eml")]:
            mail.unlink()


def cmd_demo(args: SimpleNamespace) -> int:
    """Generate sample exports, run the main job at a fixed as_of, print what happened; then close the
    feedback loop locally and print the A/B results. Every run starts fresh (reset_demo_state)."""
    from dagster_project.resources import parse_as_of
    from nachfass.devtools.datagen.generate import generate_exports

    _export_locations(args)
    landing = paths.landing_dir()
    as_of = parse_as_of(args.as_of)
    reset_demo_state(landing, paths.warehouse_path(), paths.outbox_dir())
    print(f"Generating sample exports for {args.customers:,} customers into {landing} …")
    generate_exports(landing, customers=args.customers, seed=42, as_of=as_of)
    (landing / DEMO_MARKER).write_text("written by `nachfass demo`; rewritten on every demo run\n")
    if not os.environ.get("SENDGRID_API_KEY"):
        print("SENDGRID_API_KEY is not set: mails go to the outbox folder, nothing is sent.")
    print(f"Running the main job as of {as_of.isoformat()} …")
    if not run_job(as_of.isoformat()):
        return 1
    print_summary()
    if args.no_loop:
        return 0
    return 0 if demo_feedback_loop(as_of + timedelta(days=1)) else 1


def demo_feedback_loop(as_of: datetime) -> bool:
    """The closed loop on this machine only: a local SendGrid-compatible server accepts the next day's
    mails and emits signed events for them to the real webhook receiver, whose files the events asset
    loads; the analytics models then answer the A/B question."""
    import secrets

    from nachfass.core.links import signer_from_env
    from nachfass.devtools.event_simulator import generate_keypair, simulate
    from nachfass.devtools.sendgrid_server import run_sandbox
    from nachfass.web.app import run_webapp

    demo_key = "SG.demo-" + secrets.token_urlsafe(16)  # valid for the local server only, never printed
    private_key, public_key = generate_keypair()
    saved = {name: os.environ.get(name) for name in ("SENDGRID_API_KEY", "SENDGRID_API_HOST")}
    print("\nFeedback loop (local only): a SendGrid-compatible server on 127.0.0.1 stands in for SendGrid,")
    print("and the webhook receiver gets signed events for the mails it accepted.")
    with (
        run_sandbox(api_key=demo_key) as sandbox,
        run_webapp(paths.landing_dir(), public_key=public_key, link_signer=signer_from_env()) as web,
    ):
        os.environ["SENDGRID_API_KEY"], os.environ["SENDGRID_API_HOST"] = demo_key, sandbox.url
        try:
            print(f"Running the main job as of {as_of.isoformat()} against {sandbox.url} …")
            if not run_job(as_of.isoformat()):
                return False
            counts = simulate(
                sandbox.url, f"{web.url}/webhooks/sendgrid", private_key, now=as_of + timedelta(hours=6)
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    print(
        f"Events posted to the webhook: {counts.get('events', 0):,} for {counts.get('messages', 0):,} mails"
    )
    from nachfass.devtools.shop_simulator import simulate_orders

    orders = simulate_orders(paths.warehouse_path(), paths.landing_dir())
    print(f"Simulated shop: {orders} customers who clicked came back and ordered (a new orders export file)")
    later = as_of + timedelta(days=3)  # after every simulated order (clicks + up to 20 h)
    print(f"Loading events and refreshing analytics as of {later.isoformat()} …")
    if not run_job(later.isoformat(), job_name="events_job"):
        return False
    from nachfass.core.report import build_report

    page = build_report(paths.warehouse_path(), paths.data_dir() / "report")
    print(f"Campaign report (one HTML page, opens offline): {page}")
    print_ab_results()
    return True


AB_QUERY = """
select experiment_id, step, variant, n_assigned, n_sent, n_delivered, n_opened, n_clicked, n_converted,
       round(conversion_rate, 4) as conversion_rate, round(lift, 3) as lift, round(p_value, 4) as p_value,
       round(seq_p_value, 4) as seq_p_value, round(srm_p_value, 4) as srm_p_value, is_winner
from analytics.ab_results
order by experiment_id, step, variant
"""


def print_ab_results() -> None:
    from nachfass.core import engine

    with engine.connect(read_only=True) as conn:
        cursor = conn.execute(AB_QUERY)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    print("\nA/B results (analytics.ab_results):")
    widths = [
        max(len(str(n)), *(len(str(r[i])) for r in rows)) if rows else len(n) for i, n in enumerate(names)
    ]
    print("  " + "  ".join(str(n).ljust(w) for n, w in zip(names, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))


def cmd_erase(args: SimpleNamespace) -> int:
    """DSGVO erasure. A command, not a Dagster job, on purpose: a job's run config (with the address)
    would stay in Dagster's run history, which is exactly what erasure must not leave behind."""
    from dagster_project.resources import parse_as_of
    from nachfass.core import engine
    from nachfass.privacy.erasure import ErasureError, compact_postgres, compact_warehouse, erase_person

    _export_locations(args)
    client = None
    api_key = os.environ.get("SENDGRID_API_KEY")
    if api_key:
        import sendgrid

        from dagster_project.resources import SendGridResource

        client = sendgrid.SendGridAPIClient(api_key=api_key, host=SendGridResource().resolved_host())
    as_of = parse_as_of(args.as_of) if args.as_of else datetime.now(UTC)
    on_postgres = engine.current_engine() == "postgres"
    staging_file = paths.staging_path()
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(engine.connect())
        staging = None
        if on_postgres and staging_file.exists():
            # the local copy of the exports the PostgreSQL engine parses in holds the person too
            staging = stack.enter_context(
                engine.staging(staging_file, log=lambda message: print(message, file=sys.stderr))
            )
        try:
            report = erase_person(
                conn,
                email=args.email,
                customer_id=args.customer_id,
                outbox_dir=paths.outbox_dir(),
                landing_dir=paths.landing_dir(),
                sendgrid_client=client,
                now=as_of,
                staging=staging,
                copies=_copy_places(),
            )
        except (ErasureError, ValueError) as exc:  # ValueError: a broken copies.json, before anything
            print(f"erase: {exc}", file=sys.stderr)
            return 1
        if on_postgres and "pg_catalog.pg_statistic" not in compact_postgres(conn):
            print(
                "warning: the column statistics (pg_catalog.pg_statistic) may still hold old samples of "
                "the address: only a superuser or the database's owner can rewrite them "
                "(VACUUM FULL pg_catalog.pg_statistic)",
                file=sys.stderr,
            )
        on_spark = engine.dbt_engine() == "spark"
        if on_spark:
            from nachfass.core.warehouse import spark

            rebuilt_as_of = spark.last_build_as_of(conn)
    if on_spark:
        # Spark's tables are copies of PostgreSQL's and models built from them: replace them all now
        print("replacing Spark's copies (sources pushed again, models rebuilt) …", file=sys.stderr)
        spark_report = spark.rebuild_after_erasure(rebuilt_as_of)
    # Deleted rows stay in DuckDB's file blocks until rewritten: copy the live data into a fresh file.
    if on_postgres:
        if staging is not None:
            compact_warehouse(staging_file)
    else:
        compact_warehouse(paths.warehouse_path())
    print(f"erased: {report.emails} address(es), {report.customer_ids} customer id(s)")
    for table, n in sorted(report.rows_deleted.items()):
        print(f"  deleted {n:>6} rows from {table}")
    for table, n in sorted(report.staging_rows_deleted.items()):
        print(f"  deleted {n:>6} rows from {table} in the staging file {paths.staging_path()}")
    print(f"  pseudonymised {report.ledger_rows_pseudonymised} ledger rows (the address stays suppressed)")
    print(f"  deleted {report.outbox_files_deleted} outbox files")
    for copy, n in sorted(report.copy_rows_deleted.items()):
        print(f"  deleted {n:>6} rows from the replay/backtest copy {copy} (rewritten)")
    if report.copy_rows_deleted or report.copy_outbox_files_deleted:
        print(f"  deleted {report.copy_outbox_files_deleted} outbox files of replays and backtests")
    if report.copy_spill_files_deleted:
        n = report.copy_spill_files_deleted
        print(f"  deleted {n} spill files a replay or backtest left when it died")
    if on_spark:
        built = f", every model rebuilt as of {rebuilt_as_of}" if rebuilt_as_of is not None else ""
        print(f"  Spark: {len(spark_report.rows)} source tables replaced from PostgreSQL{built}")
    print(
        f"  removed {report.event_lines_removed} SendGrid event lines from {report.event_files_rewritten} "
        f"landing files, deleted {report.consent_files_deleted} unsubscribe-page consent files"
    )
    print(f"  erasure recorded as of {as_of.isoformat()}")
    print(
        f"  SendGrid erasure requests: {report.sendgrid_requests}"
        + ("" if api_key else " (SENDGRID_API_KEY not set: request SendGrid's erasure separately)")
    )
    return 0


def _copy_places():
    """Where replays, backtests and diffs wrote copies of the exports: the default folders (a diff without
    --keep works in $NACHFASS_DATA/diff and removes its folder, unless it was killed) and what
    $NACHFASS_DATA/copies.json records (nachfass/privacy/copies.py); never the live warehouse or outbox."""
    from nachfass.privacy.copies import CopyPlaces, registered

    data = paths.data_dir()
    places = registered(data, prune=True)
    return CopyPlaces(
        folders=(data / "replay", data / "backtest", data / "diff", *places.folders),
        warehouses=places.warehouses,
        outboxes=places.outboxes,
        exclude=frozenset({paths.warehouse_path(), paths.staging_path(), paths.outbox_dir().resolve()}),
    )


def cmd_replay(args: SimpleNamespace) -> int:
    """Replay a period's ticks into a fresh warehouse (outbox only) and print the per-day table."""
    from dagster_project.resources import parse_as_of
    from nachfass.core.replay import ReplayError, format_daily, live_erasures, parse_every, replay
    from nachfass.privacy.copies import register as register_copies

    data = paths.data_dir()
    warehouse = Path(args.warehouse or data / "replay" / "warehouse.duckdb")
    outbox = Path(args.outbox or data / "replay" / "outbox")
    try:
        # the live warehouse's erasures, read before the environment names the replay's warehouse
        erasures = live_erasures()
        # before anything is written: an erasure must find the copy wherever it is (privacy/copies.py)
        register_copies(data, warehouses=[warehouse], outboxes=[outbox])
    except (ReplayError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    # dbt's profiles.yml reads the warehouse from the environment, like every other command
    os.environ[paths.ENV_WAREHOUSE] = str(warehouse.resolve())
    try:
        report = replay(
            landing=Path(args.landing or paths.landing_dir()),
            warehouse=warehouse,
            outbox=outbox,
            start=parse_as_of(args.start),
            end=parse_as_of(args.end),
            every=parse_every(args.every),
            in_memory=False if args.on_disk else None,
            erasures=erasures,
        )
    except (ReplayError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    print(f"\n{len(report.ticks)} ticks in {report.seconds:.0f} s; mails per day (shop time):")
    print(format_daily(report.daily))
    print(f"\nWarehouse: {report.warehouse} (replay.decisions: every decision of every tick; mail.sends)")
    print(f"Outbox: {report.outbox} (nothing was sent)")
    return 0


def cmd_backtest(args: SimpleNamespace) -> int:
    """Replay a period with the current and with changed rules; print the comparison as Markdown."""
    from dagster_project.resources import parse_as_of
    from nachfass.core.backtest import LIVE_WAREHOUSE, BacktestError, run_backtest
    from nachfass.core.replay import ReplayError, parse_every
    from nachfass.privacy.copies import register as register_copies

    workdir = Path(args.workdir or paths.data_dir() / "backtest")
    try:
        register_copies(paths.data_dir(), folders=[workdir])  # an erasure finds the copies there
    except ValueError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 1
    # the rates of the live warehouse, on any engine, unless --history names a DuckDB file
    history = Path(args.history).resolve() if args.history else LIVE_WAREHOUSE
    try:
        result = run_backtest(
            rules=args.rules,
            landing=Path(args.landing or paths.landing_dir()),
            start=parse_as_of(args.start),
            end=parse_as_of(args.end),
            every=parse_every(args.every),
            workdir=workdir,
            history=history,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            in_memory=False if args.on_disk else None,
            mail_files=args.mail_files,
        )
    except (BacktestError, ReplayError, ValueError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 1
    text = result.markdown(limit=args.limit)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"backtest: {sum(result.changes.values()):,} triggers change; Markdown in {args.out}")
    else:
        print(text, end="")
    print(f"backtest: {result.seconds:.0f} s; tables backtest.* in {result.warehouse}", file=sys.stderr)
    return 0


def cmd_report(args: SimpleNamespace) -> int:
    """The campaign report as one static HTML page (nachfass/core/report.py)."""
    from nachfass.core.engine import current_engine
    from nachfass.core.report import DEFAULT_DAYS, ReportError, build_report
    from nachfass.core.warehouse.postgres import WarehouseError

    _export_locations(args)
    try:
        backtest = Path(args.backtest) if args.backtest else paths.data_dir() / "backtest" / "results.duckdb"
        # the engine's warehouse (PostgreSQL also beside Spark, whose runs copy the analytics back there),
        # unless --warehouse names a DuckDB file
        on_postgres = current_engine() == "postgres" and not args.warehouse
        warehouse = None if on_postgres else paths.warehouse_path()
        page = build_report(warehouse, Path(args.out), days=args.days or DEFAULT_DAYS, backtest=backtest)
    except (ReportError, WarehouseError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print(f"Campaign report: {page}")
    return 0


def prepare_dagster_home(home: Path | None = None) -> Path:
    """DAGSTER_HOME (default data/dagster_home) with the project's instance settings (config/dagster.yaml:
    the run queue that lets one warehouse writer run at a time). An existing dagster.yaml that differs is
    left alone, with a note, since a deployment may have its own."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or paths.data_dir() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shipped = (paths.CONFIG_DIR / "dagster.yaml").read_text(encoding="utf-8")
    target = home / "dagster.yaml"
    if not target.exists():
        target.write_text(shipped, encoding="utf-8")
    elif target.read_text(encoding="utf-8") != shipped:
        print(f"note: {target} differs from config/dagster.yaml; keeping it", file=sys.stderr)
    return home


def cmd_dev(args: SimpleNamespace) -> int:
    """`dagster dev` on this project with DAGSTER_HOME, locations and the dbt manifest prepared."""
    _export_locations(args)
    home = prepare_dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    ensure_dbt_manifest()
    beside = Path(sys.executable).parent / "dagster"
    dagster = str(beside) if beside.exists() else shutil.which("dagster") or "dagster"
    workspace = str(paths.REPO_ROOT / "workspace.yaml")
    command = [dagster, "dev", "-w", workspace, "-h", args.host, "-p", str(args.port)]
    print(f"DAGSTER_HOME={home}\n+ {' '.join(command)}", flush=True)
    os.execvp(dagster, command)
    return 0  # pragma: no cover (exec does not return)


def cmd_diff(args: SimpleNamespace) -> int:
    import duckdb

    from dagster_project.resources import parse_as_of
    from nachfass.core.diff import DiffError, run_diff
    from nachfass.core.mail.runs import latest_mail_run

    warehouse = Path(args.warehouse).resolve() if args.warehouse else paths.warehouse_path()
    if args.as_of:
        as_of = parse_as_of(args.as_of)
    else:
        last = None
        if warehouse.is_file():
            conn = duckdb.connect(str(warehouse), read_only=True)
            try:
                last = latest_mail_run(conn)
            except duckdb.Error:
                last = None
            finally:
                conn.close()
        if last is None:
            print("diff: no mail run in the warehouse to take the as_of from: give --as-of", file=sys.stderr)
            return 1
        as_of = last[2].replace(tzinfo=UTC) if last[2].tzinfo is None else last[2]
    if args.keep:  # copies of the warehouse kept there: an erasure must find them
        from nachfass.privacy.copies import register as register_copies

        try:
            register_copies(paths.data_dir(), folders=[Path(args.keep)])
        except ValueError as exc:
            print(f"diff: {exc}", file=sys.stderr)
            return 1
    try:
        result = run_diff(warehouse, args.rules, as_of, workdir=Path(args.keep) if args.keep else None)
    except DiffError as exc:
        print(f"diff: {exc}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(result.markdown, encoding="utf-8")
        print(f"diff: {len(result.changes)} decisions change; Markdown in {args.out}")
    else:
        print(result.markdown, end="")
    return 0


def cmd_dbt(argv: list[str]) -> int:
    """`nachfass dbt <dbt arguments>`: dbt in the project folder with the vars every call needs (the
    campaign registry's list, the shop timezone; `--vars` given here are merged on top) and the
    project's profiles.yml, on $NACHFASS_WAREHOUSE or data/warehouse.duckdb."""
    import json
    import subprocess

    from nachfass.core.campaigns import CampaignSettingsError, load_campaigns
    from nachfass.core.dbt import DBT_EXECUTABLE, dbt_vars

    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: nachfass dbt <dbt command and arguments>, "
            "e.g. `nachfass dbt build --select +abandoned_cart`"
        )
        print("  runs dbt in the dbt project with --vars campaigns/shop_timezone (as_of via --vars or now)")
        return 0 if argv else 2
    args = list(argv)
    extra: dict = {}
    if "--vars" in args:
        at = args.index("--vars")
        import yaml  # dbt reads --vars as YAML (JSON is YAML)

        extra = yaml.safe_load(args[at + 1]) or {}
        del args[at : at + 2]
    try:
        load_campaigns(paths.dbt_project_dir() / "models" / "segments", templates_dir=paths.templates_dir())
    except CampaignSettingsError as exc:
        print(f"campaign settings: {exc}", file=sys.stderr)
        return 1
    command = [DBT_EXECUTABLE, *args, "--vars", json.dumps(dbt_vars(**extra))]
    if "--profiles-dir" not in args:
        command += ["--profiles-dir", str(paths.dbt_project_dir())]
    env = {**os.environ, paths.ENV_WAREHOUSE: str(paths.warehouse_path())}
    return subprocess.call(command, cwd=paths.dbt_project_dir(), env=env)


def cmd_campaigns(args: SimpleNamespace) -> int:
    """List the registry (validated, templates checked), or print its dbt vars or JSON Schema."""
    import json

    from nachfass.core.campaigns import CampaignSettingsError, campaign_json_schema, load_campaigns
    from nachfass.core.dbt import dbt_vars

    if args.action == "schema":
        print(json.dumps(campaign_json_schema(), indent=2, ensure_ascii=False))
        return 0
    if args.action == "dbt-vars":
        print(json.dumps(dbt_vars()))
        return 0
    try:
        campaigns = load_campaigns(
            paths.dbt_project_dir() / "models" / "segments", templates_dir=paths.templates_dir()
        )
    except CampaignSettingsError as exc:
        print(f"campaign settings: {exc}", file=sys.stderr)
        return 1
    if args.action == "build":
        if args.name not in campaigns:
            print(f"no campaign {args.name!r}: the registry has {', '.join(campaigns)}", file=sys.stderr)
            return 1
        # With only_campaigns, mail_candidates refs this one segment: +mail_candidates is its whole path.
        extra = json.dumps({"only_campaigns": [args.name], **({"as_of": args.as_of} if args.as_of else {})})
        _export_locations(args)
        return cmd_dbt(["build", "--select", "+mail_candidates", "--vars", extra])
    for name, campaign in campaigns.items():
        steps = ", ".join(sorted(campaign.steps))
        print(
            f"{name:<20} {campaign.consent_policy:<22} cadence {campaign.cadence:<17} "
            f"languages {','.join(campaign.languages):<6} steps {steps}"
        )
    return 0


# --- the command line (typer) ---------------------------------------------------------------------------

app = typer.Typer(
    name="nachfass",
    help="Warehouse-native follow-up mails: exports → DuckDB → dbt → render → send → ledger.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

LandingOpt = Annotated[
    str | None,
    typer.Option(help="landing folder with the exports (default $NACHFASS_LANDING or data/landing)"),
]
WarehouseOpt = Annotated[
    str | None, typer.Option(help="DuckDB file (default $NACHFASS_WAREHOUSE or data/warehouse.duckdb)")
]
OnDiskOpt = Annotated[
    bool,
    typer.Option(
        "--on-disk",
        help="run the ticks on the warehouse file, not on a copy in memory (slower; chosen anyway when "
        "the copy would not fit under NACHFASS_DUCKDB_MEMORY_LIMIT)",
    ),
]
OutboxOpt = Annotated[
    str | None, typer.Option(help="outbox folder (default $NACHFASS_OUTBOX or data/outbox)")
]


def _done(code: int) -> None:
    """A command's exit code: 0 returns, anything else ends the process with it."""
    if code:
        raise typer.Exit(code)


PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"nachfass {version('nachfass')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Warehouse-native follow-up mails for online shops."""


@app.command()
def demo(
    landing: LandingOpt = None,
    warehouse: WarehouseOpt = None,
    outbox: OutboxOpt = None,
    customers: Annotated[int, typer.Option(help="size of the generated shop")] = 2000,
    as_of: Annotated[str, typer.Option(help="logical time of the main run (ISO 8601)")] = DEFAULT_DEMO_AS_OF,
    no_loop: Annotated[bool, typer.Option("--no-loop", help="skip the local feedback loop")] = False,
) -> None:
    """Generate sample exports and run everything end to end (outbox unless SENDGRID_API_KEY is set)."""
    _done(cmd_demo(SimpleNamespace(**locals())))


@app.command()
def generate(
    landing: LandingOpt = None,
    customers: Annotated[int, typer.Option(help="the size knob: number of customers")] = 2000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same exports)")] = 42,
    as_of: Annotated[
        str, typer.Option(help="the 'now' of the generated world (ISO 8601)")
    ] = DEFAULT_DEMO_AS_OF,
    days: Annotated[int, typer.Option(help="days of history")] = 90,
    format: Annotated[str, typer.Option(help="csv or parquet")] = "csv",
) -> None:
    """Write sample shop exports (export contract v1)."""
    if format not in ("csv", "parquet"):
        raise typer.BadParameter("csv or parquet", param_hint="--format")
    _done(cmd_generate(SimpleNamespace(**locals())))


@app.command()
def run(
    landing: LandingOpt = None,
    warehouse: WarehouseOpt = None,
    outbox: OutboxOpt = None,
    as_of: Annotated[str | None, typer.Option(help="logical time (ISO 8601); default now")] = None,
    job: Annotated[str, typer.Option(help="the Dagster job to run")] = "nachfass_job",
    partition: Annotated[
        str | None,
        typer.Option(
            help="a slot of a scheduled job, e.g. 2026-11-24-10:00 (frequent) or 2026-11-24 (daily); "
            "its as_of is the slot's end"
        ),
    ] = None,
    no_summary: Annotated[bool, typer.Option("--no-summary", help="do not print the summary")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="show every log line (incl. dbt's)")] = False,
    unit_tests: Annotated[
        bool,
        typer.Option(
            "--unit-tests",
            help="run dbt's unit tests even if they passed for this state of the dbt project "
            "(otherwise they run after an edit only)",
        ),
    ] = False,
) -> None:
    """Run a job for a landing folder, warehouse and as_of time."""
    _done(cmd_run(SimpleNamespace(**locals())))


@app.command()
def replay(
    start: Annotated[str, typer.Option("--from", help="first tick (ISO 8601)")],
    end: Annotated[str, typer.Option("--to", help="last tick, inclusive (ISO 8601)")],
    landing: LandingOpt = None,
    warehouse: Annotated[
        str | None, typer.Option(help="a new DuckDB file (default data/replay/warehouse.duckdb)")
    ] = None,
    outbox: Annotated[str | None, typer.Option(help="outbox folder (default data/replay/outbox)")] = None,
    every: Annotated[str, typer.Option(help="tick spacing: 15m, 1h, 1d …")] = "1h",
    on_disk: OnDiskOpt = False,
) -> None:
    """Run a period's ticks in order into a fresh warehouse, as live runs would have (outbox only)."""
    _done(cmd_replay(SimpleNamespace(**locals())))


@app.command()
def backtest(
    rules: Annotated[
        str, typer.Option(help="the changed rules: a dbt project folder, or a git ref of this repository")
    ],
    start: Annotated[str, typer.Option("--from", help="first tick (ISO 8601)")],
    end: Annotated[str, typer.Option("--to", help="last tick, inclusive (ISO 8601)")],
    every: Annotated[str, typer.Option(help="tick spacing: 15m, 1h, 1d …")] = "1h",
    landing: LandingOpt = None,
    history: Annotated[
        str | None,
        typer.Option(help="warehouse whose mail performance gives the rates (default the live warehouse)"),
    ] = None,
    workdir: Annotated[
        str | None, typer.Option(help="folder for both replays and results.duckdb (default data/backtest)")
    ] = None,
    out: Annotated[str | None, typer.Option(help="write the Markdown here instead of printing it")] = None,
    limit: Annotated[int, typer.Option(help="changed triggers listed in the Markdown")] = 30,
    on_disk: OnDiskOpt = False,
    mail_files: Annotated[
        bool,
        typer.Option(
            help="also write each side's mails to WORKDIR/<side>/outbox (.eml and SendGrid JSON); "
            "~1 GB a day and side at 100,000 customers"
        ),
    ] = False,
) -> None:
    """Replay a period with the current rules and with changed ones: mails, caps, estimates, who changes."""
    _done(cmd_backtest(SimpleNamespace(**locals())))


@app.command()
def report(
    out: Annotated[str, typer.Option(help="folder for the page (index.html)")],
    warehouse: WarehouseOpt = None,
    days: Annotated[
        int | None, typer.Option(help="send days shown, ending at the as_of (default 28)")
    ] = None,
    backtest: Annotated[
        str | None,
        typer.Option(help="a backtest's results.duckdb to show side by side (default data/backtest/…)"),
    ] = None,
) -> None:
    """The campaign report: one static HTML page with charts, as of the analytics' logical time."""
    _done(cmd_report(SimpleNamespace(**locals())))


@app.command()
def diff(
    rules: Annotated[
        str, typer.Option(help="the changed rules: a dbt project folder, or a git ref of this repository")
    ],
    warehouse: WarehouseOpt = None,
    as_of: Annotated[
        str | None, typer.Option(help="logical time to compare at (ISO 8601); default the last mail run's")
    ] = None,
    out: Annotated[str | None, typer.Option(help="write the Markdown here instead of printing it")] = None,
    keep: Annotated[
        str | None, typer.Option(help="keep the two warehouse copies here (diff.changes for SQL)")
    ] = None,
) -> None:
    """What a rule change does at one as_of: who gains or loses which mail and why, as Markdown."""
    _done(cmd_diff(SimpleNamespace(**locals())))


@app.command()
def dev(
    landing: LandingOpt = None,
    warehouse: WarehouseOpt = None,
    outbox: OutboxOpt = None,
    host: Annotated[str, typer.Option(help="interface for the Dagster UI")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port for the Dagster UI")] = 3000,
) -> None:
    """Start `dagster dev` with DAGSTER_HOME and the run queue prepared."""
    _done(cmd_dev(SimpleNamespace(**locals())))


@app.command()
def erase(
    landing: LandingOpt = None,
    warehouse: WarehouseOpt = None,
    outbox: OutboxOpt = None,
    email: Annotated[str | None, typer.Option(help="the person's address")] = None,
    customer_id: Annotated[str | None, typer.Option(help="the person's customer id")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="logical time of the erasure (ISO 8601), stamped on mail.erasures; default now"),
    ] = None,
) -> None:
    """DSGVO erasure of one person (by --email or --customer-id)."""
    if (email is None) == (customer_id is None):
        raise typer.BadParameter("give exactly one of --email and --customer-id")
    _done(cmd_erase(SimpleNamespace(**locals())))


@app.command()
def campaigns(
    action: Annotated[str, typer.Argument(help="list | build | dbt-vars | schema")] = "list",
    name: Annotated[
        str | None, typer.Argument(help="build: the campaign to build through eligibility")
    ] = None,
    warehouse: WarehouseOpt = None,
    as_of: Annotated[str | None, typer.Option(help="build: logical time (ISO 8601); default now")] = None,
) -> None:
    """The campaign registry: list it (validated); build one campaign through eligibility by name
    (its segment and mail_candidates, nothing of the others); or print its dbt vars or JSON Schema."""
    if action not in ("list", "build", "dbt-vars", "schema"):
        raise typer.BadParameter("list, build, dbt-vars or schema", param_hint="ACTION")
    if action == "build" and not name:
        raise typer.BadParameter("build needs the campaign's name", param_hint="NAME")
    _done(cmd_campaigns(SimpleNamespace(**locals())))


@app.command(context_settings=PASSTHROUGH, add_help_option=False)
def dbt(ctx: typer.Context) -> None:
    """dbt with the campaign registry's vars, e.g. `nachfass dbt build --select +abandoned_cart`."""
    _done(cmd_dbt(list(ctx.args)))


preview_app = typer.Typer(
    help="Render mails with sample data (or a customer's real candidate row) to check them before sending.",
    no_args_is_help=True,
)
app.add_typer(preview_app, name="preview")
TemplatesOpt = Annotated[
    Path | None, typer.Option(help="templates folder (default $NACHFASS_TEMPLATES or mail_templates/)")
]
ShopConfigOpt = Annotated[Path | None, typer.Option(help="shop settings (default config/shop.yaml)")]


@preview_app.command("render")
def preview_render(
    campaign: Annotated[str, typer.Option(help="the campaign (see `nachfass campaigns`)")],
    step: Annotated[str, typer.Option(help="the step, e.g. 1")],
    out: Annotated[Path, typer.Option(help="folder for .html, .txt and .headers.txt")],
    variant: Annotated[str | None, typer.Option(help="default: control (or the candidate's variant)")] = None,
    locale: Annotated[str | None, typer.Option(help="default: de-DE (or the candidate's locale)")] = None,
    customer_id: Annotated[str | None, typer.Option(help="render this customer's candidate row")] = None,
    warehouse: Annotated[Path | None, typer.Option(help="DuckDB file for --customer-id")] = None,
    templates_dir: TemplatesOpt = None,
    shop_config: ShopConfigOpt = None,
) -> None:
    """Render one mail (sample data, or a real candidate with --customer-id)."""
    from nachfass.devtools import preview

    _done(
        preview.render_one(
            campaign, step, out, variant=variant, locale=locale, customer_id=customer_id, warehouse=warehouse,
            templates_dir=templates_dir or paths.templates_dir(), shop_config=shop_config,
        )
    )  # fmt: skip


@preview_app.command("gallery")
def preview_gallery(
    out: Annotated[Path, typer.Option(help="folder for index.html and the mails")],
    screenshots: Annotated[
        bool, typer.Option("--screenshots", help="also desktop/mobile/dark PNGs (headless Chromium)")
    ] = False,
    templates_dir: TemplatesOpt = None,
    shop_config: ShopConfigOpt = None,
) -> None:
    """A static index.html with every campaign, step, variant and locale."""
    from nachfass.devtools import preview

    _done(
        preview.gallery(
            out, screenshots=screenshots, templates_dir=templates_dir or paths.templates_dir(),
            shop_config=shop_config,
        )
    )  # fmt: skip


@preview_app.command("check")
def preview_check(templates_dir: TemplatesOpt = None, shop_config: ShopConfigOpt = None) -> None:
    """Compile and render every template against sample data."""
    from nachfass.devtools import preview

    _done(preview.check(templates_dir=templates_dir or paths.templates_dir(), shop_config=shop_config))


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 3030,
    api_key: Annotated[
        str | None, typer.Option(help="accept only this key (default: any Bearer key)")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="also append accepted mails to DIR/messages.ndjson")
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="added latency per request")] = 0.0,
    latency_jitter_ms: Annotated[float, typer.Option(help="random extra latency, up to this")] = 0.0,
    fail_rate_429: Annotated[float, typer.Option(help="share of requests answered 429")] = 0.0,
    fail_rate_500: Annotated[float, typer.Option(help="share of requests answered 500")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="close without answer, mail not stored")] = 0.0,
    drop_after_accept_rate: Annotated[
        float, typer.Option(help="store the mail, then close without answer (ambiguous for the client)")
    ] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="store, then sleep --timeout-s, close")] = 0.0,
    timeout_s: Annotated[float, typer.Option(help="the sleep of --timeout-rate")] = 5.0,
    rate_limit_per_s: Annotated[int, typer.Option(help="429 beyond this many requests per second")] = 0,
) -> None:
    """The local SendGrid-compatible Mail Send API (v3) with fault injection (development, tests)."""
    from nachfass.devtools.sendgrid_server import Faults, serve

    faults = Faults(
        latency_ms=latency_ms, latency_jitter_ms=latency_jitter_ms, fail_rate_429=fail_rate_429,
        fail_rate_500=fail_rate_500, drop_rate=drop_rate, drop_after_accept_rate=drop_after_accept_rate,
        timeout_rate=timeout_rate, timeout_s=timeout_s, rate_limit_per_s=rate_limit_per_s,
    )  # fmt: skip
    serve(host, port, api_key=api_key, store=store, faults=faults)


@app.command()
def webapp(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8025,
    landing: Annotated[Path | None, typer.Option(help="landing folder (default $NACHFASS_LANDING)")] = None,
    replay_window: Annotated[
        int | None, typer.Option(help="seconds a signed webhook call stays valid (default 600)")
    ] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="larger bodies get 413")] = None,
    request_deadline: Annotated[float | None, typer.Option(help="seconds for a whole request")] = None,
    max_connections: Annotated[int | None, typer.Option(help="beyond: 503")] = None,
    shop_config: ShopConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING …")] = "INFO",
) -> None:
    """The web service: SendGrid Event Webhook receiver, unsubscribe and preference pages."""
    from nachfass.web import app as web

    limits = {
        name: value
        for name, value in (
            ("replay_window", replay_window),
            ("max_body_bytes", max_body_bytes),
            ("request_deadline", request_deadline),
            ("max_connections", max_connections),
        )
        if value is not None
    }
    _done(
        web.serve(
            host, port, landing=landing, shop_config=shop_config,
            log_level=log_level, **limits,
        )
    )  # fmt: skip


@app.command("simulate-events")
def simulate_events(
    sandbox_url: Annotated[str, typer.Option(help="the local SendGrid server")] = "http://127.0.0.1:3030",
    webhook_url: Annotated[
        str, typer.Option(help="the webhook receiver")
    ] = "http://127.0.0.1:8025/webhooks/sendgrid",
    private_key_file: Annotated[Path | None, typer.Option(help="PEM file of the P-256 signing key")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
    rates: Annotated[
        Path | None, typer.Option(help='JSON file: {"control": {"open": 0.3, ...}, "b": {...}}')
    ] = None,
    batch_size: Annotated[int, typer.Option(help="events per webhook call")] = 500,
    write_keypair: Annotated[
        Path | None, typer.Option(help="write a new private key (PEM) to FILE, print its public key, exit")
    ] = None,
) -> None:
    """Post signed, simulated SendGrid events for the mails the local sandbox accepted (development)."""
    from nachfass.devtools import event_simulator

    if write_keypair:
        typer.echo(event_simulator.write_keypair(write_keypair))
        return
    if not private_key_file:
        raise typer.BadParameter(
            "required (create one with --write-keypair FILE)", param_hint="--private-key-file"
        )
    _done(
        event_simulator.run(
            sandbox_url, webhook_url, private_key_file, seed=seed, rates_file=rates, batch_size=batch_size
        )
    )


def main(argv: list[str] | None = None) -> int:
    """The console entry point; returns the exit code (tests call it with a list of arguments)."""
    try:
        app(args=argv, prog_name="nachfass")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)  # raise SystemExit("message"): the message, exit code 1
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
