"""The one DbtProject, imported by the dbt assets, the dbt resource and the CLI."""

from dagster_dbt import DbtCliResource, DbtProject

from nachfass.core.dbt import DBT_EXECUTABLE
from nachfass.core.paths import DBT_PROJECT_DIR

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` this (re)builds the manifest; the CLI calls prepare_dbt_manifest() and tests run
# `dbt parse` themselves (prepare_if_dev does nothing under pytest).
dbt_project.prepare_if_dev()


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


def prepare_dbt_manifest() -> None:
    """`dbt parse` into the project's target folder, so the @dbt_assets definitions can load."""
    dbt_resource().cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()
