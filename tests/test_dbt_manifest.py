"""`nachfass run` parses the dbt project only when the manifest is not from the same inputs.

On a copy of the dbt project (the real one is shared with other tests): the first call parses; a second
call with nothing changed does not and leaves the manifest as it was; a new model, another environment
(the warehouse file's name is DuckDB's database name; its folder is not in the manifest) or a manifest
rewritten by another dbt call make it parse again, and the new model is in the manifest the Definitions
would load.
"""

from __future__ import annotations

import json
import shutil

import pytest
from dagster_dbt import DbtProject

from dagster_project.dbt_project import (
    dbt_project,
    parse_inputs,
    prepare_dbt_manifest,
    record_unit_tests_passed,
    unit_test_inputs,
    unit_tests_passed,
)
from nachfass.core.dbt import dbt_vars_arg


@pytest.mark.slow
def test_parse_only_when_the_inputs_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    folder = tmp_path / "dbt"
    shutil.copytree(
        dbt_project.project_dir, folder, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    project = DbtProject(project_dir=folder, profiles_dir=folder)
    manifest = folder / "target" / "manifest.json"

    assert prepare_dbt_manifest(project) is True
    before = manifest.stat().st_mtime_ns
    assert prepare_dbt_manifest(project) is False  # nothing changed: no dbt process at all
    assert manifest.stat().st_mtime_ns == before

    (folder / "models" / "zz_probe.sql").write_text("select 1 as probe\n")
    assert prepare_dbt_manifest(project) is True
    assert "model.nachfass.zz_probe" in json.loads(manifest.read_text())["nodes"]
    assert prepare_dbt_manifest(project) is False

    # Another dbt call (e.g. `nachfass dbt compile --vars ...`) rewrote the manifest: parse again.
    manifest.write_text(manifest.read_text() + " ")
    assert prepare_dbt_manifest(project) is True

    vars_arg = dbt_vars_arg()
    same = parse_inputs(vars_arg, project)
    monkeypatch.setenv("NACHFASS_OUTBOX", str(tmp_path / "outbox"))  # dbt does not read it
    assert parse_inputs(vars_arg, project) == same
    # profiles.yml reads the warehouse file; the manifest holds only the database name DuckDB gives it
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "elsewhere" / "warehouse.duckdb"))
    assert parse_inputs(vars_arg, project) == same  # a first run into another folder: no parse
    assert prepare_dbt_manifest(project) is False
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "other.duckdb"))
    assert parse_inputs(vars_arg, project) != same
    assert parse_inputs(["--vars", "{}"], project) != same  # another campaign registry
    assert prepare_dbt_manifest(project, force=True) is True


def test_the_unit_tests_record_holds_for_one_state_of_the_models(tmp_path, monkeypatch):
    """A scheduled run skips the dbt unit tests only for the exact state they passed with: an edited model,
    another engine or another campaign registry needs them again."""
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    folder = tmp_path / "dbt"
    shutil.copytree(
        dbt_project.project_dir, folder, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    project = DbtProject(project_dir=folder, profiles_dir=folder)
    inputs = unit_test_inputs("duckdb", project)
    assert unit_tests_passed(inputs, project) is None
    record_unit_tests_passed(inputs, run_id="run-1", project=project)
    assert unit_tests_passed(inputs, project) == {"inputs": inputs, "run_id": "run-1"}
    assert unit_test_inputs("postgres", project) != inputs
    segment = folder / "models" / "segments" / "abandoned_cart.sql"
    segment.write_text(segment.read_text() + "\n-- a marketer's edit\n")
    edited = unit_test_inputs("duckdb", project)
    assert edited != inputs and unit_tests_passed(edited, project) is None
    (folder / "target" / ".nachfass-unit-tests-passed").write_text("{not json")  # a damaged record
    assert unit_tests_passed(inputs, project) is None
