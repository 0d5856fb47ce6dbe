"""The nightly warehouse checks (issue 14: the whole-history work moved out of the scheduled mail runs):
`warehouse_checks_job` runs exactly the dbt tests tagged `full_history`, builds nothing, and the
scheduled mail jobs leave those tests out while keeping the others."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.resources import parse_as_of
from nachfass.devtools.datagen.generate import generate_exports

AS_OF = "2026-11-24T10:00:00Z"
pytestmark = pytest.mark.slow


def full_history_test_names(manifest: Path) -> set[str]:
    nodes = json.loads(manifest.read_text(encoding="utf-8"))["nodes"].values()
    return {n["name"] for n in nodes if n["resource_type"] == "test" and "full_history" in n.get("tags", [])}


def checks_evaluated(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_the_checks_schedule_decides_as_of_its_tick(dbt_manifest) -> None:
    from dagster_project.warehouse_checks import warehouse_checks_schedule

    tick = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 03:00 in Berlin
    request = warehouse_checks_schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert parse_as_of(request.run_config["resources"]["clock"]["config"]["as_of"]) == tick
    assert warehouse_checks_schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_whole_history_tests_run_nightly_and_not_in_the_scheduled_mail_runs(workspace, dbt_manifest) -> None:
    from dagster_project.definitions import defs
    from dagster_project.jobs import JOB_PARTITIONS, clock_config
    from dagster_project.warehouse_checks import full_history_check_keys
    from nachfass.cli.main import run_job

    expected = full_history_test_names(dbt_manifest)
    # the staging keys, the order tables updated in place and the quality findings are among them
    assert {
        "unique_stg_orders_order_id",
        "unique_int_orders_order_id",
        "orphans_orders_without_customer",
    } <= expected
    assert {key.name for key in full_history_check_keys()} == expected

    generate_exports(workspace["landing"], customers=200, seed=11, as_of=parse_as_of(AS_OF))
    assert run_job(AS_OF)

    nightly = defs.resolve_job_def("warehouse_checks_job").execute_in_process(
        run_config=clock_config(parse_as_of("2026-11-25T02:00:00Z")), instance=dg.DagsterInstance.ephemeral()
    )
    assert nightly.success
    evaluated = checks_evaluated(nightly)
    assert set(evaluated) == expected
    # the key tests hold on the generated data (the quality findings may warn)
    assert all(passed for name, passed in evaluated.items() if name.startswith(("unique", "not_null")))
    assert not nightly.get_asset_materialization_events(), "the checks job builds nothing"

    daily = defs.resolve_job_def("daily_mails_job")
    partition = JOB_PARTITIONS["daily_mails_job"].get_partition_key_for_timestamp(
        parse_as_of("2026-11-24T12:00:00Z").timestamp()
    )
    run = daily.execute_in_process(partition_key=partition, instance=dg.DagsterInstance.ephemeral())
    assert run.success
    in_daily = checks_evaluated(run)
    assert not set(in_daily) & expected
    # the tests that guard the decisions stay in every scheduled run
    assert "unique_combination_mail_candidates_campaign__step__trigger_key" in in_daily
    assert "unique_int_consent_state_email" in in_daily
