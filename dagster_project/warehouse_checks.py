"""The nightly warehouse checks: the whole-history dbt tests (tag `full_history`) that the scheduled mail
jobs leave out of their builds (`skip_full_history_tests`), run as Dagster asset checks by
`warehouse_checks_job` at 03:00 shop time (`warehouse_checks_schedule`, stopped by default like every
schedule, as of its tick). Builds nothing, never sends.

Apart from jobs.py because the checks' keys come from the dbt manifest (dagster-dbt names a test's asset
check after the test), which jobs.py does not need: the mail jobs are defined before anything is parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from dagster_project.dbt_assets import nachfass_dbt_assets
from dagster_project.dbt_project import dbt_project
from dagster_project.jobs import WRITER_TAG, clock_config
from nachfass.core.shop import load_shop_settings

FULL_HISTORY_TAG = "full_history"
# 03:00 shop time: after the day's exports have landed, before the 09:00 daily run
WAREHOUSE_CHECKS_CRON = "0 3 * * *"


def full_history_check_keys(manifest_path: Path | None = None) -> list[dg.AssetCheckKey]:
    """The asset checks of the dbt data tests tagged `full_history`: whole-history checks of the tables the
    builds update in place (staging, `int_orders`, the quality findings). The scheduled mail jobs leave
    them out (`skip_full_history_tests`); ``warehouse_checks_job`` runs them."""
    manifest = json.loads(Path(manifest_path or dbt_project.manifest_path).read_text(encoding="utf-8"))
    names = {
        node["name"]
        for node in manifest["nodes"].values()
        if node.get("resource_type") == "test" and FULL_HISTORY_TAG in (node.get("tags") or [])
    }
    return sorted((key for key in nachfass_dbt_assets.check_keys if key.name in names), key=str)


warehouse_checks_job = dg.define_asset_job(
    "warehouse_checks_job",
    selection=dg.AssetSelection.checks(*full_history_check_keys()),
    executor_def=dg.in_process_executor,  # one step at a time in one process, like every job
    # dbt's tests open the warehouse like any other dbt command: one at a time with the writers
    tags=WRITER_TAG,
    description=(
        "Nightly: the whole-history dbt tests (tag full_history) that the scheduled mail jobs leave out: "
        "unique keys of the staging and order tables, orphans, addresses on several customers."
    ),
)


@dg.schedule(
    job=warehouse_checks_job,
    cron_schedule=WAREHOUSE_CHECKS_CRON,
    execution_timezone=load_shop_settings().timezone,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Runs warehouse_checks_job at 03:00 shop time, as of the tick.",
)
def warehouse_checks_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=clock_config(context.scheduled_execution_time))
