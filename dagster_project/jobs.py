"""Jobs, their time-window partitions and schedules. The scheduled mail jobs come from the campaign
registry: one per cadence (`cadence` in the segment YAML), each with its campaigns as a filter on the same
render and send assets, so there is one way to render and send, not copies.

Each scheduled job is partitioned in the shop's timezone by its cron: `frequent_mails_job` into 15-minute
slots, `daily_mails_job` into days that turn at 09:00, `mails_<cron>_job` for any other cadence. A slot's
run decides as of the slot's *end* (the moment its schedule tick fires), so a missed slot can be backfilled
later from the UI or `dagster job backfill` and decides exactly as the live tick would have: expiry, quiet
hours and caps apply at the slot's time.

Every job that writes the warehouse carries the tag `nachfass/warehouse=writer`; the shipped Dagster
instance settings (config/dagster.yaml) let one such run at a time, so sensor runs, ticks and backfill runs
queue in order instead of colliding on DuckDB's single-writer lock.

Schedules are created STOPPED: a fresh `dagster dev` sends nothing until someone turns them on (UI:
Automation → schedule → toggle, or `dagster schedule start frequent_mails_schedule`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from dagster_project.assets.events import SENDGRID_EVENTS
from dagster_project.assets.ingest import RAW_KEYS
from dagster_project.assets.mail import MAIL_CANDIDATES
from dagster_project.dbt_project import models_only_for_campaigns
from nachfass.core.cadence import slot_as_of, slot_partitions
from nachfass.core.campaigns import CADENCES, campaigns_by_cron, load_campaigns

RENDER_OP = "mail__rendered_mails"
SEND_OP = "mail__sent_mails"
DBT_OP = "nachfass_dbt_assets"

# The run-queue tag of every job that writes the warehouse: config/dagster.yaml limits it to one run at a
# time (DuckDB allows one writing process per file).
WRITER_TAG = {"nachfass/warehouse": "writer"}

ingest_selection = dg.AssetSelection.assets(*RAW_KEYS.values())
events_selection = dg.AssetSelection.assets(SENDGRID_EVENTS)
mail_selection = dg.AssetSelection.groups("mail")


def other_campaigns_models(campaigns: list[str], registry: list[str]) -> dg.AssetSelection:
    """What a job that sends only `campaigns` leaves out of its build: the segments of the registry's other
    campaigns and the models only those need (``models_only_for_campaigns``; e.g. the order gaps of
    reactivation, the carts of the cart campaigns). `mail_candidates` still decides over every campaign: a
    left-out segment is read as its last build left it, and the job that sends that campaign builds it
    afresh before it sends."""
    others = set(registry) - set(campaigns)
    segments = [dg.AssetKey(["segments", name]) for name in others]
    only_for_others = [
        dg.AssetKey(list(key))
        for key, needed_by in models_only_for_campaigns().items()
        if needed_by <= others
    ]
    return dg.AssetSelection.assets(*segments, *only_for_others)


def candidates_selection_for(campaigns: list[str], registry: list[str]) -> dg.AssetSelection:
    """What a job that sends only `campaigns` builds up to `mail_candidates`: every input of it except
    ``other_campaigns_models`` (at 1 M customers this saves the 15-minute run ~15 s of whole-history work
    for the daily campaigns: docs/benchmarks.md)."""
    left_out = other_campaigns_models(campaigns, registry)
    parents = dg.AssetSelection.assets(MAIL_CANDIDATES).upstream(depth=1, include_self=False) - left_out
    return dg.AssetSelection.assets(MAIL_CANDIDATES) | (parents.upstream() - left_out)


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


main_job = dg.define_asset_job(
    "nachfass_job",
    selection=dg.AssetSelection.all(),
    executor_def=_serial,
    tags=WRITER_TAG,
    description="Everything, end to end, all campaigns: ingest → events → dbt build → render → send.",
)


@dataclass(frozen=True)
class MailJobSpec:
    """One scheduled mail job: the campaigns of one cadence (campaign registry), and its Dagster names."""

    cron: str
    campaigns: list[str]
    job_name: str
    schedule_name: str
    partition_format: str
    with_analytics: bool
    description: str
    registry: list[str]


def mail_job_specs(campaigns: dict | None = None) -> list[MailJobSpec]:
    """A job per cadence of the registry's campaigns: every 15 minutes (frequent_mails_job, without the
    analytics models and the other campaigns' segments), daily at 09:00 (daily_mails_job: everything but the
    other campaigns' segments and what only they need, ``other_campaigns_models``), and one per other cron
    (the same)."""
    specs = []
    registry = campaigns or load_campaigns(check_templates=False)
    for cron, names in campaigns_by_cron(registry).items():
        if cron == CADENCES["every_15_minutes"]:
            name, fmt, analytics = "frequent_mails", "%Y-%m-%d-%H:%M", False
            what = "Every 15 min (one partition per slot, as of the slot's end)"
        elif cron == CADENCES["daily"]:
            name, fmt, analytics = "daily_mails", "%Y-%m-%d", True
            what = "09:00 daily (one partition per day, as of 09:00 the next day), incl. analytics"
        else:
            name = "mails_" + re.sub(r"[^0-9a-z]+", "_", cron.replace("*", "x")).strip("_")
            fmt, analytics, what = "%Y-%m-%d-%H:%M", True, f"On the cron {cron!r} (shop time)"
        specs.append(
            MailJobSpec(
                cron=cron,
                campaigns=names,
                job_name=f"{name}_job",
                schedule_name=f"{name}_schedule",
                partition_format=fmt,
                with_analytics=analytics,
                registry=list(registry),
                description=f"{what}: new exports and events, eligibility, then {', '.join(names)}.",
            )
        )
    return specs


MAIL_JOB_SPECS = mail_job_specs()
JOB_PARTITIONS = {spec.job_name: slot_partitions(spec.cron, spec.partition_format) for spec in MAIL_JOB_SPECS}
JOB_CAMPAIGN_CONFIG = {spec.job_name: _campaign_config(spec.campaigns) for spec in MAIL_JOB_SPECS}
mail_jobs = [
    dg.define_asset_job(
        spec.job_name,
        selection=dg.AssetSelection.all() - other_campaigns_models(spec.campaigns, spec.registry)
        if spec.with_analytics
        else ingest_selection
        | events_selection
        | candidates_selection_for(spec.campaigns, spec.registry)
        | mail_selection,
        executor_def=_serial,
        config=_partitioned_config(JOB_PARTITIONS[spec.job_name], spec.campaigns),
        tags=WRITER_TAG,
        description=spec.description,
    )
    for spec in MAIL_JOB_SPECS
]

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

# Created STOPPED: a fresh install sends nothing until someone turns a schedule on.
schedules = [
    dg.build_schedule_from_partitioned_job(
        job,
        name=spec.schedule_name,
        description=f"Runs {spec.job_name} for each slot as it ends (as_of = the slot's end).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    for spec, job in zip(MAIL_JOB_SPECS, mail_jobs, strict=True)
]
jobs = [main_job, *mail_jobs, ingest_job, events_job]
