"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from dagster_project.assets.analytics import analytics_key_figures
from dagster_project.assets.events import sendgrid_events
from dagster_project.assets.ingest import raw_exports
from dagster_project.assets.mail import rendered_mails, sent_mails
from dagster_project.checks import checks
from dagster_project.dbt_assets import nachfass_dbt_assets
from dagster_project.dbt_project import dbt_resource
from dagster_project.jobs import jobs, schedules
from dagster_project.resources import (
    LandingResource,
    LinkSignerResource,
    RunClockResource,
    SendGridResource,
    ShopResource,
    WarehouseResource,
)
from dagster_project.sensors import sensors
from dagster_project.warehouse_checks import warehouse_checks_job, warehouse_checks_schedule
from nachfass.core.campaigns import validate_campaigns

# A typo in a campaign's settings (dbt/models/segments/*.yml) fails loudly here, naming file and key,
# before any job can run with it.
validate_campaigns()

defs = dg.Definitions(
    assets=[
        raw_exports,
        sendgrid_events,
        nachfass_dbt_assets,
        rendered_mails,
        sent_mails,
        analytics_key_figures,
    ],
    asset_checks=checks,
    jobs=[*jobs, warehouse_checks_job],
    schedules=[*schedules, warehouse_checks_schedule],
    sensors=sensors,
    resources={
        "warehouse": WarehouseResource(),
        "landing": LandingResource(),
        "shop": ShopResource(),
        "clock": RunClockResource(),
        "link_signer": LinkSignerResource(),
        "sendgrid": SendGridResource(),
        "dbt": dbt_resource(),
    },
)
