"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""


import dagster as dg
from dagster_dbt import DbtCliResource

from dagster_project.dbt_assets import dbt_project, nachfass_dbt_assets
from dagster_project.events.assets import sendgrid_events
from dagster_project.ingest.assets import raw_exports
from dagster_project.mail.assets import rendered_mails, sent_mails
from dagster_project.resources import (
    LandingResource,
    LinkSignerResource,
    RunClockResource,
    SendGridResource,
    ShopResource,
    WarehouseResource,
)

# DuckDB allows a single writing process, and ingest, dbt and the send step all write the same file: every
# job runs its steps one at a time in one process (see README "One writer at a time").
main_job = dg.define_asset_job(
    "nachfass_job",
    selection=dg.AssetSelection.all(),
    executor_def=dg.in_process_executor,
    description="Everything, end to end: ingest new exports → dbt build → render → send → ledger.",
)

defs = dg.Definitions(
    assets=[raw_exports, sendgrid_events, nachfass_dbt_assets, rendered_mails, sent_mails],
    jobs=[main_job],
    resources={
        "warehouse": WarehouseResource(),
        "landing": LandingResource(),
        "shop": ShopResource(),
        "clock": RunClockResource(),
        "link_signer": LinkSignerResource(),
        "sendgrid": SendGridResource(),
        "dbt": DbtCliResource(project_dir=dbt_project),
    },
)
