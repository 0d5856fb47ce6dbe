"""Jobs, their time-window partitions and schedules. Both scheduled jobs run the *same* assets with
different selections and a campaign filter, so there is one way to render and send, not copies.

Each scheduled job is partitioned in the shop's timezone: `frequent_mails_job` into 15-minute slots,
`daily_mails_job` into days that turn at 09:00. A slot's run decides as of the slot's *end* (the moment its
schedule tick fires), so a missed slot can be backfilled later from the UI or `dagster job backfill` and
decides exactly as the live tick would have: expiry, quiet hours and caps apply at the slot's time.

Every job that writes the warehouse carries the tag `nachfass/warehouse=writer`; the shipped Dagster
instance settings (config/dagster.yaml) let one such run at a time, so sensor runs, ticks and backfill runs
queue in order instead of colliding on DuckDB's single-writer lock.

Schedules are created STOPPED: a fresh `dagster dev` sends nothing until someone turns them on (UI:
Automation → schedule → toggle, or `dagster schedule start frequent_mails_schedule`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from dagster_project.assets.events import SENDGRID_EVENTS
from dagster_project.assets.ingest import RAW_KEYS
from dagster_project.assets.mail import MAIL_CANDIDATES
from nachfass.core.cadence import (
    DAILY_CAMPAIGNS,
    DAILY_CRON,
    FREQUENT_CAMPAIGNS,
    FREQUENT_CRON,
    slot_as_of,
    slot_partitions,
)

RENDER_OP = "mail__rendered_mails"
SEND_OP = "mail__sent_mails"
DBT_OP = "nachfass_dbt_assets"

# The run-queue tag of every job that writes the warehouse: config/dagster.yaml limits it to one run at a
# time (DuckDB allows one writing process per file).
WRITER_TAG = {"nachfass/warehouse": "writer"}

ingest_selection = dg.AssetSelection.assets(*RAW_KEYS.values())
events_selection = dg.AssetSelection.assets(SENDGRID_EVENTS)
mail_selection = dg.AssetSelection.groups("mail")
candidates_selection = dg.AssetSelection.assets(MAIL_CANDIDATES).upstream()

# Inside a run the steps run one at a time in one process as well (README "One writer at a time").
_serial = dg.in_process_executor


def _campaign_config(campaigns: list[str]) -> dict:
    ops: dict = {op: {"config": {"campaigns": campaigns}} for op in (RENDER_OP, SEND_OP)}
    # Scheduled runs skip the whole-history staging tests (bench/README_dbt.md); nachfass_job runs them.
    ops[DBT_OP] = {"config": {"skip_full_history_tests": True}}
    return {"ops": ops}


def clock_config(as_of: datetime) -> dict:
    """Run config that sets the run's logical time (the `clock` resource)."""
    return {"resources": {"clock": {"config": {"as_of": as_of.astimezone(UTC).isoformat()}}}}


def _partitioned_config(
    partitions: dg.TimeWindowPartitionsDefinition, campaigns: list[str]
) -> dg.PartitionedConfig:
    def run_config(partition_key: str) -> dict:
        return {**_campaign_config(campaigns), **clock_config(slot_as_of(partitions, partition_key))}

    return dg.PartitionedConfig(partitions_def=partitions, run_config_for_partition_key_fn=run_config)


frequent_partitions = slot_partitions(FREQUENT_CRON, "%Y-%m-%d-%H:%M")
daily_partitions = slot_partitions(DAILY_CRON, "%Y-%m-%d")

main_job = dg.define_asset_job(
    "nachfass_job",
    selection=dg.AssetSelection.all(),
    executor_def=_serial,
    tags=WRITER_TAG,
    description="Everything, end to end, all campaigns: ingest → events → dbt build → render → send.",
)

frequent_job = dg.define_asset_job(
    "frequent_mails_job",
    selection=ingest_selection | events_selection | candidates_selection | mail_selection,
    executor_def=_serial,
    config=_partitioned_config(frequent_partitions, FREQUENT_CAMPAIGNS),
    tags=WRITER_TAG,
    description="Every 15 min (one partition per slot, as of the slot's end): new exports and events, "
    "eligibility, then cart, checkout recovery, order thanks and shipping mails.",
)

daily_job = dg.define_asset_job(
    "daily_mails_job",
    selection=dg.AssetSelection.all(),
    executor_def=_serial,
    config=_partitioned_config(daily_partitions, DAILY_CAMPAIGNS),
    tags=WRITER_TAG,
    description="09:00 daily (one partition per day, as of 09:00 the next day): everything incl. "
    "analytics, then review requests, cross-sell, reactivation and support follow-ups.",
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=ingest_selection,
    executor_def=_serial,
    tags=WRITER_TAG,
    description="Load new export files (started by the landing sensor).",
)

events_job = dg.define_asset_job(
    "events_job",
    # everything but the mail group: events feed intermediate models (engagement, suppressions) too
    selection=dg.AssetSelection.all() - mail_selection,
    executor_def=_serial,
    tags=WRITER_TAG,
    description="Load new SendGrid event files and refresh the analytics models (events sensor).",
)

schedules = [
    dg.build_schedule_from_partitioned_job(
        frequent_job,
        name="frequent_mails_schedule",
        description="Runs frequent_mails_job for each 15-minute slot as it ends (as_of = slot end).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    ),
    dg.build_schedule_from_partitioned_job(
        daily_job,
        name="daily_mails_schedule",
        hour_of_day=9,
        description="Runs daily_mails_job at 09:00 shop time for the day that just ended (as_of = 09:00).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    ),
]
JOB_CAMPAIGN_CONFIG = {
    frequent_job.name: _campaign_config(FREQUENT_CAMPAIGNS),
    daily_job.name: _campaign_config(DAILY_CAMPAIGNS),
}
JOB_PARTITIONS = {frequent_job.name: frequent_partitions, daily_job.name: daily_partitions}
jobs = [main_job, frequent_job, daily_job, ingest_job, events_job]
