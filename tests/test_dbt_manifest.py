"""`nachfass run` parses the dbt project only when the manifest is not from the same inputs.

On a copy of the dbt project (the real one is shared with other tests): the first call parses; a second
call with nothing changed does not and leaves the manifest as it was; a new model, another environment
(the warehouse file's name is DuckDB's database name; its folder is not in the manifest) or a manifest
rewritten by another dbt call make it parse again, and the new model is in the manifest the Definitions
would load.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster_dbt import DbtProject

from dagster_project.dbt_project import (
    INVOCATION_FOLDERS_KEEP,
    INVOCATION_PREFIX,
    UNIT_TESTS_PASSED_KEEP,
    dbt_project,
    dbt_resource,
    parse_inputs,
    prepare_dbt_manifest,
    prune_invocation_folders,
    record_unit_tests_passed,
    unit_test_inputs,
    unit_tests_passed,
)
from nachfass.core.dbt import AS_OF_ENV, dbt_vars_arg


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
    # The Spark target's paths below $NACHFASS_DATA are not rendered on DuckDB: every test and replay has
    # its own data folder, and none of them needs a parse for it. On Spark they count.
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("NACHFASS_DATA", str(tmp_path / "data-a"))
    on_duckdb = parse_inputs(vars_arg, project)
    assert on_duckdb == same
    monkeypatch.setenv("NACHFASS_DATA", str(tmp_path / "data-b"))
    assert parse_inputs(vars_arg, project) == on_duckdb
    # unset, a variable is its default in profiles.yml, as dbt renders it (the session's first parse runs
    # before a test names its warehouse file)
    monkeypatch.delenv("NACHFASS_WAREHOUSE")
    monkeypatch.setenv("NACHFASS_ENGINE", "duckdb")
    assert parse_inputs(vars_arg, project) == on_duckdb
    monkeypatch.setenv("NACHFASS_DUCKDB_MEMORY_LIMIT", "1GiB")  # the DuckDB target's own setting counts
    assert parse_inputs(vars_arg, project) != on_duckdb
    monkeypatch.delenv("NACHFASS_DUCKDB_MEMORY_LIMIT")
    monkeypatch.setenv("NACHFASS_ENGINE", "spark")
    on_spark = parse_inputs(vars_arg, project)
    assert on_spark != on_duckdb
    monkeypatch.setenv("NACHFASS_DATA", str(tmp_path / "data-a"))
    assert parse_inputs(vars_arg, project) != on_spark
    monkeypatch.delenv("NACHFASS_ENGINE")
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
    record_unit_tests_passed(
        inputs, run_id="run-1", unit_tests=["unit_test.a", "unit_test.b"], project=project
    )
    assert unit_tests_passed(inputs, project) == {
        "inputs": inputs,
        "run_id": "run-1",
        "unit_tests": ["unit_test.a", "unit_test.b"],
    }
    # a later build that ran others (a 15-minute run tests only the models it builds) adds to the record
    record_unit_tests_passed(inputs, run_id="run-2", unit_tests=["unit_test.c"], project=project)
    assert unit_tests_passed(inputs, project)["unit_tests"] == ["unit_test.a", "unit_test.b", "unit_test.c"]
    assert unit_test_inputs("postgres", project) != inputs
    segment = folder / "models" / "segments" / "abandoned_cart.sql"
    segment.write_text(segment.read_text() + "\n-- a marketer's edit\n")
    edited = unit_test_inputs("duckdb", project)
    assert edited != inputs and unit_tests_passed(edited, project) is None
    (folder / "target" / ".nachfass-unit-tests-passed" / f"{inputs}.json").write_text("{not json")  # damaged
    assert unit_tests_passed(inputs, project) is None


def test_runs_against_two_warehouses_keep_each_others_unit_tests_record(tmp_path, monkeypatch):
    """The same dbt project run against a DuckDB file and a PostgreSQL database (or two warehouses) has two
    states; recording one must not evict the other, or every run would run the unit tests again. Only the
    oldest records beyond a handful are pruned."""
    folder = tmp_path / "dbt"
    shutil.copytree(
        dbt_project.project_dir, folder, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    project = DbtProject(project_dir=folder, profiles_dir=folder)
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    duckdb_state = unit_test_inputs("duckdb", project)
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / "other_shop.duckdb"))
    other_state = unit_test_inputs("duckdb", project)
    assert other_state != duckdb_state
    record_unit_tests_passed(duckdb_state, run_id="run-duckdb", project=project)
    record_unit_tests_passed(other_state, run_id="run-other", project=project)
    assert unit_tests_passed(duckdb_state, project)["run_id"] == "run-duckdb"
    assert unit_tests_passed(other_state, project)["run_id"] == "run-other"

    records = folder / "target" / ".nachfass-unit-tests-passed"
    os.utime(records / f"{duckdb_state}.json", ns=(1, 1))  # the oldest, whatever the clock's resolution
    for n in range(UNIT_TESTS_PASSED_KEEP):  # many states later
        record_unit_tests_passed(f"{n:064x}", run_id=f"run-{n}", project=project)
    assert len(list(records.glob("*.json"))) == UNIT_TESTS_PASSED_KEEP
    assert unit_tests_passed(duckdb_state, project) is None
    assert unit_tests_passed(f"{UNIT_TESTS_PASSED_KEEP - 1:064x}", project)["run_id"].startswith("run-")


def test_the_dbt_version_comes_from_the_installed_package_without_a_process(tmp_path, monkeypatch):
    """dagster-dbt asks `dbt --version` before each command (a 3-4 s process); the dbt beside this
    interpreter is the installed dbt-core, so the resource reads its version without starting one, and
    asks any other executable as before."""
    import subprocess
    import sys
    from importlib.metadata import version
    from pathlib import Path

    from dagster_project.dbt_project import dbt_resource

    started: list[list[str]] = []
    real_check_output = subprocess.check_output

    def check_output(args, *a, **kw):
        started.append(list(args))
        return real_check_output(args, *a, **kw)

    monkeypatch.setattr("dagster_dbt.core.resource.check_output", check_output)
    resource = dbt_resource()
    assert Path(resource.dbt_executable).parent == Path(sys.executable).parent
    assert str(resource._cli_version) == version("dbt-core")
    assert started == []

    other_dbt = tmp_path / "elsewhere" / "dbt"  # another installation, e.g. a system-wide dbt
    other_dbt.parent.mkdir()
    other_dbt.write_text("#!/bin/sh\necho 'Core:'\necho '  - installed: 1.9.4'\n")
    other_dbt.chmod(0o755)
    other = type(resource)(project_dir=dbt_project, dbt_executable=str(other_dbt))
    assert str(other._cli_version) == "1.9.4"
    assert started == [[str(other_dbt), "--version"]]


@pytest.mark.slow
def test_the_runs_as_of_reaches_dbt_without_parsing_the_project_again(tmp_path, monkeypatch):
    """Every run has an as_of of its own. In --vars it made dbt parse the whole project again at every run
    (vars are part of dbt's partial-parse checksum); given in the dbt process's environment it leaves the
    parsed state alone: dbt parses partially, and the models still see the run's as_of."""
    import duckdb

    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(warehouse))
    monkeypatch.delenv(AS_OF_ENV, raising=False)
    folder = tmp_path / "dbt"
    shutil.copytree(
        dbt_project.project_dir, folder, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    project = DbtProject(project_dir=folder, profiles_dir=folder)
    prepare_dbt_manifest(project)
    resource = dbt_resource(project)

    def build(target: str, as_of: datetime, *, in_vars: bool = False) -> tuple[str, datetime]:
        args = ["build", "--select", "build_settings"]
        if in_vars:
            resource.cli([*args, *dbt_vars_arg(as_of)], target_path=folder / "target" / target).wait()
        else:
            resource.cli_as_of([*args, *dbt_vars_arg()], as_of, target_path=folder / "target" / target).wait()
        with duckdb.connect(str(warehouse), read_only=True) as conn:
            built_as_of = conn.execute("select as_of from analytics.build_settings").fetchone()[0]
        return (folder / "target" / target / "dbt.log").read_text(), built_as_of

    for n, as_of in enumerate(
        (datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 10, 15, tzinfo=UTC))
    ):
        log, built_as_of = build(f"run-{n}", as_of)
        assert "Partial parsing enabled" in log and "Unable to do partial parsing" not in log
        assert built_as_of == as_of.replace(tzinfo=None)
    assert AS_OF_ENV not in os.environ  # set for the dbt process only

    as_of = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)  # the way before: the same as_of in --vars
    log, built_as_of = build("in-vars", as_of, in_vars=True)
    assert "Unable to do partial parsing" in log and built_as_of == as_of.replace(tzinfo=None)


