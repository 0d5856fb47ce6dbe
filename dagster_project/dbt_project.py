"""The one DbtProject, imported by the dbt assets, the dbt resource and the CLI."""

import os

from dagster_dbt import DbtCliResource, DbtProject

from nachfass.core.dbt import DBT_EXECUTABLE, dbt_vars_arg
from nachfass.core.paths import dbt_project_dir

dbt_project = DbtProject(project_dir=dbt_project_dir(), profiles_dir=dbt_project_dir())


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


def prepare_dbt_manifest() -> None:
    """`dbt parse` into the project's target folder, so the @dbt_assets definitions can load. The parse gets
    the campaign registry's vars: mail_candidates refs every campaign's segment model by that list."""
    dbt_resource().cli(["parse", "--quiet", *dbt_vars_arg()], target_path=dbt_project.target_path).wait()


# Under `dagster dev` (which sets DAGSTER_IS_DEV_CLI) the manifest is rebuilt whenever the code location
# loads, so edits to dbt models or campaign YAML show up after *Reload definitions*. DbtProject's own
# prepare_if_dev would parse without the registry's vars. Tests and the CLI parse themselves.
if os.environ.get("DAGSTER_IS_DEV_CLI"):
    prepare_dbt_manifest()
