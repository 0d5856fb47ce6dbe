"""Jobs and schedules. Both scheduled jobs run the *same* assets with different selections and a
campaign filter, so there is one way to render and send, not copies.

Schedules are created STOPPED: a fresh `dagster dev` sends nothing until someone turns them on (UI:
Automation → schedule → toggle, or `dagster schedule start frequent_mails_schedule`).
"""

from datetime import UTC

import dagster as dg

from dagster_project.events.assets import SENDGRID_EVENTS
from dagster_project.ingest.assets import RAW_KEYS
from dagster_project.mail.assets import MAIL_CANDIDATES
from dagster_project.shop import load_shop_settings

# Time-critical mails go out every 15 minutes; the rest once a day at 09:00 shop time (campaigns.md).
FREQUENT_CAMPAIGNS = ["abandoned_cart", "checkout_recovery", "order_thanks", "shipping_update"]
DAILY_CAMPAIGNS = ["review_request", "cross_sell", "reactivation", "support_followup"]

RENDER_OP = "mail__rendered_mails"
SEND_OP = "mail__sent_mails"
DBT_OP = "nachfass_dbt_assets"

ingest_selection = dg.AssetSelection.assets(*RAW_KEYS.values())
events_selection = dg.AssetSelection.assets(SENDGRID_EVENTS)
mail_selection = dg.AssetSelection.groups("mail")
candidates_selection = dg.AssetSelection.assets(MAIL_CANDIDATES).upstream()

# DuckDB allows a single writing process, and ingest, dbt and the send step all write the same file: every
# job runs its steps one at a time in one process (README "One writer at a time").
_serial = dg.in_process_executor

main_job = dg.define_asset_job(
    "nachfass_job",
    selection=dg.AssetSelection.all(),
    executor_def=_serial,
    description="Everything, end to end, all campaigns: ingest → events → dbt build → render → send.",
)


def _campaign_config(campaigns: list[str]) -> dict:
    ops: dict = {op: {"config": {"campaigns": campaigns}} for op in (RENDER_OP, SEND_OP)}
    # Scheduled runs skip the whole-history staging tests (bench/README_dbt.md); nachfass_job runs them.
    ops[DBT_OP] = {"config": {"skip_full_history_tests": True}}
    return {"ops": ops}


frequent_job = dg.define_asset_job(
    "frequent_mails_job",
    selection=ingest_selection | events_selection | candidates_selection | mail_selection,
    executor_def=_serial,
    config=_campaign_config(FREQUENT_CAMPAIGNS),
    description="Every 15 min: new exports and events, eligibility, then cart, checkout recovery, order "
    "thanks and shipping mails.",
)

daily_job = dg.define_asset_job(
    "daily_mails_job",
    selection=dg.AssetSelection.all(),
    executor_def=_serial,
    config=_campaign_config(DAILY_CAMPAIGNS),
    description="09:00 daily: everything incl. analytics, then review requests, cross-sell, reactivation "
    "and support follow-ups.",
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=ingest_selection,
    executor_def=_serial,
    description="Load new export files (started by the landing sensor).",
)

events_job = dg.define_asset_job(
    "events_job",
    # everything but the mail group: events feed intermediate models (engagement, suppressions) too
    selection=dg.AssetSelection.all() - mail_selection,
    executor_def=_serial,
    description="Load new SendGrid event files and refresh the analytics models (events sensor).",
)


def _as_of_run_config(job_config: dict, scheduled_time) -> dict:
    # The scheduled tick time is the run's logical time, so a late or replayed tick decides as of its slot.
    as_of = scheduled_time.astimezone(UTC).isoformat()
    return {**job_config, "resources": {"clock": {"config": {"as_of": as_of}}}}


def _make_schedules() -> list[dg.ScheduleDefinition]:
    timezone = load_shop_settings().timezone

    @dg.schedule(
        name="frequent_mails_schedule",
        cron_schedule="*/15 * * * *",
        job=frequent_job,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def frequent_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            run_config=_as_of_run_config(
                _campaign_config(FREQUENT_CAMPAIGNS), context.scheduled_execution_time
            )
        )

    @dg.schedule(
        name="daily_mails_schedule",
        cron_schedule="0 9 * * *",
        job=daily_job,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            run_config=_as_of_run_config(_campaign_config(DAILY_CAMPAIGNS), context.scheduled_execution_time)
        )

    return [frequent_schedule, daily_schedule]


schedules = _make_schedules()
JOB_CAMPAIGN_CONFIG = {
    frequent_job.name: _campaign_config(FREQUENT_CAMPAIGNS),
    daily_job.name: _campaign_config(DAILY_CAMPAIGNS),
}
jobs = [main_job, frequent_job, daily_job, ingest_job, events_job]