@pytest.mark.slow
def test_each_warehouse_keeps_its_own_partial_parse_state(tmp_path, monkeypatch):
    """dbt's partial-parse state holds a hash of the connection settings, the DuckDB file's path among
    them, and dagster-dbt starts every command from the state of the last `dbt parse`. A run against
    another warehouse (a second shop's file, a test's or replay's scratch file) parsed the whole project at
    every command; now its first command does, and the next ones against it start from the state it left,
    while the parsed warehouse keeps its own."""
    monkeypatch.delenv(AS_OF_ENV, raising=False)
    folder = tmp_path / "dbt"
    shutil.copytree(
        dbt_project.project_dir, folder, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    project = DbtProject(project_dir=folder, profiles_dir=folder)
    parsed, other = tmp_path / "parsed.duckdb", tmp_path / "other" / "shop.duckdb"
    other.parent.mkdir()
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(parsed))
    prepare_dbt_manifest(project)
    resource = dbt_resource(project)
    as_of = datetime(2026, 11, 24, 10, tzinfo=UTC)

    def build(warehouse: Path, name: str) -> str:
        monkeypatch.setenv("NACHFASS_WAREHOUSE", str(warehouse))
        args = ["build", "--select", "build_settings", *dbt_vars_arg()]
        invocation = resource.cli_as_of(args, as_of, target_path=folder / "target" / name)
        invocation.wait()
        resource.keep_partial_parse(invocation)
        return (folder / "target" / name / "dbt.log").read_text()

    first = build(other, "other-1")
    assert "profile has changed" in first  # unavoidable once: the state is the parsed warehouse's
    for name in ("other-2", "other-3"):
        log = build(other, name)
        assert "Partial parsing enabled" in log and "Unable to do partial parsing" not in log, name
    log = build(parsed, "parsed-1")  # the other warehouse's state did not replace the parsed one's
    assert "Partial parsing enabled" in log and "Unable to do partial parsing" not in log
    log = build(other, "other-4")
    assert "Partial parsing enabled" in log and "Unable to do partial parsing" not in log
    states = list((folder / "target" / ".nachfass-partial-parse").glob("*.msgpack"))
    assert len(states) == 2


