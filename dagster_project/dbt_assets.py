"""dbt as Dagster assets: one @dbt_assets and a translator mapping dbt folders to Dagster groups."""

import json
from collections.abc import Mapping
from pathlib import Path
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
    # A test runs when every model it reads is selected in this run: the 15-minute job leaves the daily
    # campaigns' segments out, and dbt's default (eager) would still run their tests on stg_customers.
    args = ["build", *dbt_vars_arg(), "--indirect-selection", "cautious"]
    if full_refresh:
        args.append("--full-refresh")
    if skip_full_history_tests and not full_refresh:
        # The whole-history tests of the big staging tables (tag full_history, keys unique by construction)
        # take ~8 s at 1 M customers; the scheduled runs skip them, nachfass_job and CI run them.
        args += ["--exclude", "tag:full_history"]
    return args


def unit_tests_of(
    asset_keys, existing_relations: set[tuple[str, str]] | None = None, manifest_path=None
) -> tuple[set[str], dict[str, str]]:
    """The dbt unit tests (unique ids) of the models behind these asset keys, those a build of them runs:
    the ones that can run, and the ones that cannot with the reason. dbt reads the column types of a unit
    test's inputs from the warehouse, so an input neither built in this run nor ever before (the first run
    of a warehouse is a 15-minute one, which leaves the daily campaigns' segments out) stops it.
    `existing_relations`: (schema, table) in lower case, None to skip that check."""
    manifest = json.loads(Path(manifest_path or dbt_project.manifest_path).read_text())
    nodes = manifest["nodes"]
    keys = {
        unique_id: translator.get_asset_spec(manifest, unique_id, dbt_project).key
        for unique_id, node in nodes.items()
        if node.get("resource_type") in ("model", "seed")
    }
    selected = set(asset_keys)
    runnable, blocked = set(), {}
    for unique_id, unit_test in (manifest.get("unit_tests") or {}).items():
        models = [model for model in unit_test["depends_on"]["nodes"] if keys.get(model) in selected]
        if not models:
            continue
        missing = [
            parent
            for model in models
            for parent in nodes[model]["depends_on"]["nodes"]
            if parent in keys
            and keys[parent] not in selected
            and existing_relations is not None
            and (
                nodes[parent]["schema"].lower(),
                (nodes[parent].get("alias") or nodes[parent]["name"]).lower(),
            )
            not in existing_relations
        ]
        if missing:
            blocked[unique_id] = f"its input {nodes[missing[0]]['name']} was never built in this warehouse"
        else:
            runnable.add(unique_id)
    return runnable, blocked


def unit_test_names(unique_ids, manifest_path=None) -> list[str]:
    manifest = json.loads(Path(manifest_path or dbt_project.manifest_path).read_text())
    return sorted(manifest["unit_tests"][unique_id]["name"] for unique_id in unique_ids)


def _existing_relations(warehouse: "WarehouseResource") -> set[tuple[str, str]]:
    with warehouse.connect() as conn:
        rows = conn.execute("select table_schema, table_name from information_schema.tables").fetchall()
    return {(str(schema).lower(), str(name).lower()) for schema, name in rows}


def _exclude(args: list[str], names: list[str]) -> list[str]:
    """`args` with `names` added to its --exclude, as one space-separated value: dagster-dbt keeps one value
    after --exclude when it adds a run's asset selection."""
    if not names:
        return args
    if "--exclude" in args:
        at = args.index("--exclude") + 1
        return [*args[:at], " ".join([args[at], *names]), *args[at + 1 :]]
    return [*args, "--exclude", " ".join(names)]


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
        else:
            runnable, blocked = unit_tests_of(context.selected_asset_keys, _existing_relations(warehouse))
            # A run skips a unit test while the models, macros, vars and versions are those it passed with:
            # its outcome depends on nothing else (3-9 s of every run); an edit to any dbt file runs them
            # again. The record holds which ones passed: a 15-minute run tests only the models it builds.
            record = unit_tests_passed(unit_tests)
            passed = (
                set()
                if config.full_refresh or config.run_unit_tests
                else runnable & set(record and record.get("unit_tests") or ())
            )
            if runnable <= passed:
                args += ["--exclude-resource-type", "unit_test"]
                context.log.info("dbt unit tests skipped: they passed for exactly these models and vars")
                unit_tests = None
            else:
                args = _exclude(args, unit_test_names(passed | set(blocked)))
                if passed:
                    context.log.info(
                        f"{len(passed)} dbt unit tests skipped: they passed for exactly these models and vars"
                    )
            for unique_id, reason in sorted(blocked.items()):
                context.log.warning(
                    f"dbt unit test {unique_id} left out: {reason}; a run that builds it tests it"
                )
        invocation = dbt.cli_as_of(args, as_of, context=context)
        try:
            yield from invocation.stream()
        finally:
            dbt.keep_partial_parse(invocation)
        if unit_tests is not None:
            ran = [
                result["unique_id"]
                for result in invocation.get_artifact("run_results.json").get("results", [])
                if result.get("unique_id", "").startswith("unit_test.") and result.get("status") == "pass"
            ]
            record_unit_tests_passed(unit_tests, run_id=context.run_id, unit_tests=ran)
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
