"""Event ingest as a Dagster asset: landing/sendgrid_events/*.ndjson → raw.sendgrid_events."""

import dagster as dg

from dagster_project.resources import LandingResource, WarehouseResource
from nachfass.core import engine
from nachfass.core.events import load_events
from nachfass.core.schema import prepare_warehouse
from nachfass.core.warehouse.pg_ledger import reconcile_unknown
from nachfass.core.warehouse.postgres import EVENTS_TABLE, push_tables

# The key of the dbt source `events.sendgrid_events`, so the analytics models hang below this asset.
SENDGRID_EVENTS = dg.AssetKey(["events", "sendgrid_events"])


@dg.asset(
    key=SENDGRID_EVENTS,
    group_name="events",
    kinds={"duckdb"},
    description="SendGrid events written by the webhook receiver, deduplicated on sg_event_id; reconciles "
    "`unknown` ledger rows whose send id shows up in an event.",
)
def sendgrid_events(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource
) -> dg.MaterializeResult:
    if warehouse.engine() == "postgres":
        # parsed and checked in the local staging file, then copied (nachfass/core/warehouse/postgres.py)
        with engine.staging(warehouse.staging_path(), log=context.log.warning) as duck:
            prepare_warehouse(duck)
            report = load_events(duck, landing.resolved_path())
            with warehouse.connect() as conn:
                prepare_warehouse(conn)
                push_tables(duck, conn.raw, tables=[EVENTS_TABLE])
                report.reconciled = reconcile_unknown(conn.raw)
    with warehouse.connect() as conn:
        if warehouse.engine() != "postgres":
            prepare_warehouse(conn)
            report = load_events(conn, landing.resolved_path())
        total = conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0]
        by_type = dict(
            conn.execute(
                "select event, count(*) from raw.sendgrid_events group by event order by event"
            ).fetchall()
        )
    if report.reconciled:
        context.log.info(f"{report.reconciled} `unknown` ledger rows reconciled to `sent` from events")
    if report.quarantined:
        context.log.warning(
            f"{report.quarantined} event lines quarantined (see raw.event_quarantine for line and reason)"
        )
    if report.files_unreadable:
        context.log.error(f"{report.files_unreadable} event files could not be read; retried next run")
    return dg.MaterializeResult(
        metadata={
            "files_loaded": report.files_loaded,
            "events_read": report.events_read,
            "events_new": report.events_new,
            "duplicates_ignored": report.duplicates,
            "events_quarantined": report.quarantined,
            "files_unreadable": report.files_unreadable,
            "unknown_sends_reconciled": report.reconciled,
            "events_in_table": dg.MetadataValue.int(int(total)),
            "events_by_type": dg.MetadataValue.json(by_type),
        }
    )
