"""The one DbtProject, imported by the dbt assets, the dbt resource and the CLI."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cached_property
from importlib.metadata import version
from pathlib import Path

import yaml
from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
from filelock import FileLock
from packaging.version import Version

from nachfass.core.dbt import AS_OF_ENV, DBT_EXECUTABLE, as_of_iso, dbt_vars_arg
from nachfass.core.paths import dbt_project_dir

dbt_project = DbtProject(project_dir=dbt_project_dir(), profiles_dir=dbt_project_dir())
_ENVIRON_LOCK = threading.Lock()


class NachfassDbtCliResource(DbtCliResource):
    """dagster-dbt's resource without two costs it adds to every dbt command, together 5-6 s, as long as
    building the models on a small shop:

    - the `dbt --version` process it starts to learn the version: the dbt beside this interpreter is the
      dbt-core installed here, so its version is read from the package metadata (any other executable is
      asked as before);
    - the dbt adapter it sets up in the run's own process (loading the project and its macros). dagster-dbt
      needs it only to fetch row counts or column metadata, which the project does not ask for; the dbt
      process itself is unchanged."""

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:  # type: ignore[override]
        return None

    @cached_property
    def _cli_version(self) -> Version:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            return Version(version("dbt-core"))
        return DbtCliResource._cli_version.func(self)  # type: ignore[attr-defined]

    def cli_as_of(
        self, args: Sequence[str], as_of: datetime, *, context=None, target_path: Path | None = None, **kwargs
    ) -> DbtCliInvocation:
        """``cli(args)`` at the run's logical time, given to the dbt process in its environment (AS_OF_ENV)
        rather than in ``--vars``: the vars stay those of the parsed manifest, so dbt parses partially
        (3.4 s CPU instead of 8.2 s per command). dagster-dbt builds the process's environment from
        ``os.environ`` when it starts it, inside ``cli``; the variable is set for that moment only.

        The invocation's target folder starts with the partial-parse state kept for this warehouse
        (``seed_partial_parse``); call ``keep_partial_parse`` when the invocation is over."""
        target_path = target_path or self._get_unique_target_path(context=context)
        seed_partial_parse(self._absolute_target(target_path), self.project_dir)
        with _ENVIRON_LOCK:
            before = os.environ.get(AS_OF_ENV)
            os.environ[AS_OF_ENV] = as_of_iso(as_of)
            try:
                return self.cli(args, context=context, target_path=target_path, **kwargs)
            finally:
                if before is None:
                    os.environ.pop(AS_OF_ENV, None)
                else:
                    os.environ[AS_OF_ENV] = before

    def _absolute_target(self, target_path: Path) -> Path:
        return target_path if target_path.is_absolute() else Path(self.project_dir, target_path)

    def keep_partial_parse(self, invocation: DbtCliInvocation) -> None:
        """After an invocation of ``cli_as_of``: keep its partial-parse state for the next one against the
        same warehouse, and prune the target folders of old invocations. Never raises: both only save time
        and disk."""
        with contextlib.suppress(OSError):
            remember_partial_parse(Path(invocation.target_path), self.project_dir)
        with contextlib.suppress(OSError):
            prune_invocation_folders(Path(self.project_dir, TARGET))


def models_only_for_campaigns(project: DbtProject = dbt_project) -> dict[tuple[str, str], frozenset[str]]:
    """Models that only some campaigns need, beyond their segments, as (folder, model) → campaigns: the
    dbt config ``meta: {nachfass: {only_for_campaigns: [...]}}`` in a model's YAML. A scheduled job that
    sends none of them leaves the model out of its build (jobs.py), as it leaves out the segments of the
    campaigns it does not send. Read from the YAML files, not the manifest: the jobs are defined before
    anything is parsed."""
    models = Path(project.project_dir) / "models"
    found = {}
    for path in sorted(models.rglob("*.yml")):
        for model in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("models") or []:
            meta = ((model.get("config") or {}).get("meta") or model.get("meta") or {}).get("nachfass") or {}
            if meta.get("only_for_campaigns"):
                folder = path.relative_to(models).parts[0]
                found[(folder, model["name"])] = frozenset(meta["only_for_campaigns"])
    return found


def dbt_resource(project: DbtProject = dbt_project) -> "NachfassDbtCliResource":
    return NachfassDbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE)


PARSE_STAMP = ".nachfass-parse-inputs"
_SKIPPED_DIRS = {"target", "logs"}  # written by dbt, not read by a parse
_SKIPPED_FILES = {".user.yml"}  # dbt's anonymous user id, written by the first dbt call


# env_var('NAME') or env_var('NAME', 'default'): the name and the default dbt renders when it is unset
_ENV_VAR = re.compile(rb"""env_var\(\s*['"]([^'"]+)['"](?:\s*,\s*['"]([^'"]*)['"])?""")


def _profile_env_names(data: bytes) -> set[tuple[bytes, bytes]]:
    """The environment variables of profiles.yml that reach the manifest: those of the active target (the
    one NACHFASS_ENGINE names) and of the settings outside the targets. The other targets are not rendered,
    and the Spark target's paths below $NACHFASS_DATA, which every test and replay sets afresh, would
    otherwise force a parse (~8 s) on a DuckDB run for nothing. All of them when the file does not read as
    expected."""
    everything = set(_ENV_VAR.findall(data))
    try:
        profiles = yaml.safe_load(data)
    except yaml.YAMLError:
        return everything
    if not isinstance(profiles, dict):
        return everything
    active = (os.environ.get("NACHFASS_ENGINE") or "duckdb").strip().lower()
    kept: list[object] = []
    for name, profile in profiles.items():
        outputs = profile.get("outputs") if isinstance(profile, dict) else None
        if not isinstance(outputs, dict) or active not in outputs:
            return everything
        kept += [{k: v for k, v in profile.items() if k != "outputs"}, outputs[active], name]
    return set(_ENV_VAR.findall(json.dumps(kept, default=str).encode()))


def parse_inputs(vars_arg: list[str], project: DbtProject = dbt_project) -> str:
    """A digest of everything a `dbt parse` of this project reads: the contents of the dbt project's files,
    the vars (the campaign registry), the environment variables those files read with env_var() (of
    profiles.yml only the active target's; an unset one as its default; of the warehouse file only the
    database name DuckDB derives from it) and any DBT_* variable, and the versions of dbt and its adapter.
    About 80 small files: a few milliseconds."""
    digest = hashlib.sha256()
    root = Path(project.project_dir)
    env_names: set[tuple[bytes, bytes]] = set()  # (name, default)
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        dirs.sort()
        for name in sorted(set(files) - _SKIPPED_FILES):
            path = Path(folder, name)
            data = path.read_bytes()
            is_profile = path.name == "profiles.yml"
            env_names.update(_profile_env_names(data) if is_profile else _ENV_VAR.findall(data))
            digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode())
            digest.update(data)
    # An unset variable counts as its default, which is what dbt renders: a first run without
    # NACHFASS_WAREHOUSE and one that names the default file need one parse, not two.
    defaults: dict[str, set[str]] = {}
    for name, default in env_names:
        defaults.setdefault(name.decode(), set()).add(default.decode())
    env: dict[str, object] = {
        name: os.environ[name] if name in os.environ else "\0".join(sorted(defaults[name]))
        for name in sorted(defaults)
    }
    if env.get("NACHFASS_WAREHOUSE"):
        # The DuckDB file reaches the manifest only as the database name dbt-duckdb derives from it (every
        # node's `database`), not its folder: a first run into a new folder needs no parse (~8 s).
        from dbt.adapters.duckdb.credentials import DuckDBCredentials

        env["NACHFASS_WAREHOUSE"] = DuckDBCredentials.path_derived_database_name(env["NACHFASS_WAREHOUSE"])
    env.update({k: v for k, v in os.environ.items() if k.startswith("DBT_")})
    versions = [version("dbt-core"), version("dbt-duckdb")]
    digest.update(json.dumps([vars_arg, sorted(env.items()), versions]).encode())
    return digest.hexdigest()


def _manifest_state(manifest: Path) -> str:
    stat = manifest.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def prepare_dbt_manifest(project: DbtProject = dbt_project, *, force: bool = False) -> bool:
    """`dbt parse` into the project's target folder, so the @dbt_assets definitions can load; returns
    whether it parsed. The parse gets the campaign registry's vars: mail_candidates refs every campaign's
    segment model by that list.

    Skipped when the manifest there came from a parse of exactly the same inputs (``parse_inputs``) and is
    unchanged since (a `nachfass dbt ...` call with other vars rewrites it): the parse is a new dbt process
    and took 6-9 s of the 10-13 s before a `nachfass run` reached its first step."""
    vars_arg = dbt_vars_arg()
    target = Path(project.project_dir, project.target_path)
    target.mkdir(parents=True, exist_ok=True)
    manifest, stamp = target / "manifest.json", target / PARSE_STAMP
    inputs = parse_inputs(vars_arg, project)
    # Runs may start together (on PostgreSQL they may overlap): one parses, the others wait for it and
    # then find the manifest fresh, instead of reading it half written.
    with FileLock(target / ".nachfass-parse.lock"):
        if not force and manifest.is_file() and stamp.is_file():
            with contextlib.suppress(OSError, ValueError):
                if json.loads(stamp.read_text()) == {"inputs": inputs, "manifest": _manifest_state(manifest)}:
                    return False
        stamp.unlink(missing_ok=True)
        dbt_resource(project).cli(["parse", "--quiet", *vars_arg], target_path=project.target_path).wait()
        stamp.write_text(json.dumps({"inputs": inputs, "manifest": _manifest_state(manifest)}))
    return True


# dbt's partial-parse state (partial_parse.msgpack) records a hash of the profile's connection settings,
# the DuckDB file's path among them: a state parsed against another warehouse makes dbt parse the whole
# project again (8.2 s CPU instead of 3.4 s). dagster-dbt starts every invocation from the state in
# dbt/target, written by the last `dbt parse`; when runs alternate between warehouses (two shops' files,
# DuckDB and PostgreSQL, a test's or replay's scratch file), each keeps its own state here, by the values of
# the connection settings' variables. A state that does not fit is only slower: dbt checks it itself.
TARGET = dbt_project.target_path  # dbt/target, where `dbt parse` writes
PARTIAL_PARSE_STATES = ".nachfass-partial-parse"
PARTIAL_PARSE_KEEP = 16
PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# Every dbt command of a run gets a target folder of its own (manifest, compiled SQL, run results, log):
# ~15 MB, 1.4 GB a day at one run per 15 minutes. The newest are kept for a look after a failed run.
INVOCATION_FOLDERS_KEEP = 32
INVOCATION_PREFIX = "nachfass_dbt_assets-"


def _beyond_newest(paths: Iterable[Path], keep: int) -> list[Path]:
    """The paths other than the ``keep`` most recently modified: what a bounded folder of records drops."""
    return sorted(paths, key=lambda f: f.stat().st_mtime_ns, reverse=True)[keep:]


def partial_parse_key(project_dir: Path | str) -> str:
    """Which warehouse a dbt command connects to: the engine and the values (or defaults) of the
    environment variables the active profile target reads, DBT_* variables and dbt's version."""
    data = Path(project_dir, "profiles.yml").read_bytes()
    env = sorted(
        (name.decode(), os.environ.get(name.decode(), default.decode()))
        for name, default in _profile_env_names(data)
    )
    engine = (os.environ.get("NACHFASS_ENGINE") or "duckdb").strip().lower()
    dbt_env = sorted((k, v) for k, v in os.environ.items() if k.startswith("DBT_") and k != "DBT_TARGET_PATH")
    return hashlib.sha256(json.dumps([engine, env, dbt_env, version("dbt-core")]).encode()).hexdigest()[:32]


def _partial_parse_state(project_dir: Path | str) -> Path:
    return Path(project_dir, TARGET, PARTIAL_PARSE_STATES, f"{partial_parse_key(project_dir)}.msgpack")


def seed_partial_parse(target: Path, project_dir: Path | str) -> bool:
    """Put the partial-parse state kept for this warehouse into an invocation's target folder before dbt
    starts; returns whether there was one. Without it dagster-dbt copies dbt/target's, as before."""
    with contextlib.suppress(OSError):
        state = _partial_parse_state(project_dir)
        if state.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(state, target / PARTIAL_PARSE_FILE)
            return True
    return False


def remember_partial_parse(target: Path, project_dir: Path | str) -> None:
    """Keep the partial-parse state dbt wrote into an invocation's target folder for the next command
    against the same warehouse; the least recently used states beyond PARTIAL_PARSE_KEEP are dropped."""
    written = target / PARTIAL_PARSE_FILE
    if not written.is_file():
        return
    state = _partial_parse_state(project_dir)
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_name(f".{state.name}.{os.getpid()}.{threading.get_ident()}")
    shutil.copyfile(written, tmp)
    os.replace(tmp, state)  # whole or not at all, for a run that seeds from it at the same moment
    for old in _beyond_newest(state.parent.glob("*.msgpack"), PARTIAL_PARSE_KEEP):
        old.unlink(missing_ok=True)


def prune_invocation_folders(target: Path, keep: int = INVOCATION_FOLDERS_KEEP) -> list[Path]:
    """Delete the target folders of all but the ``keep`` newest dbt invocations; returns those deleted."""
    pruned = _beyond_newest((f for f in target.glob(f"{INVOCATION_PREFIX}*") if f.is_dir()), keep)
    for folder in pruned:
        shutil.rmtree(folder, ignore_errors=True)
    return pruned


UNIT_TESTS_PASSED = ".nachfass-unit-tests-passed"
# One record per state: a project run against two warehouses (DuckDB and PostgreSQL, or two shops' files)
# keeps both states' records instead of each run evicting the other's. The oldest are pruned.
UNIT_TESTS_PASSED_KEEP = 16


def unit_test_inputs(engine: str, project: DbtProject = dbt_project) -> str:
    """What a dbt unit test's outcome depends on: the project's files, the campaign vars and dbt's versions
    (``parse_inputs``), the engine and DuckDB's version. Not the shop's data: a unit test runs the model's
    SQL on the fixed rows of its definition."""
    return hashlib.sha256(
        json.dumps([parse_inputs(dbt_vars_arg(), project), engine, version("duckdb")]).encode()
    ).hexdigest()


def _unit_tests_records(project: DbtProject) -> Path:
    return Path(project.project_dir, project.target_path, UNIT_TESTS_PASSED)


def unit_tests_passed(inputs: str, project: DbtProject = dbt_project) -> dict | None:
    """The record of the `dbt build`s whose unit tests passed for exactly these inputs, if any: its
    ``unit_tests`` are the ones that passed (a 15-minute run builds, and tests, only some models)."""
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((_unit_tests_records(project) / f"{inputs}.json").read_text())
        if isinstance(record, dict) and record.get("inputs") == inputs:
            return record
    return None


def record_unit_tests_passed(
    inputs: str, *, run_id: str, unit_tests: Iterable[str] = (), project: DbtProject = dbt_project
) -> None:
    """Called after a `dbt build` that ran the unit tests succeeded (dbt fails the build on any failure):
    `unit_tests` are the ones it ran, added to those that passed before for the same inputs."""
    records = _unit_tests_records(project)
    if records.is_file():  # the single-file record of earlier versions
        records.unlink()
    records.mkdir(parents=True, exist_ok=True)
    before = unit_tests_passed(inputs, project) or {}
    passed = sorted(set(before.get("unit_tests") or ()) | set(unit_tests))
    tmp = records / f"{inputs}.json.{os.getpid()}"
    tmp.write_text(json.dumps({"inputs": inputs, "run_id": run_id, "unit_tests": passed}))
    os.replace(tmp, records / f"{inputs}.json")
    with contextlib.suppress(OSError):
        for old in _beyond_newest(records.glob("*.json"), UNIT_TESTS_PASSED_KEEP):
            old.unlink(missing_ok=True)


# Under `dagster dev` (which sets DAGSTER_IS_DEV_CLI) the manifest is checked whenever the code location
# loads and rebuilt if its inputs changed, so edits to dbt models or campaign YAML show up after *Reload
# definitions*. DbtProject's own
# prepare_if_dev would parse without the registry's vars. Tests and the CLI parse themselves.
if os.environ.get("DAGSTER_IS_DEV_CLI"):
    prepare_dbt_manifest()
