"""dbt as Dagster assets: one @dbt_assets and a translator mapping dbt folders to Dagster groups."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtProject,
    dbt_assets,
)

from dagster_project.dbt_project import (
    NachfassDbtCliResource,
    dbt_project,
    record_unit_tests_passed,
    unit_test_inputs,
    unit_tests_passed,
)
from dagster_project.resources import RunClockResource, WarehouseResource
from nachfass.core import decision_lock
from nachfass.core.dbt import dbt_vars_arg
from nachfass.core.engine import dbt_engine
from nachfass.core.mail.runs import check_as_of
from nachfass.core.warehouse import spark

# The send asset's key (mail/sent_mails): a run that selects it will send mail.
SENT_MAILS = dg.AssetKey(["mail", "sent_mails"])
RENDERED_MAILS = dg.AssetKey(["mail", "rendered_mails"])


class NachfassDbtTranslator(DagsterDbtTranslator):
    """A dbt folder is a Dagster group (staging, intermediate, segments, eligibility, analytics); sources
    keep their `<source>/<table>` keys so raw tables link to the ingest assets."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id) or manifest["sources"].get(unique_id) or {}
        if node.get("resource_type") in ("model", "seed", "snapshot"):
            folder = node.get("fqn", ["", "misc"])[1] if len(node.get("fqn", [])) > 2 else "reference"
            return spec.replace_attributes(group_name=folder)
        return spec


translator = NachfassDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def dbt_build_args(full_refresh: bool = False, skip_full_history_tests: bool = False) -> list[str]:
    """The dbt command for one run: build (models + tests) with the parsed manifest's vars; the run's
    logical time reaches dbt through the environment (``NachfassDbtCliResource.cli_as_of``)."""
    args = ["build", *dbt_vars_arg()]
    if full_refresh:
        args.append("--full-refresh")
    if skip_full_history_tests and not full_refresh:
        # The whole-history tests of the big staging tables (tag full_history, keys unique by construction)
        # take ~8 s at 1 M customers; the scheduled runs skip them, nachfass_job and CI run them.
        args += ["--exclude", "tag:full_history"]
    return args


class DbtRunConfig(dg.Config):
    full_refresh: bool = False
    skip_full_history_tests: bool = False
    # dbt's unit tests run in a build only while they have not passed for exactly this state of the dbt
    # project (models, macros, vars, versions, engine); true runs them regardless (`run --unit-tests`)
    run_unit_tests: bool = False


@dbt_assets(manifest=dbt_project.manifest_path, dagster_dbt_translator=translator, project=dbt_project)
def nachfass_dbt_assets(
    context: dg.AssetExecutionContext,
    dbt: NachfassDbtCliResource,
    clock: RunClockResource,
    warehouse: WarehouseResource,
    config: DbtRunConfig,
):
    as_of = clock.resolve(context)
    if SENT_MAILS in context.job_def.asset_layer.selected_asset_keys:
        # A run that will send refuses an as_of before the warehouse's last mail run now, not after the
        # dbt build (mail/runs.py).
        with warehouse.connect() as conn:
            check_as_of(conn, as_of, run_id=context.run_id)
    # PostgreSQL: one run decides at a time; held until this run's mails are rendered (decision_lock.py).
    decision_lock.acquire(context.run_id, log=context.log.warning)
    renders = RENDERED_MAILS in context.job_def.asset_layer.selected_asset_keys
    on_spark = dbt_engine() == "spark"
    try:
        if on_spark:
            # Spark reads the sources from PostgreSQL, the system of record (core/warehouse/spark.py):
            # new loads appended where exact; a full refresh copies every table whole
            pushed = spark.push_sources(full=config.full_refresh)
            context.log.info(f"sources brought from PostgreSQL to Spark: {pushed.describe()}")
            for table, reason in pushed.reasons.items():
                context.log.info(f"{table} copied whole: {reason}")
        context.log.info(f"dbt build as of {as_of.isoformat()}")
        args = dbt_build_args(config.full_refresh, config.skip_full_history_tests)
        unit_tests = None if on_spark else unit_test_inputs(dbt_engine())
        if on_spark:
            # dbt's unit tests check the models' SQL on fixed rows, not the shop's data: 10-20 s each on
            # Spark, per run. They run on Spark in CI (tests/test_dbt_spark.py) and with `nachfass dbt test`.
            args += ["--exclude-resource-type", "unit_test"]
        elif not (config.full_refresh or config.run_unit_tests) and unit_tests_passed(unit_tests):
            # A run skips the unit tests while the models, macros, vars and versions are those they last
            # passed with: their outcome depends on nothing else (3-9 s of every run); an edit to any dbt
            # file runs them again.
            args += ["--exclude-resource-type", "unit_test"]
            context.log.info("dbt unit tests skipped: they passed for exactly these models and vars")
            unit_tests = None
        invocation = dbt.cli_as_of(args, as_of, context=context)
        try:
            yield from invocation.stream()
        finally:
            dbt.keep_partial_parse(invocation)
        if unit_tests is not None:
            record_unit_tests_passed(unit_tests, run_id=context.run_id)
        if on_spark:
            pulled = spark.pull_models()
            context.log.info(
                f"models the Python steps read, copied from Spark to PostgreSQL: {pulled.describe()}"
            )
    except BaseException:
        decision_lock.release(context.run_id)
        raise
    if not renders:
        decision_lock.release(context.run_id)