def test_only_the_newest_invocation_folders_are_kept(tmp_path):
    """Each dbt command of a run writes a target folder of its own (~15 MB with the compiled SQL and the
    log); at a run every 15 minutes that was 1.4 GB a day. The newest are kept for a look after a failure,
    and nothing else in dbt/target is touched."""
    target = tmp_path / "target"
    folders = [target / f"{INVOCATION_PREFIX}{n:07x}-abcdef0" for n in range(INVOCATION_FOLDERS_KEEP + 5)]
    for n, folder in enumerate(folders):
        (folder / "compiled").mkdir(parents=True)
        (folder / "run_results.json").write_text("{}")
        os.utime(folder, ns=(n + 1, n + 1))  # oldest first, whatever the clock's resolution
    kept_files = [target / "manifest.json", target / "partial_parse.msgpack"]
    for file in kept_files:
        file.write_text("{}")
    (target / ".nachfass-unit-tests-passed").mkdir()

    pruned = prune_invocation_folders(target)
    assert sorted(pruned) == sorted(folders[:5])
    assert all(not f.exists() for f in folders[:5])
    assert all(f.is_dir() for f in folders[5:])
    assert all(f.is_file() for f in kept_files) and (target / ".nachfass-unit-tests-passed").is_dir()
    assert prune_invocation_folders(target) == []
